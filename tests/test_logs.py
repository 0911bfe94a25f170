"""Logs that read well in a file: plain timestamped lines when stderr is not a terminal, and --log-file."""

import os
import re
import subprocess
import sys

import pytest

from aimfair_cli.cli import console

from test_cli_pretrain_eval import make_dataset

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) \S")
ARGS = ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--epochs", "2", "--image-size", "32",
        "--batch-size", "8", "--workers", "0", "--device", "cpu", "--weights", "none", "--out", "m.safetensors"]


def _aimfair(root, *args):
    env = {**os.environ, "AIMFAIR_DEBUG": "", "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "aimfair_cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    make_dataset(root / "data")
    return root, _aimfair(root, *ARGS, "--log-file", "run.log")


def test_piped_stderr_has_plain_whole_timestamped_lines(logged):
    root, proc = logged
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", proc.stderr)  # no escape codes, no carriage returns
    # one line per epoch from the progress (steps done, time) and one from the log (loss, val acc), each whole
    for epoch in (1, 2):
        assert sum(f"pretrain epoch {epoch}/2: 3/3" in line for line in lines) == 1
        assert sum(f"pretrain epoch {epoch}/2: loss" in line and "val acc" in line for line in lines) == 1
    assert max(len(line) for line in lines) > 80  # long lines are not wrapped at the 80-column width
    assert "━" not in proc.stderr  # no bars


def test_log_file_holds_the_same_lines(logged):
    root, proc = logged
    assert (root / "run.log").read_text().splitlines() == proc.stderr.splitlines()


def test_the_error_line_reaches_the_log_file(tmp_path):
    proc = _aimfair(tmp_path, "pretrain", "--train", "missing.csv", "--weights", "none", "--log-file", "err.log")
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ")
    assert (tmp_path / "err.log").read_text().splitlines()[-1].endswith(proc.stderr.strip())


def test_an_unwritable_log_file_is_one_line(tmp_path):
    proc = _aimfair(tmp_path, "pretrain", "--log-file", str(tmp_path / "no" / "such" / "dir" / "x.log"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "--log-file: cannot write" in proc.stderr


def test_a_long_task_reports_progress_at_intervals(caplog):
    progress = console.PlainProgress(every=0)
    with caplog.at_level("INFO", logger=console.PROGRESS_LOGGER):
        with progress.task("pretrain epoch 1/3", total=4) as task:
            for _ in range(4):
                task.advance(1, loss="0.500", **{"img/s": "61"})
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("pretrain epoch 1/3: 1/4, 0:00 elapsed, eta 0:00  loss 0.500  img/s 61")
    assert len(messages) == 4  # three while running (not at 4/4) and the final one
    assert messages[-1].startswith("pretrain epoch 1/3: 4/4, 0:00  loss")


def test_tensorboard_scalars_follow_the_history(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aimfair_cli.stages.pretrain import PretrainConfig, run_pretrain

    make_dataset(tmp_path / "data")
    d = tmp_path / "data"
    run_pretrain(PretrainConfig(train=d / "train.csv", val=d / "val.csv", out=tmp_path / "m.safetensors", epochs=2,
                                image_size=32, batch_size=8, workers=0, device="cpu", weights="none",
                                tensorboard=tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"m/loss", "m/acc", "m/val_acc", "m/lr", "m/img_s", "m/seconds"} <= tags
    history = (tmp_path / "m.history.csv").read_text().splitlines()
    loss = [float(line.split(",")[2]) for line in history[1:]]
    assert [e.step for e in events.Scalars("m/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("m/loss")] == pytest.approx(loss, rel=1e-4)


def test_tensorboard_without_the_package_is_refused_before_work(tmp_path, monkeypatch):
    import importlib.util

    from aimfair_cli.core.errors import UsageError
    from aimfair_cli.stages.pretrain import PretrainConfig, run_pretrain
    from aimfair_cli.training.tracking import MSG_NO_TENSORBOARD

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    make_dataset(tmp_path / "data")
    d = tmp_path / "data"
    with pytest.raises(UsageError, match="needs the tensorboard package"):
        run_pretrain(PretrainConfig(train=d / "train.csv", val=d / "val.csv", out=tmp_path / "m.safetensors",
                                    epochs=1, image_size=32, workers=0, device="cpu", weights="none",
                                    tensorboard=tmp_path / "tb"))
    assert MSG_NO_TENSORBOARD.startswith("--tensorboard") and not (tmp_path / "m.safetensors").exists()
