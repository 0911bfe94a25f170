"""Issue 9 §6: two synth runs never write one folder at once, a resume cleans what a kill -9 left half-written,
and a manifest that lists an image twice is refused (or kept with a warning under --allow-duplicates).

Multi-process claims use real processes: a `synth` run started with subprocess.Popen that waits at a gate file
after a few images (so the test never depends on timing), a second run started as its own process, and a
real kill -9."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.errors import UsageError
from aimfair_cli.core.fsio import MSG_NOT_FOLDER
from aimfair_cli.core.manifest import MSG_DUPLICATE, MSG_DUPLICATE_KEPT, read_manifest
from aimfair_cli.core.tasks import find_prompt_file
from aimfair_cli.generators.base import image_seed
from aimfair_cli.stages import synth as stage

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
PROMPTS = find_prompt_file("smiling_male")
SYNTH = ["--group", "smiling_male", "--size", "16", "--batch-size", "1"]
WAIT_S = 120  # generous: the machine running the tests may be busy


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def images(out: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(out).items() if k.endswith(".png")}


def one_error(stderr: str) -> str:
    """The one error line: stderr's last line, present once, no traceback."""
    assert stderr.count("Error: ") == 1, stderr
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


# A synth run (the real CLI, in its own process) whose generator is the procedural one, except that it waits
# for GATE to exist before image HOLD_AFTER, and hands back an image whose save() writes half a PNG and hangs
# at image HANG_AT (so a kill -9 lands mid-write). Rows record "procedural", as a plain run's do.
_SCRIPT = """
import sys, time
from pathlib import Path
from aimfair_cli.generators import base

GATE, HOLD_AFTER, HANG_AT = Path({gate!r}), {hold_after!r}, {hang_at!r}

class HangingImage:
    def save(self, fp, format=None):
        with open(fp, "wb") as fh:
            fh.write(b"\\x89PNG half an image")
            fh.flush()
        time.sleep(600)

class Gated:
    def __init__(self, **options):
        self.inner = base.make_generator("procedural", **options)
        self.name, self.made = self.inner.name, 0
    def describe(self):
        return self.inner.describe()
    def generate(self, requests):
        out = []
        for r in requests:
            if self.made == HOLD_AFTER:
                while not GATE.exists():
                    time.sleep(0.02)
            out.append(HangingImage() if self.made == HANG_AT else self.inner.generate([r])[0])
            self.made += 1
        return out

base.GENERATORS["gated"] = "__main__:Gated"
from aimfair_cli.cli.app import main
sys.argv = ["aimfair", "synth", *{args!r}]
main()
"""


def start_synth(tmp_path: Path, args: list[str], *, hold_after: int | None = None, hang_at: int | None = None):
    gate = tmp_path / "gate"
    script = _SCRIPT.format(gate=str(gate), hold_after=hold_after, hang_at=hang_at,
                            args=[*args, "--generator", "gated"])
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc, gate


def wait_for(proc, condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"synth ended before {what}: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def rows_in(part: Path) -> int:
    return part.read_bytes().count(b"\n") if part.is_file() else 0


def aimfair(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a process of its own."""
    return subprocess.run([sys.executable, "-m", "aimfair_cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=WAIT_S)


# ---- one run per folder (per shard) at a time ----------------------------------------------------------------


def test_a_second_synth_run_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "synth"
    prompts_before = PROMPTS.read_bytes()
    first, gate = start_synth(tmp_path, [*SYNTH, "-n", "8", "--seed", "0", "--out", str(out)], hold_after=3)
    try:
        wait_for(first, lambda: rows_in(out / ".parts" / "smiling_male.0-of-1.jsonl") == 3, "3 images")
        before = files(out)
        second = aimfair("synth", *SYNTH, "-n", "8", "--seed", "1", "--out", str(out), cwd=tmp_path)
        assert second.returncode == 1, second.stderr
        assert one_error(second.stderr) == "Error: " + stage.MSG_BUSY.format(out=out, lock=".synth.0-of-1.lock")
        assert second.stdout == ""
        assert files(out) == before  # the refused run wrote nothing
        # The same settings are refused too: one run per folder and shard at a time.
        same = aimfair("synth", *SYNTH, "-n", "8", "--seed", "0", "--out", str(out), cwd=tmp_path)
        assert same.returncode == 1 and one_error(same.stderr) == one_error(second.stderr)
    finally:
        gate.touch()
        first.wait(timeout=WAIT_S)
    assert first.returncode == 0, first.stderr.read().decode()
    rows = read_manifest(out / "metadata.jsonl", require_protected=True).rows
    assert [(r["index"], r["seed"]) for r in rows] == [(i, image_seed(0, "smiling_male", i)) for i in range(8)]
    assert "seed: 0" in (out / "synth.config.yaml").read_text()
    assert PROMPTS.read_bytes() == prompts_before
    # The lock went with the first run: the same command now finds everything done.
    again = runner.invoke(app, ["synth", *SYNTH, "-n", "8", "--seed", "0", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "wrote 0 images" in again.stdout


def test_disjoint_shards_run_side_by_side_and_overlapping_ones_are_refused(tmp_path):
    out = tmp_path / "synth"
    first, gate = start_synth(tmp_path, [*SYNTH, "-n", "10", "--shard", "0/2", "--out", str(out)], hold_after=2)
    try:
        wait_for(first, lambda: rows_in(out / ".parts" / "smiling_male.0-of-2.jsonl") == 2, "2 images")
        other = runner.invoke(app, ["synth", *SYNTH, "-n", "10", "--shard", "1/2", "--out", str(out)])
        assert other.exit_code == 0, other.output  # indices 1, 3, 5, ...: no overlap with 0/2
        for shard in (None, "0/4", "2/4"):  # each shares indices with 0/2
            before = files(out)
            extra = ["--shard", shard] if shard else []
            result = runner.invoke(app, ["synth", *SYNTH, "-n", "10", *extra, "--out", str(out)])
            assert result.exit_code == 1
            assert one_error(result.stderr) == "Error: " + stage.MSG_BUSY.format(out=out, lock=".synth.0-of-2.lock")
            after = files(out)
            # nothing written but the refused run's own (empty) lock file, taken before it saw the other
            own = f".synth.{shard.replace('/', '-of-') if shard else '0-of-1'}.lock"
            assert {k: v for k, v in after.items() if k != own} == before and after[own] == b""
    finally:
        gate.touch()
        first.wait(timeout=WAIT_S)
    assert first.returncode == 0, first.stderr.read().decode()
    clean = tmp_path / "clean"
    assert runner.invoke(app, ["synth", *SYNTH, "-n", "10", "--out", str(clean)]).exit_code == 0
    assert images(out) == images(clean)
    assert (out / "metadata.jsonl").read_text() == (clean / "metadata.jsonl").read_text()


def test_shard_overlap_rule():
    assert stage._overlap((0, 1), (1, 2)) and stage._overlap((0, 2), (2, 4)) and stage._overlap((1, 2), (0, 3))
    assert not stage._overlap((0, 2), (1, 2)) and not stage._overlap((0, 2), (1, 4))
    for a in ((0, 2), (1, 4), (2, 6)):  # brute force agrees
        for b in ((0, 3), (3, 4), (1, 6), (5, 6)):
            both = set(range(a[0], 48, a[1])) & set(range(b[0], 48, b[1]))
            assert stage._overlap(a, b) == bool(both)


def test_under_torchrun_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    """Ranks of one torchrun job write disjoint indices into one folder: only rank 0 locks it."""
    out = tmp_path / "synth"
    with stage.job_lock(out, (0, 1)):  # another job holds the folder
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with stage.job_lock(out, (0, 1)):
            pass  # rank 1 takes no lock (its rank 0 is the one that is refused)
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UsageError) as err:
            with stage.job_lock(out, (0, 1)):
                pass
    assert str(err.value) == stage.MSG_BUSY.format(out=out, lock=".synth.0-of-1.lock")


def test_a_refused_option_leaves_no_folder_and_an_unusable_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["synth", *SYNTH, "-n", "2", "--steps", "5", "--out", "new/synth"])
    assert result.exit_code == 1
    assert one_error(result.stderr) == "Error: option --steps applies to --generator diffusers only"
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its lock is left
    (tmp_path / "a_file").write_text("x")
    result = runner.invoke(app, ["synth", *SYNTH, "-n", "2", "--out", "a_file/synth"])
    assert result.exit_code == 1
    # found by the writability check before any work (aimfair_cli/core/fsio.py)
    assert one_error(result.stderr) == "Error: " + MSG_NOT_FOLDER.format(path=Path("a_file/synth"), parent="a_file")
    assert files(tmp_path) == {"a_file": b"x"}


# ---- leftovers of a kill -9 --------------------------------------------------------------------------------


def test_resume_after_kill_9_mid_write_removes_the_half_written_image(tmp_path):
    out = tmp_path / "synth"
    proc, _ = start_synth(tmp_path, [*SYNTH, "-n", "8", "--out", str(out)], hang_at=5)
    try:
        wait_for(proc, lambda: any((out / "smiling_male").glob(".000005.png.*.tmp")), "the write of image 5")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    orphans = sorted(p.name for p in (out / "smiling_male").glob(".*.tmp"))
    assert len(orphans) == 1 and orphans[0].startswith(".000005.png.")  # what the kill left
    assert not (out / "smiling_male" / "000005.png").exists()

    result = runner.invoke(app, ["synth", *SYNTH, "-n", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 images" in result.stdout  # 5, 6, 7
    assert not [p for p in out.rglob("*.tmp")]
    clean = tmp_path / "clean"
    assert runner.invoke(app, ["synth", *SYNTH, "-n", "8", "--out", str(clean)]).exit_code == 0
    assert images(out) == images(clean)
    assert (out / "metadata.jsonl").read_text() == (clean / "metadata.jsonl").read_text()


def test_resume_removes_only_its_own_shards_orphans(tmp_path):
    """Orphans of indices another shard owns may be that shard's writes in progress: they are left alone."""
    out = tmp_path / "synth"
    assert runner.invoke(app, ["synth", *SYNTH, "-n", "6", "--shard", "0/2", "--out", str(out)]).exit_code == 0
    folder = out / "smiling_male"
    mine, theirs = folder / ".000002.png.k3j2h1.tmp", folder / ".000003.png.a8b7c6.tmp"
    manifest_tmp = out / ".metadata.jsonl.zz9y8x.tmp"
    for p in (mine, theirs, manifest_tmp):
        p.write_bytes(b"half")
    (folder / "000002.png").unlink()  # the image whose write was cut short
    result = runner.invoke(app, ["synth", *SYNTH, "-n", "6", "--shard", "0/2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not mine.exists() and not manifest_tmp.exists()
    assert theirs.read_bytes() == b"half"
    assert (folder / "000002.png").is_file()


# ---- manifests that list an image twice -----------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file_name", "target", "protected"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """24 tiny images (6 per cell), clean manifests, manifests with duplicates, and a random-init checkpoint."""
    import numpy as np
    import torch
    from PIL import Image

    from aimfair_cli.training.checkpoint import save_checkpoint
    from aimfair_cli.training.models import build_model

    root = tmp_path_factory.mktemp("dups")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        y, s = i % 2, (i // 2) % 2
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"file_name": f"img/{i}.png", "target": y, "protected": s})
    write_csv(root / "clean.csv", rows)
    # img/3.png again as row 25 (spelled differently) and row 26; img/7.png again as row 27
    dup = rows + [{**rows[2], "file_name": "./img/3.png"}, rows[3], rows[7]]
    write_csv(root / "dup.csv", dup)
    with open(root / "dup.jsonl", "w") as fh:
        for r in rows[:4] + [rows[1]]:
            fh.write(json.dumps(r) + "\n")
    torch.manual_seed(0)
    save_checkpoint(root / "model.safetensors", build_model(), {"image_size": 32})
    return root


FAST = ["--workers", "0", "--device", "cpu", "--batch-size", "8"]
DUP_CSV = "rows 4, 25 and 26 list the same image img/3.png (and 1 more image listed more than once)"


def check_refused(result, root: Path, before: dict[str, bytes], message: str) -> None:
    assert result.exit_code == 1
    assert one_error(result.stderr) == "Error: " + message
    assert result.stdout == ""
    assert files(root) == before  # inputs byte-identical, nothing written


@pytest.mark.parametrize("command, args, manifest", [
    ("eval", ["--model", "model.safetensors", "--data", "dup.csv"], "dup.csv"),
    ("pretrain", ["--train", "dup.csv", "--val", "clean.csv", "--out", "new.safetensors", "--epochs", "1",
                  "--image-size", "32", "--weights", "none"], "dup.csv"),
    ("pretrain", ["--train", "clean.csv", "--val", "dup.jsonl", "--out", "new.safetensors", "--epochs", "1",
                  "--image-size", "32", "--weights", "none"], "dup.jsonl"),
    ("mask", ["--model", "model.safetensors", "--real", "clean.csv", "--synth", "dup.csv", "--out",
              "new_mask.safetensors"], "dup.csv"),
    ("finetune", ["--model", "model.safetensors", "--synth", "dup.csv", "--val", "clean.csv", "--strategy",
                  "linear", "--out", "new.safetensors"], "dup.csv"),
])
def test_an_image_listed_twice_is_refused(run_dir, monkeypatch, command, args, manifest):
    monkeypatch.chdir(run_dir)
    before = files(run_dir)
    result = runner.invoke(app, [command, *args, *FAST])
    detail = DUP_CSV if manifest == "dup.csv" else "rows 2 and 5 list the same image img/1.png"
    assert MSG_DUPLICATE.endswith("; remove the repeated rows or pass --allow-duplicates")
    check_refused(result, run_dir, before, f"{manifest}: {detail}; remove the repeated rows or pass --allow-duplicates")


def test_allow_duplicates_keeps_the_rows_with_a_warning_and_eval_counts_what_is_listed(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir)
    before = files(run_dir)
    clean = runner.invoke(app, ["eval", "--model", "model.safetensors", "--data", "clean.csv", "--json", *FAST])
    assert clean.exit_code == 0, clean.output
    result = runner.invoke(app, ["eval", "--model", "model.safetensors", "--data", "dup.csv", "--allow-duplicates",
                                 "--json", *FAST])
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    kept = MSG_DUPLICATE_KEPT.format(path="dup.csv", rows="4, 25 and 26", file_name="img/3.png",
                                     more=" (and 1 more image listed more than once)")
    assert kept in warning, warning
    counts = {k: v["n"] for k, v in json.loads(result.stdout)["cells"].items()}
    assert sum(counts.values()) == 27  # every listed row counts: the user asked for it
    clean_counts = {k: v["n"] for k, v in json.loads(clean.stdout)["cells"].items()}
    assert sum(clean_counts.values()) == 24
    assert files(run_dir) == before


def test_allow_duplicates_reaches_every_training_command(run_dir, monkeypatch, tmp_path):
    """pretrain trains on the kept rows; mask and finetune get past the duplicate check (warning printed) to the
    next one, a synthetic set too small for --n-synth 1000 (cheaper than a full run)."""
    from aimfair_cli.masking.synthsets import MSG_TOO_FEW

    monkeypatch.chdir(run_dir)
    before = files(run_dir)
    result = runner.invoke(app, ["pretrain", "--train", "dup.csv", "--val", "dup.jsonl", "--out",
                                 str(tmp_path / "p.safetensors"), "--epochs", "1", "--image-size", "32",
                                 "--weights", "none", "--allow-duplicates", *FAST])
    assert result.exit_code == 0, result.output
    assert "kept because of --allow-duplicates" in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.config.yaml", "p.history.csv", "p.safetensors"]
    assert "allow_duplicates: true" in (tmp_path / "p.config.yaml").read_text()
    too_few = {"mask": MSG_TOO_FEW.format(group="?", y=0, s=0, have=6, which="biased", need=50),
               "finetune": MSG_TOO_FEW.format(group="?", y=0, s=0, have=6, which="balanced", need=250)}
    for command, args in (
        ("mask", ["--model", "model.safetensors", "--real", "dup.csv", "--synth", "dup.csv", "--out", "m.safetensors"]),
        ("finetune", ["--model", "model.safetensors", "--synth", "dup.csv", "--val", "dup.csv", "--strategy",
                      "linear", "--out", "f.safetensors"]),
    ):
        result = runner.invoke(app, [command, *args, "--n-synth", "1000", "--allow-duplicates", *FAST])
        assert "kept because of --allow-duplicates" in " ".join(result.stderr.split())
        check_refused(result, run_dir, before, too_few[command])
    assert files(run_dir) == before


def test_duplicate_check_in_the_library(tmp_path):
    rows = [{"file_name": f"x{i % 3}.png", "target": 0, "protected": 0} for i in range(15)]
    path = write_csv(tmp_path / "m.csv", rows)
    with pytest.raises(Exception) as err:
        read_manifest(path)
    assert str(err.value) == (f"{path}: rows 1, 4, 7, 10 and 13 list the same image x0.png (and 2 more images "
                              "listed more than once); remove the repeated rows or pass --allow-duplicates")
    assert len(read_manifest(path, allow_duplicates=True)) == 15
    many = write_csv(tmp_path / "many.csv", [{"file_name": "same.png", "target": 1, "protected": 1}] * 12)
    with pytest.raises(Exception, match=r": rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more list the same image "):
        read_manifest(many)
    absolute = write_csv(tmp_path / "abs.csv", [{"file_name": "a.png", "target": 0, "protected": 0},
                                                {"file_name": str(tmp_path / "a.png"), "target": 0, "protected": 0}])
    with pytest.raises(Exception, match="rows 1 and 2 list the same image a.png"):
        read_manifest(absolute)
