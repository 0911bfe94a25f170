"""`synth`: per-image seeds, resume after Ctrl-C and kill -9, shards, batch-size independence, the manifest,
and the command's short forms. Uses the procedural generator at 16 px so everything stays fast."""

from __future__ import annotations

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
from aimfair_cli.core.manifest import read_manifest
from aimfair_cli.core.tasks import find_prompt_file, load_prompt_file
from aimfair_cli.generators import base
from aimfair_cli.generators.base import image_seed
from aimfair_cli.stages import synth as stage
from aimfair_cli.stages.synth import MSG_BAD_SHARD, MSG_MISMATCH, effective_shard, pick_prompt, synthesize

runner = CliRunner()
GEN = "procedural"
OPTS = {"size": 16}
PROMPTS = find_prompt_file("smiling_male")
REPO = Path(__file__).resolve().parents[1]


def _run(out, n=6, groups=("smiling_male",), **kw):
    kw.setdefault("generator", GEN)
    kw.setdefault("generator_options", OPTS)
    return synthesize(prompts=kw.pop("prompts", PROMPTS), groups=list(groups), n=n, out=out, **kw)


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/*.png"))}


def _check_complete(out: Path, groups: dict[str, int]) -> list[dict]:
    """The manifest validates and lists exactly indices 0..n-1 of each group, once each, with their files."""
    m = read_manifest(out / "metadata.jsonl", require_protected=True)
    keys = [(r["group"], r["index"]) for r in m.rows]
    assert keys == sorted((g, i) for g, n in groups.items() for i in range(n))
    assert len(_files(out)) == sum(groups.values())
    for r in m.rows:
        assert m.image_path(r).is_file()
        assert r["file_name"] == f"{r['group']}/{r['index']:06d}.png"
    return m.rows


# ---- the stage ---------------------------------------------------------------------------------------


def test_writes_images_and_manifest(tmp_path):
    out = tmp_path / "s"
    result = _run(out, n=5, groups=("smiling_male", "not_smiling_female"))
    assert (result.written, result.skipped, result.shard) == (10, 0, (0, 1))
    assert result.present == {"not_smiling_female": 5, "smiling_male": 5}
    rows = _check_complete(out, {"smiling_male": 5, "not_smiling_female": 5})
    prompts = load_prompt_file(PROMPTS)
    for r in rows:
        assert (r["target"], r["protected"]) == {"smiling_male": (1, 1), "not_smiling_female": (0, 0)}[r["group"]]
        assert r["seed"] == image_seed(0, r["group"], r["index"])
        assert r["prompt"] == prompts.groups[r["group"]][r["index"]]  # round-robin
        assert r["generator"] == GEN
    config = (out / "synth.config.yaml").read_text()
    assert "generator_settings:" in config and "size: 16" in config


def test_rerun_reproduces_bytes_and_batch_size_does_not_matter(tmp_path):
    _run(tmp_path / "a", n=7, batch_size=1)
    _run(tmp_path / "b", n=7, batch_size=4)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and len(a) == 7
    # A deleted image is regenerated, byte for byte, and nothing else is redone.
    (tmp_path / "a" / "smiling_male" / "000003.png").unlink()
    result = _run(tmp_path / "a", n=7, batch_size=3)
    assert (result.written, result.skipped) == (1, 6)
    assert _files(tmp_path / "a") == b
    _check_complete(tmp_path / "a", {"smiling_male": 7})


def test_shards_together_equal_one_run(tmp_path):
    one = tmp_path / "one"
    split = tmp_path / "split"
    _run(one, n=9, groups=("smiling_male", "smiling_female"))
    r0 = _run(split, n=9, groups=("smiling_male", "smiling_female"), shard="0/2")
    assert r0.written == 10 and r0.present == {"smiling_female": 5, "smiling_male": 5}
    r1 = _run(split, n=9, groups=("smiling_male", "smiling_female"), shard=(1, 2))
    assert r1.written == 8
    assert _files(split) == _files(one)
    assert (split / "metadata.jsonl").read_text() == (one / "metadata.jsonl").read_text()
    assert sorted(p.name for p in (split / ".parts").iterdir()) == [
        "smiling_female.0-of-2.jsonl", "smiling_female.1-of-2.jsonl",
        "smiling_male.0-of-2.jsonl", "smiling_male.1-of-2.jsonl"]


class _Interrupting:
    """Wraps the real generator and raises KeyboardInterrupt (Ctrl-C) after `after` images."""

    def __init__(self, after: int, **options):
        self.inner = base.make_generator(GEN, **options)
        self.name, self.left = self.inner.name, after

    def describe(self):
        return self.inner.describe()

    def generate(self, requests):
        if self.left < len(requests):
            raise KeyboardInterrupt
        self.left -= len(requests)
        return self.inner.generate(requests)


@pytest.fixture
def interrupting(monkeypatch):
    monkeypatch.setitem(base.GENERATORS, "interrupting", f"{__name__}:_Interrupting")
    return "interrupting"


def test_ctrl_c_then_resume_gives_exactly_n(tmp_path, interrupting):
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        _run(out, n=10, generator=interrupting, generator_options={**OPTS, "after": 4}, batch_size=2)
    # Only complete images and rows are left, and the manifest lists what is there.
    rows = _check_complete(out, {"smiling_male": 4})
    assert len(rows) == 4
    result = _run(out, n=10, batch_size=3)
    assert (result.written, result.skipped) == (6, 4)
    _check_complete(out, {"smiling_male": 10})
    _run(tmp_path / "clean", n=10)
    assert _files(out) == _files(tmp_path / "clean")


_KILL_SCRIPT = """
import sys, time
from aimfair_cli.generators import base
from aimfair_cli.stages.synth import synthesize

class Slow:
    def __init__(self, **options):
        self.inner = base.make_generator({gen!r}, **options)
        self.name = self.inner.name
    def describe(self):
        return self.inner.describe()
    def generate(self, requests):
        time.sleep(0.05)
        return self.inner.generate(requests)

base.GENERATORS["slow"] = "__main__:Slow"
synthesize(prompts={prompts!r}, groups=["smiling_male", "smiling_female"], n=60, out={out!r}, generator="slow",
           generator_options={opts!r}, batch_size=1)
"""


def test_kill_9_then_resume_gives_exactly_n(tmp_path):
    out = tmp_path / "s"
    script = _KILL_SCRIPT.format(gen=GEN, prompts=str(PROMPTS), out=str(out), opts=OPTS)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stderr=subprocess.PIPE)
    part = out / ".parts" / "smiling_male.0-of-1.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if part.is_file() and part.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()  # still running: the kill lands mid-run
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = part.read_bytes().count(b"\n")
    assert 5 <= done < 60
    # A kill in the middle of a write leaves half a row: it is ignored, then cut off by the next append.
    with open(part, "ab") as fh:
        fh.write(b'{"file_name": "smiling_male/0000')
    assert not (out / "metadata.jsonl").exists()

    result = _run(out, n=60, groups=("smiling_male", "smiling_female"), batch_size=7)
    assert result.skipped >= done
    _check_complete(out, {"smiling_male": 60, "smiling_female": 60})
    for line in part.read_bytes().splitlines():
        json.loads(line)  # every line whole again
    _run(tmp_path / "clean", n=60, groups=("smiling_male", "smiling_female"))
    assert _files(out) == _files(tmp_path / "clean")


def test_truncated_row_is_ignored_and_regenerated(tmp_path):
    out = tmp_path / "s"
    _run(out, n=4)
    part = out / ".parts" / "smiling_male.0-of-1.jsonl"
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(b"".join(lines[:3]) + lines[3][:20])  # the last row half-written
    assert [r["index"] for r in stage.read_part(part)] == [0, 1, 2]
    result = _run(out, n=4)
    assert (result.written, result.skipped) == (1, 3)
    assert [r["index"] for r in stage.read_part(part)] == [0, 1, 2, 3]
    _check_complete(out, {"smiling_male": 4})


def test_smaller_n_keeps_and_larger_n_extends(tmp_path):
    out = tmp_path / "s"
    _run(out, n=3)
    grown = _run(out, n=6)
    assert (grown.written, grown.skipped) == (3, 3)
    shrunk = _run(out, n=2)
    assert (shrunk.written, shrunk.skipped, shrunk.present) == (0, 2, {"smiling_male": 6})
    _check_complete(out, {"smiling_male": 6})


def test_other_settings_are_not_mixed_in(tmp_path):
    out = tmp_path / "s"
    _run(out, n=2)
    with pytest.raises(UsageError) as exc:
        _run(out, n=2, seed=1)
    assert str(exc.value) == MSG_MISMATCH.format(out=out, file="smiling_male/000000.png", what="seed")
    with pytest.raises(UsageError, match="prompt differs"):
        _run(out, n=2, prompt_kind="plain")


def test_other_generator_settings_are_not_mixed_in(tmp_path):
    out = tmp_path / "s"
    _run(out, n=2)
    with pytest.raises(UsageError) as exc:
        _run(out, n=4, generator_options={"size": 24})
    assert str(exc.value) == (
        f"{out} holds images made with other generator settings (size 16 -> 24); use another --out or remove the folder"
    )
    assert sorted(_files(out)) == ["smiling_male/000000.png", "smiling_male/000001.png"]
    _run(out, n=3)  # the same settings extend the folder
    assert len(_files(out)) == 3


def test_prompt_kinds_and_orders(tmp_path):
    pf = load_prompt_file(PROMPTS)
    _run(tmp_path / "plain", n=3, prompt_kind="plain")
    rows = read_manifest(tmp_path / "plain" / "metadata.jsonl").rows
    assert {r["prompt"] for r in rows} == {"Portrait face photo of a smiling male."}
    _run(tmp_path / "random", n=40, prompt_order="random")
    rows = read_manifest(tmp_path / "random" / "metadata.jsonl").rows
    prompts = pf.groups["smiling_male"]
    assert [r["prompt"] for r in rows] == [
        pick_prompt(prompts, order="random", seed=0, group="smiling_male", index=i) for i in range(40)]
    assert [r["prompt"] for r in rows] != prompts[:40]
    assert len({r["prompt"] for r in rows}) > 15


def test_torchrun_ranks_split_a_shard(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    covered = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        i, n = effective_shard((1, 2))
        covered += [j for j in range(60) if j % n == i]
    assert sorted(covered) == [j for j in range(60) if j % 2 == 1]
    monkeypatch.setenv("RANK", "2")
    assert effective_shard(None) == (2, 3)


@pytest.mark.parametrize("value", ["2/2", "a/b", "1", "-1/2"])
def test_bad_shard(value):
    with pytest.raises(UsageError) as exc:
        stage.parse_shard(value)
    assert str(exc.value) == MSG_BAD_SHARD.format(value=value)


# ---- the command -------------------------------------------------------------------------------------


def test_cli_group_all(tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(app, ["synth", "--task", "smiling_male", "--group", "all", "--n", "2", "--out", str(out),
                                 "--size", "16", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["written"] == 8 and summary["groups"] == [
        "smiling_male", "smiling_female", "not_smiling_male", "not_smiling_female"]
    _check_complete(out, {"smiling_male": 2, "smiling_female": 2, "not_smiling_male": 2, "not_smiling_female": 2})


def test_cli_short_form_in_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["synth", "--group", "not_smiling_female", "--n", "3", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wrote 3 images in ")
    assert result.stdout.rstrip().endswith("synth/metadata.jsonl lists 3 images (not_smiling_female 3)")
    _check_complete(tmp_path / "synth", {"not_smiling_female": 3})
    # A prompt file in the run folder wins over the shipped one; aimfair.yaml sets options.
    local = tmp_path / "prompts" / "young_male.yaml"
    assert runner.invoke(app, ["prompts", "--task", "young_male", "--per-group", "2", "--seed", "9"]).exit_code == 0
    (tmp_path / "aimfair.yaml").write_text("synth:\n  n: 2\n  size: 16\n  out: ym\n")
    result = runner.invoke(app, ["synth", "--group", "old_male"])
    assert result.exit_code == 0, result.output
    rows = read_manifest(tmp_path / "ym" / "metadata.jsonl").rows
    assert [r["prompt"] for r in rows] == load_prompt_file(local).groups["old_male"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--group", "all", "--n", "2"], "Error: --group all needs --task or --prompts (which task's groups?)\n"),
        (["--n", "2"], "Error: --group is required (a group such as smiling_male, several separated by commas, or all)\n"),
        (["--group", "smiling_male"], "Error: --n is required (images per group)\n"),
        (["--group", "smiling_male", "--n", "0"], "Error: --n: must be at least 1, got 0\n"),
        (["--group", "grumpy_cat", "--n", "2"], "Error: no task has a group named 'grumpy_cat'; pass --prompts or --task\n"),
        (["--group", "smiling_male,young_male", "--n", "2"],
         "Error: groups smiling_male, young_male belong to different tasks; run synth once per task\n"),
        (["--group", "smiling_male", "--n", "2", "--shard", "3/2"], "Error: --shard must look like i/n with 0 <= i < n (got '3/2')\n"),
        (["--group", "smiling_male", "--n", "2", "--prompt-kind", "fancy"],
         "Error: --prompt-kind: must be one of contextual, plain, got 'fancy'\n"),
        (["--group", "smiling_male", "--n", "2", "--generator", "dalle"],
         "Error: unknown generator 'dalle' (known: procedural, diffusers)\n"),
        (["--group", "smiling_male", "--n", "2", "--steps", "5"],
         "Error: option --steps applies to --generator diffusers only\n"),
    ],
)
def test_cli_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["synth", *args])
    assert result.exit_code == 1
    assert result.stderr == message
    assert not (tmp_path / "synth").exists()  # a failed command leaves no output


def test_help_explains_every_option():
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0
    for flag in ("--group", "--n", "--prompts", "--task", "--out", "--generator", "--seed", "--batch-size",
                 "--prompt-kind", "--prompt-order", "--shard", "--size", "--model", "--steps", "--scheduler",
                 "--guidance", "--height", "--width", "--save-size", "--negative-prompt", "--dtype", "--compile",
                 "--device", "--json", "--config"):
        assert flag in result.stdout


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path):
    """Two CPU ranks under torchrun split the work and rank 0 writes one complete manifest."""
    torchrun = Path(sys.executable).with_name("torchrun")
    aimfair = Path(sys.executable).with_name("aimfair")
    if not torchrun.exists() or not aimfair.exists():
        pytest.skip("torchrun or the aimfair script is not installed beside this python")
    out = tmp_path / "s"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", str(aimfair), "synth", "--group", "smiling_male",
           "-n", "7", "--out", str(out), "--size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # only rank 0 prints
    assert sorted(p.name for p in (out / ".parts").iterdir()) == ["smiling_male.0-of-2.jsonl", "smiling_male.1-of-2.jsonl"]
    _check_complete(out, {"smiling_male": 7})
    _run(tmp_path / "one", n=7)
    assert _files(out) == _files(tmp_path / "one")
