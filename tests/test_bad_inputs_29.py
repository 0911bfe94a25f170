"""Issue 29, a new round of bad inputs. Each class with several members: the exit status, the exact one-line
message, inputs byte-identical (a snapshot of SHA-256 sums of the whole folder) and nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _safety import CPU, make_checkpoint, make_data, make_mask, make_model, private_copy, refused, run, snapshot, \
    write_csv
from aimfair_cli.core.fsio import MSG_SAME_AS_INPUT, MSG_TWO_OUTPUTS
from aimfair_cli.core.manifest import MSG_CSV_FIELD, MSG_DUPLICATE, MSG_NAME_TOO_LONG
from aimfair_cli.core.options import MSG_EMPTY_ITEM, MSG_IS_DIR, MSG_NOT_INT
from aimfair_cli.masking.selection import MSG_BAD_TOPK, MSG_TOPK_TOO_LARGE
from aimfair_cli.masking.synthsets import MSG_MISSING_CELL
from aimfair_cli.training.images import MSG_BATCH_OF_ONE, MSG_TOO_FEW_TO_TRAIN
from aimfair_cli.training.loop import MSG_NON_FINITE_SCORES
from aimfair_cli.training.resume import MSG_EPOCHS_DONE, MSG_NOT_FINITE_STATE

TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "4", *CPU]
FT = ["--epochs", "1", "--batch-size", "4", *CPU]  # finetune takes the checkpoint's image size
PRETRAIN = ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--weights", "none"]
EVAL = ["eval", "--model", "model.safetensors", "--data", "data/test.csv", *CPU]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base29")
    make_data(root)
    make_checkpoint(root / "model.safetensors")
    make_mask(root / "mask.safetensors")
    return root


@pytest.fixture
def ws(base, tmp_path, monkeypatch):
    return private_copy(base, tmp_path, monkeypatch)


# ---- an output that is an input: --log-file by identity --------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink", "absolute"])
def test_log_file_over_eval_data(ws, spelling):
    target = ws / "data" / "test.csv"
    log = {"same": "data/test.csv", "dotdot": "data/../data/test.csv", "absolute": str(target)}.get(spelling)
    if spelling == "symlink":
        os.symlink(target, ws / "link.csv")
        log = "link.csv"
    if spelling == "hardlink":
        os.link(target, ws / "hard.csv")
        log = "hard.csv"
    refused(ws, [*EVAL, "--log-file", log],
            MSG_SAME_AS_INPUT.format(out_label="--log-file", output=Path(log), in_label="--data", input="data/test.csv"))


@pytest.mark.parametrize("args, flag, path", [
    (EVAL, "--model", "model.safetensors"),
    ([*PRETRAIN, "-o", "p.safetensors", *TINY], "--train", "data/train.csv"),
    (["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
      "--strategy", "full", "-o", "f.safetensors", *FT], "--synth", "data/synth.csv"),
    (["mask", "--model", "model.safetensors", "--real", "data/train.csv", "--synth", "data/synth.csv",
      "-o", "m.safetensors", *CPU], "--real", "data/train.csv"),
])
def test_log_file_over_every_command_input(ws, args, flag, path):
    refused(ws, [*args, "--log-file", path],
            MSG_SAME_AS_INPUT.format(out_label="--log-file", output=path, in_label=flag, input=path))


@pytest.mark.parametrize("out_flag, over", [("--predictions", "--model"), ("--plot", "--reference"),
                                             ("--predictions", "--reference")])
def test_eval_outputs_over_a_checkpoint_by_a_hard_link(ws, out_flag, over):
    """Each eval output against each checkpoint it reads, spelled through a hard link; the message names the flag
    the checkpoint came from, once."""
    shutil.copy(ws / "model.safetensors", ws / "ref.safetensors")
    target = "model.safetensors" if over == "--model" else "ref.safetensors"
    suffix = ".csv" if out_flag == "--predictions" else ".png"
    os.link(ws / target, ws / f"link{suffix}")
    refused(ws, [*EVAL, "--reference", "ref.safetensors", out_flag, f"link{suffix}"],
            MSG_SAME_AS_INPUT.format(out_label=out_flag, output=f"link{suffix}", in_label=over, input=target))


def test_log_file_over_the_output_is_refused(ws):
    refused(ws, [*PRETRAIN, "-o", "p.safetensors", *TINY, "--log-file", "p.safetensors"],
            MSG_SAME_AS_INPUT.format(out_label="--log-file", output="p.safetensors", in_label="--out",
                                     input="p.safetensors"))


def test_log_file_is_written_once_checked(ws):
    result = run(*EVAL, "--log-file", "run.log")
    assert result.exit_code == 0, result.output
    assert "acc" in (ws / "run.log").read_text()


def test_log_file_on_a_full_disk_is_one_line(ws):
    refused(ws, [*EVAL, "--log-file", "/dev/full"], "--log-file: cannot write /dev/full: No space left on device")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_stdout_on_a_full_disk_is_one_line(base, tmp_path, json_flag):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([str(Path(sys.executable).parent / "aimfair"), *EVAL, *json_flag], cwd=base,
                              stdout=full, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "AIMFAIR_DEBUG": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == \
        "Error: cannot write the result to standard output: No space left on device"


@pytest.mark.parametrize("spelling", ["same", "dotdot"])
def test_log_file_on_another_output(ws, spelling):
    log = "p.csv" if spelling == "same" else "data/../p.csv"
    refused(ws, [*EVAL, "--predictions", "p.csv", "--log-file", log],
            MSG_SAME_AS_INPUT.format(out_label="--log-file", output=log, in_label="--predictions", input="p.csv"))


def test_two_outputs_on_one_file_by_a_hard_link(tmp_path):
    from aimfair_cli.core.errors import OutputError
    from aimfair_cli.core.fsio import check_outputs

    (tmp_path / "a.csv").write_text("x\n")
    os.link(tmp_path / "a.csv", tmp_path / "b.csv")
    with pytest.raises(OutputError) as err:
        check_outputs({"--predictions": tmp_path / "a.csv", "--out": tmp_path / "b.csv"}, {})
    assert str(err.value) == MSG_TWO_OUTPUTS.format(a="--predictions", b="--out", path=tmp_path / "b.csv")


# ---- tracebacks where one line belongs ------------------------------------------------------------------------


def test_one_row_training_set(ws):
    write_csv(ws / "data" / "one.csv", [{"file_name": "img/0.png", "target": 0, "protected": ""}])
    refused(ws, ["pretrain", "--train", "data/one.csv", "--val", "data/val.csv", "--weights", "none",
                 "-o", "p.safetensors", *TINY],
            MSG_TOO_FEW_TO_TRAIN.format(label="--train data/one.csv", n=1, world=1, need=2))


@pytest.mark.parametrize("cmd", [
    [*PRETRAIN, "-o", "p.safetensors"],
    ["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
     "--strategy", "full", "-o", "f.safetensors"],
    ["mask", "--model", "model.safetensors", "--real", "data/train.csv", "--synth", "data/synth.csv",
     "-o", "m.safetensors"],
])
def test_batch_of_one_refused_in_every_training_pass(ws, cmd):
    refused(ws, [*cmd, "--epochs", "1", *CPU, "--batch-size", "1"] if cmd[0] != "mask" else
            [*cmd, *CPU, "--batch-size", "1"], MSG_BATCH_OF_ONE.format(batch=1, per=1, world=1))


def test_a_trailing_one_image_batch_is_merged(ws):
    # 8 training images at batch 7: the last batch of one joins the one before, and training ends
    result = run(*PRETRAIN, "-o", "p.safetensors", "--epochs", "1", "--image-size", "32", "--batch-size", "7", *CPU)
    assert result.exit_code == 0, result.output


def test_sampler_never_yields_a_batch_of_one():
    from aimfair_cli.training.images import EpochSampler

    for n in range(2, 30):
        for b in (2, 3, 4, 7):
            for order in (None, list(range(n))):
                sizes = [len(x) for x in EpochSampler(n, batch_size=b, seed=0, order=order).batches()]
                assert sum(sizes) == n and min(sizes) >= 2, (n, b, sizes)


def test_csv_field_too_long(ws):
    (ws / "data" / "huge.csv").write_text("file_name,target,protected\n\"" + "x" * 200_000 + "\",0,0\n")
    refused(ws, [*EVAL[:3], "--data", "data/huge.csv", *CPU],
            MSG_CSV_FIELD.format(path="data/huge.csv", line=2, limit=131072))


@pytest.mark.parametrize("name", ["a" * 300 + ".png", "d/" + "b" * 5000 + ".png"])
def test_file_name_too_long(ws, name):
    write_csv(ws / "data" / "long.csv", [{"file_name": name, "target": 0, "protected": 0}])
    refused(ws, [*EVAL[:3], "--data", "data/long.csv", *CPU],
            MSG_NAME_TOO_LONG.format(path="data/long.csv", row=1, n=len(name)))


@pytest.mark.parametrize("cmd", [
    ["finetune", "--model", "model.safetensors", "--synth", "data/s3.csv", "--val", "data/val.csv",
     "--strategy", "full", "-o", "f.safetensors", *FT],
    ["mask", "--model", "model.safetensors", "--real", "data/train.csv", "--synth", "data/s3.csv",
     "-o", "m.safetensors", *CPU],
])
def test_synthetic_manifest_missing_a_group(ws, cmd):
    lines = (ws / "data" / "synth.csv").read_text().splitlines()
    (ws / "data" / "s3.csv").write_text("\n".join(l for l in lines if not l.endswith("g11")) + "\n")
    refused(ws, cmd, MSG_MISSING_CELL.format(y=1, s=1))


def _nested_safetensors(path: Path, depth: int = 100_000, in_meta: bool = False) -> Path:
    deep = "[" * depth + "]" * depth
    header = {"__metadata__": {"aimfair": deep}} if in_meta else json.loads("{}")
    raw = json.dumps(header).encode() if in_meta else ('{"x": ' + deep + "}").encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


@pytest.mark.parametrize("in_meta", [False, True])
def test_deeply_nested_checkpoint_header(ws, in_meta):
    _nested_safetensors(ws / "deep.safetensors", in_meta=in_meta)
    result = run(*EVAL[:1], "--model", "deep.safetensors", "--data", "data/test.csv", *CPU)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and "deep.safetensors" in result.stderr


def test_deeply_nested_resume_state(ws):
    _nested_safetensors(ws / "p.resume.safetensors", in_meta=True)
    refused(ws, [*PRETRAIN, "-o", "p.safetensors", *TINY, "--resume"],
            "--resume: p.resume.safetensors is not a resumable state written by aimfair")


def test_deeply_nested_mask(ws):
    _nested_safetensors(ws / "deepmask.safetensors")
    result = run("finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                 "--mask", "deepmask.safetensors", "-o", "f.safetensors", *FT)
    assert result.exit_code == 1 and "Traceback" not in result.output and "deepmask.safetensors" in result.stderr


# ---- silently wrong ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["negative_variance", "nan_weight"])
def test_non_finite_scores_never_become_a_metric(ws, how):
    import torch

    model = make_model()
    with torch.no_grad():
        if how == "negative_variance":
            model.bn1.running_var.fill_(-1.0)
        else:
            model.fc.weight.fill_(float("nan"))
    make_checkpoint(ws / "bad.safetensors", model)
    from aimfair_cli.training.checkpoint import MSG_NOT_FINITE

    message = MSG_NON_FINITE_SCORES.format(what="bad.safetensors", n=8, total=8) if how == "negative_variance" \
        else MSG_NOT_FINITE.format(path="bad.safetensors", name="fc.weight")  # the loader finds a NaN weight first
    refused(ws, ["eval", "--model", "bad.safetensors", "--data", "data/test.csv", *CPU, "--predictions", "p.csv"],
            message)


@pytest.mark.parametrize("spelling", ["absolute", "symlink", "hardlink", "dotdot"])
def test_duplicate_rows_by_identity(ws, spelling):
    img = ws / "data" / "img" / "8.png"
    other = {"absolute": str(img), "dotdot": "img/../img/8.png"}.get(spelling)
    if spelling == "symlink":
        os.symlink(img, ws / "data" / "img" / "link.png")
        other = "img/link.png"
    if spelling == "hardlink":
        os.link(img, ws / "data" / "img" / "hard.png")
        other = "img/hard.png"
    rows = [{"file_name": "img/8.png", "target": 0, "protected": 0}, {"file_name": other, "target": 0, "protected": 0},
            {"file_name": "img/9.png", "target": 1, "protected": 0}]
    write_csv(ws / "data" / "dup.csv", rows)
    refused(ws, [*EVAL[:3], "--data", "data/dup.csv", *CPU],
            MSG_DUPLICATE.format(path="data/dup.csv", rows="1 and 2", file_name="img/8.png", more=""))


def _state(ws, epochs=2):
    result = run(*PRETRAIN, "-o", "p.safetensors", "--epochs", str(epochs), "--image-size", "32", "--batch-size", "4",
                 *CPU, "--keep-state")
    assert result.exit_code == 0, result.output
    return ws / "p.resume.safetensors"


def test_resume_with_fewer_epochs_leaves_the_state(ws):
    _state(ws)
    refused(ws, [*PRETRAIN, "-o", "p.safetensors", "--epochs", "1", "--image-size", "32", "--batch-size", "4", *CPU,
                 "--resume", "--keep-state"],
            MSG_EPOCHS_DONE.format(path="p.resume.safetensors", done=2, epochs=1))


def test_resume_state_with_a_nan_best_copy(ws):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = _state(ws)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    tensors["best.fc.weight"] = tensors["best.fc.weight"] * float("nan")
    save_file(tensors, str(path), metadata=meta)
    refused(ws, [*PRETRAIN, "-o", "p.safetensors", "--epochs", "3", "--image-size", "32", "--batch-size", "4", *CPU,
                 "--resume"],
            MSG_NOT_FINITE_STATE.format(path="p.resume.safetensors", which="the best copy, fc.weight"))


# ---- checked too late -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, message", [
    ("200", MSG_TOPK_TOO_LARGE.format(k=200, total=62)),
    ("nan", MSG_BAD_TOPK.format(value="nan")),
    ("0", MSG_BAD_TOPK.format(value="0")),
    ("150%", MSG_BAD_TOPK.format(value="150%")),
])
def test_demo_topk_checked_before_any_work(ws, k, message):
    refused(ws, ["demo", "--topk", k, "--out", "demo_run"], message)


def test_device_checked_before_any_download(ws, monkeypatch):
    import aimfair_cli.training.models as models

    def no_download(*a, **k):
        raise AssertionError("a download was tried")

    monkeypatch.setattr(models, "ensure_imagenet_weights", no_download)
    refused(ws, ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--device", "bogus",
                 "-o", "p.safetensors"], "unknown device 'bogus' (use auto, cpu, cuda or cuda:N)")
    refused(ws, ["demo", "--device", "bogus", "--out", "demo_run"],
            "unknown device 'bogus' (use auto, cpu, cuda or cuda:N)")


@pytest.mark.parametrize("value", ["5,,6", ",", "5,", ",5"])
def test_empty_item_in_a_comma_list(ws, value):
    refused(ws, [*PRETRAIN, "-o", "p.safetensors", *TINY, "--milestones", value],
            MSG_EMPTY_ITEM.format(where="--milestones", value=value))


def test_from_mask_with_a_nan_score(ws):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from aimfair_cli.masking.maskfile import MSG_MASK_META

    from aimfair_cli.masking.maskfile import META_KEY

    src = ws / "mask.safetensors"
    with safe_open(str(src), framework="pt") as fh:
        meta = json.loads(fh.metadata()[META_KEY])
    key = META_KEY
    meta["scores"] = {n: {"delta1": float("nan"), "delta2": 0.1} for n in meta["shapes"]}
    save_file(load_file(str(src)), str(ws / "nanmask.safetensors"), metadata={key: json.dumps(meta)})
    refused(ws, ["mask", "--model", "model.safetensors", "--from-mask", "nanmask.safetensors", "--topk", "2",
                 "-o", "m2.safetensors", *CPU],
            MSG_MASK_META.format(path="nanmask.safetensors", field="scores",
                                 rule="a mapping of tensor names to finite delta1 and delta2 numbers"))


# ---- one exit-code rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, code, message", [
    ([*PRETRAIN, "-o", "p.safetensors", "--milestones", "a,b"], 2, MSG_NOT_INT.format(where="--milestones", value="a")),
    (["pretrain", "--train", "data", "--val", "data/val.csv"], 1, MSG_IS_DIR.format(where="--train", value="data")),
    ([*EVAL[:3], "--data", "data", *CPU], 1, MSG_IS_DIR.format(where="--data", value="data")),
    ([*PRETRAIN, "-o", "data"], 1, MSG_IS_DIR.format(where="--out", value="data")),
])
def test_one_exit_code_rule(ws, args, code, message):
    refused(ws, args, message, code)


def test_a_config_file_value_not_of_its_type_exits_1(ws):
    (ws / "aimfair.yaml").write_text("pretrain:\n  epochs: abc\n")
    refused(ws, [*PRETRAIN, "-o", "p.safetensors"], "aimfair.yaml: pretrain.epochs: expected a whole number, got 'abc'")


# ---- a killed run keeps its history -----------------------------------------------------------------------------


def _rows(path: Path) -> list[str]:
    return [line.split(",")[0] for line in path.read_text().splitlines()[1:]]


def test_history_is_flushed_per_epoch_and_resume_continues_it(ws):
    aimfair = str(Path(sys.executable).parent / "aimfair")
    args = [aimfair, *PRETRAIN, "-o", "p.safetensors", "--epochs", "40", "--image-size", "32", "--batch-size", "4",
            *CPU, "--no-cache"]
    env = {**os.environ, "AIMFAIR_DEBUG": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = ws / "p.history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not history.exists() or len(_rows(history)) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _rows(history)
    assert len(done) >= 2 and done == [str(i) for i in range(1, len(done) + 1)]  # rows on disk while it ran
    result = subprocess.run([*args[:args.index("40")], str(len(done) + 2), *args[args.index("40") + 1:], "--resume"],
                            cwd=ws, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = _rows(history)
    assert rows == [str(i) for i in range(1, len(done) + 3)]  # continued, no row twice


@pytest.mark.slow
@pytest.mark.parametrize("rows, batch, message", [
    (3, 16, MSG_TOO_FEW_TO_TRAIN.format(label="--train data/few.csv", n=3, world=2, need=4)),
    (8, 2, MSG_BATCH_OF_ONE.format(batch=2, per=1, world=2)),
])
def test_one_image_batches_under_torchrun_are_refused(ws, rows, batch, message):
    lines = (ws / "data" / "val.csv").read_text().splitlines()
    (ws / "data" / "few.csv").write_text("\n".join(lines[: rows + 1]) + "\n")
    before = snapshot(ws)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "aimfair_cli", "--", "pretrain", "--train", "data/few.csv", "--val", "data/val.csv",
                           "--weights", "none", "--epochs", "1", "--image-size", "32", "--workers", "0", "--device",
                           "cpu", "--batch-size", str(batch), "-o", "p.safetensors"],
                          cwd=ws, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "AIMFAIR_DEBUG": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert proc.stderr.count(f"Error: {message}") == 1  # one rank prints it; torchrun adds its own report
    assert "aimfair_cli/" not in proc.stderr  # no traceback through aimfair's code
    assert snapshot(ws) == before
