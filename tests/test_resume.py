"""Resumable training: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.training.checkpoint import read_meta
from aimfair_cli.training.resume import MSG_NO_STATE, state_path_for

from test_cli_pretrain_eval import make_dataset

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
BASE = ["--train", "data/train.csv", "--val", "data/val.csv", "--epochs", "3", "--image-size", "32", "--batch-size",
        "8", "--device", "cpu", "--weights", "none", "--lr", "0.05", "--milestones", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_dataset(root / "data", n=240)  # 120 training images: an epoch lasts long enough to be killed in
    return root


def _aimfair(root, args, **kw):
    env = {**os.environ, "AIMFAIR_DEBUG": ""}
    return subprocess.Popen([sys.executable, "-m", "aimfair_cli", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _weights(path):
    return load_file(str(path))


def _same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("workers,cache", [("0", "--cache"), ("2", "--no-cache")])
def test_killed_after_an_epoch_and_resumed_ends_bit_identical(folder, workers, cache):
    extra = ["--workers", workers, cache]
    whole, cut = f"whole{workers}.safetensors", f"cut{workers}.safetensors"
    proc = _aimfair(folder, ["pretrain", *BASE, *extra, "--out", whole])
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    assert not state_path_for(folder / whole).exists()  # removed when the run completes

    state = state_path_for(folder / cut)
    proc = _aimfair(folder, ["pretrain", *BASE, *extra, "--out", cut])
    deadline = time.monotonic() + 600
    while not state.exists():  # written atomically at the end of epoch 1
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (folder / cut).exists(), "the run ended before it could be killed"
    assert read_meta_epoch(state) in (1, 2)

    proc = _aimfair(folder, ["pretrain", *BASE, *extra, "--out", cut, "--resume"])
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert _same(_weights(folder / whole), _weights(folder / cut))
    a, b = read_meta(folder / whole), read_meta(folder / cut)
    untimed = lambda h: [{k: v for k, v in row.items() if k not in ("img_s", "seconds")} for row in h]  # noqa: E731
    assert untimed(a["history"]) == untimed(b["history"]) and a["best_epoch"] == b["best_epoch"]
    assert len((folder / cut.replace(".safetensors", ".history.csv")).read_text().splitlines()) == 4
    assert not state.exists()


def read_meta_epoch(path):
    import json

    from aimfair_cli.training.checkpoint import _read_header
    from aimfair_cli.training.resume import META_KEY

    return json.loads(_read_header(path)["__metadata__"][META_KEY])["epoch"]


def _run(root, args, monkeypatch):
    monkeypatch.chdir(root)
    return runner.invoke(app, args)


def test_resume_refuses_other_options_and_a_missing_state(folder, monkeypatch):
    args = ["pretrain", *BASE, "--workers", "0", "--epochs", "1", "--out", "kept.safetensors", "--keep-state"]
    result = _run(folder, args, monkeypatch)
    assert result.exit_code == 0, result.output
    state = state_path_for(folder / "kept.safetensors")
    assert state.is_file() and read_meta_epoch(state) == 1  # --keep-state keeps it

    changed = _run(folder, [*args, "--resume", "--lr", "0.01"], monkeypatch)
    assert changed.exit_code == 1
    assert "--resume: the run at" in changed.stderr and "--lr 0.05 (now 0.01)" in changed.stderr
    assert "only --epochs may change" in changed.stderr

    missing = _run(folder, ["pretrain", *BASE, "--workers", "0", "--out", "none.safetensors", "--resume"], monkeypatch)
    assert missing.exit_code == 1
    expected = MSG_NO_STATE.format(path=state_path_for("none.safetensors"))
    assert missing.stderr.strip().splitlines()[-1] == f"Error: {expected}"
    assert not (folder / "none.safetensors").exists()

    not_ours = folder / "other.safetensors"
    state_path_for(not_ours).write_bytes(b"not a state")
    bad = _run(folder, ["pretrain", *BASE, "--workers", "0", "--out", "other.safetensors", "--resume"], monkeypatch)
    assert bad.exit_code == 1 and "is not a resumable state written by aimfair" in bad.stderr


@pytest.mark.slow
def test_more_epochs_continue_the_schedule(folder, monkeypatch):
    """A 2-epoch run kept and resumed with --epochs 3 equals a 3-epoch run (same schedule)."""
    common = ["pretrain", *BASE, "--workers", "0"]
    assert _run(folder, [*common, "--out", "three.safetensors"], monkeypatch).exit_code == 0
    first = _run(folder, [*common, "--epochs", "2", "--out", "grow.safetensors", "--keep-state"], monkeypatch)
    assert first.exit_code == 0, first.output
    more = _run(folder, [*common, "--out", "grow.safetensors", "--resume"], monkeypatch)
    assert more.exit_code == 0, more.output
    assert _same(_weights(folder / "three.safetensors"), _weights(folder / "grow.safetensors"))
