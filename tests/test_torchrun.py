"""Every stage under a real `torchrun` (two CPU processes, gloo), as a user launches it:

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m aimfair_cli -- <command> ...

Tiny data (32 px, a few dozen images, one epoch, --workers 0). Each launch writes every rank's stdout/stderr to
its own file (`--redirects 3 --log-dir`), so "rank 1 printed nothing" is checked on rank 1's own stream.
"""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core import dist
from aimfair_cli.core.errors import UsageError
from aimfair_cli.core.manifest import read_manifest
from aimfair_cli.training.images import MSG_IMAGE_NOT_FOUND, MSG_IMAGE_UNREADABLE, ShardSampler

pytestmark = pytest.mark.slow

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
FAST = ["--workers", "0", "--device", "cpu", "--batch-size", "16"]
LAUNCH_TIMEOUT_S = 240  # generous for a loaded machine; an idle one takes about 10 s per launch
FAIL_BOUND_S = 120  # a failure on one rank must end the whole job well within this


def _torchrun(args, cwd, *, logs: Path | None = None):
    """Launch `aimfair <args>` on 2 processes. With `logs`, each rank's output goes to its own files there."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if logs is not None:
        cmd += ["--log-dir", str(logs), "--redirects", "3"]
    cmd += ["-m", "aimfair_cli", "--", *[str(a) for a in args]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AIMFAIR_DEBUG": ""}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    return proc, time.monotonic() - started


def _rank_output(logs: Path, rank: int, stream: str) -> str:
    (path,) = logs.glob(f"**/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def _ok(args, cwd, tmp_path, name):
    """Run, check exit 0, and return rank 0's stdout after checking that rank 1 wrote nothing to stdout."""
    logs = tmp_path / f"logs_{name}"
    proc, _ = _torchrun(args, cwd, logs=logs)
    assert proc.returncode == 0, proc.stderr[-3000:] + _rank_output(logs, 0, "stderr")[-3000:]
    assert _rank_output(logs, 1, "stdout") == ""
    # rank 1 draws no progress and logs nothing either (torch's own warnings aside)
    assert "check " not in _rank_output(logs, 1, "stderr")
    return _rank_output(logs, 0, "stdout")


def _no_temp_files(folder: Path):
    assert not [p.name for p in folder.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run folder: demo data (32 train, 16 val, 16 test images) and 16 synthetic images per group."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for args in (
            ["data", "demo", "--out", "data", "--n-train", 32, "--n-val", 16, "--n-test", 16, "--size", 32],
            ["synth", "--task", "smiling_male", "--group", "all", "--n", 16, "--size", 32],
        ):
            result = runner.invoke(app, [str(a) for a in args])
            assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def pretrained(run_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    out = _ok(["pretrain", "--weights", "none", "--epochs", 1, "--image-size", 32, *FAST, "--out", "ddp.safetensors", "--json"], run_dir,
              tmp, "pretrain")
    return json.loads(out)  # one JSON object: two ranks printing would not parse


@pytest.fixture(scope="module")
def masked(run_dir, pretrained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mask")
    out = _ok(["mask", "--model", "ddp.safetensors", "--topk", 40, *FAST, "--out", "ddp_mask.safetensors", "--json"],
              run_dir, tmp, "mask")
    return json.loads(out)


@pytest.fixture(scope="module")
def finetuned(run_dir, masked, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    out = _ok(["finetune", "--model", "ddp.safetensors", "--mask", "ddp_mask.safetensors", "--epochs", 1, *FAST,
               "--out", "ddp_ft.safetensors", "--json"], run_dir, tmp, "finetune")
    return json.loads(out)


def test_pretrain_two_processes_one_checkpoint(run_dir, pretrained):
    assert pretrained["out"] == "ddp.safetensors" and pretrained["best_epoch"] == 1
    assert 0 <= pretrained["best_val_acc"] <= 1
    assert len(load_file(run_dir / "ddp.safetensors")) > 60
    assert (run_dir / "ddp.config.yaml").is_file()
    _no_temp_files(run_dir)


def test_mask_two_processes_counts_every_image_once(run_dir, masked):
    assert masked["k"] == 40 and masked["total"] == 62
    # the sizes are the sets' sizes, not one rank's shard
    assert masked["sizes"] == {"real": 32, "synthetic_biased": 32, "synthetic_balanced": 32}
    assert (run_dir / "ddp_mask.safetensors").is_file()
    _no_temp_files(run_dir)


def test_finetune_two_processes_updates_only_masked_tensors(run_dir, masked, finetuned):
    assert finetuned["trainable"] == masked["n_selected"]
    before, after = load_file(run_dir / "ddp.safetensors"), load_file(run_dir / "ddp_ft.safetensors")
    chosen = set(masked["selected"])
    params = [n for n in before if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) == 62
    for name in params:
        if name not in chosen:
            assert after[name].equal(before[name]), name  # frozen tensors stay bit-identical under DDP too
    assert any(not after[n].equal(before[n]) for n in chosen)
    _no_temp_files(run_dir)


def test_eval_two_processes_prints_the_single_process_numbers(run_dir, finetuned, tmp_path, monkeypatch):
    args = ["eval", "--model", "ddp_ft.safetensors", "--data", "data/test.csv", "--workers", "0", "--device", "cpu",
            "--batch-size", "4"]
    two = _ok([*args, "--json"], run_dir, tmp_path, "eval_json")
    monkeypatch.chdir(run_dir)
    one = runner.invoke(app, [*args, "--json"])
    assert one.exit_code == 0, one.output
    assert json.loads(two) == json.loads(one.stdout)  # exactly, every cell count and rate
    table = _ok(args, run_dir, tmp_path, "eval_table")
    assert table.count("ddp_ft.safetensors") == 1  # one result table, from rank 0


def test_synth_two_processes_matches_one_process(run_dir, tmp_path, monkeypatch):
    # `--n` right after the `--`: torchrun's own parser never sees it (it would read an abbreviation of --nnodes)
    args = ["synth", "--task", "smiling_male", "--group", "smiling_male,smiling_female", "--n", 5, "--size", 24]
    out = _ok([*args, "--out", tmp_path / "two", "--json"], run_dir, tmp_path, "synth")
    summary = json.loads(out)
    assert summary["written"] == 10 and summary["present"] == {"smiling_female": 5, "smiling_male": 5}
    monkeypatch.chdir(run_dir)
    one = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "one"]])
    assert one.exit_code == 0, one.output
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    assert (two_dir / "metadata.jsonl").read_bytes() == (one_dir / "metadata.jsonl").read_bytes()
    for row in read_manifest(one_dir / "metadata.jsonl").rows:
        assert (two_dir / row["file_name"]).read_bytes() == (one_dir / row["file_name"]).read_bytes()
    assert sorted(p.name for p in (two_dir / ".parts").iterdir()) == [
        "smiling_female.0-of-2.jsonl", "smiling_female.1-of-2.jsonl",
        "smiling_male.0-of-2.jsonl", "smiling_male.1-of-2.jsonl"]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error: ")]


def test_missing_image_seen_by_rank_1_ends_the_job_with_one_error(run_dir, tmp_path):
    """Row 2 is in rank 1's share of the image check only; both ranks agree on it and stop."""
    manifest = read_manifest(run_dir / "data" / "train.csv")
    rows = (run_dir / "data" / "train.csv").read_text().splitlines()
    missing = "images/train/not_there.png"
    rows[2] = rows[2].replace(manifest.rows[1]["file_name"], missing)  # header + row index 1 (rank 1's)
    (run_dir / "data" / "train_missing.csv").write_text("\n".join(rows) + "\n")
    proc, seconds = _torchrun(["pretrain", "--weights", "none", "--train", "data/train_missing.csv", "--epochs", 1, "--image-size", 32,
                               *FAST, "--out", tmp_path / "never.safetensors"], run_dir)
    assert proc.returncode == 1
    assert seconds < FAIL_BOUND_S
    assert proc.stdout == ""
    path = Path("data") / "train_missing.csv"
    assert _error_lines(proc.stderr) == [
        "Error: " + MSG_IMAGE_NOT_FOUND.format(manifest=path, row=2, path=path.parent / missing)]
    assert "aimfair_cli/" not in proc.stderr  # no traceback through aimfair's code (torchrun prints its own)
    assert not (tmp_path / "never.safetensors").exists()


def _undecodable_png(path: Path) -> None:
    """Keep the PNG's structure and checksums (so the pre-flight check passes) but garble its pixel data, so
    only the process that decodes it fails, in the middle of its work."""
    data, out, i = path.read_bytes(), bytearray(), 8
    out += data[:8]
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
        if kind == b"IDAT":
            body = bytes(b ^ 0x5A for b in body)
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        i += 12 + n
    path.write_bytes(bytes(out))


def test_image_only_rank_1_decodes_fails_mid_run_without_a_hang(run_dir, finetuned, tmp_path):
    """Rank 1 fails while rank 0 waits for it in a collective: one error line, exit 1, no hang."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(run_dir / "data", data)
    test = read_manifest(data / "test.csv")
    bad = test.image_path(test.rows[3])  # row index 3: rank 1's shard
    _undecodable_png(bad)
    proc, seconds = _torchrun(["eval", "--model", run_dir / "ddp_ft.safetensors", "--data", data / "test.csv",
                               "--workers", "0", "--device", "cpu", "--batch-size", "4"], run_dir)
    assert proc.returncode == 1
    assert seconds < FAIL_BOUND_S
    assert proc.stdout == ""
    assert _error_lines(proc.stderr) == [
        "Error: " + MSG_IMAGE_UNREADABLE.format(manifest=data / "test.csv", row=4, path=bad)]
    assert "aimfair_cli/" not in proc.stderr


# ---- the pieces, in one process ----------------------------------------------------------------------------


def test_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist.local_batch(96) == 32
    with pytest.raises(UsageError) as err:
        dist.local_batch(128)
    assert str(err.value) == dist.MSG_BATCH_SPLIT.format(batch=128, world=3)


@pytest.mark.parametrize("shuffle", [False, True])
def test_unpadded_shards_cover_each_item_once_and_rebuild_the_global_batches(shuffle):
    n, world, batch = 23, 2, 4
    shards = [list(ShardSampler(n, rank=r, world_size=world, shuffle=shuffle, seed=5)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(s) for s in shards] == [12, 11]
    # the ranks' i-th batches of batch/world images together are batch i of one process reading the same order
    order = list(ShardSampler(n, rank=0, world_size=1, shuffle=shuffle, seed=5))
    per = batch // world
    for i in range(len(order) // batch):
        together = sorted(j for s in shards for j in s[i * per:(i + 1) * per])
        assert together == sorted(order[i * batch:(i + 1) * batch])


def test_a_leading_double_dash_is_dropped():
    proc = subprocess.run([sys.executable, "-m", "aimfair_cli", "--", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("aimfair ")


def test_every_training_method_two_processes(run_dir, tmp_path):
    """Each `pretrain --method` under torchrun: one checkpoint, rank 1 silent, the method recorded (methods with a
    reference stage run it under DDP too; GroupDRO's weights and LfF's averages are merged over ranks)."""
    from aimfair_cli.methods import METHODS
    from aimfair_cli.training.checkpoint import read_meta

    for method in [m for m in METHODS if m != "erm"]:
        out = _ok(["pretrain", "--weights", "none", "--epochs", 1, "--image-size", 32, *FAST, "--method", method,
                   "--eiil-steps", 20, "--out", f"ddp-{method}.safetensors", "--json"], run_dir, tmp_path, method)
        assert json.loads(out)["best_epoch"] == 1
        meta = read_meta(run_dir / f"ddp-{method}.safetensors")
        assert meta["method"] == method and meta["group_labels"] == {"group-dro": "train", "dfr": "val"}.get(method, "none")
        assert not list(run_dir.glob(f"ddp-{method}*.resume.safetensors"))
