"""Issue 9 §2, never destroy an input: an output that resolves to an input (same path, `./a/../a`, a symlink, a
hard link) is refused before any work, fixed formats keep their suffix, and a destination that cannot be written
is found before training, not at the final save. Every case: exit 1, one exact stderr line, inputs byte-identical
and nothing left behind."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _safety import CPU, make_checkpoint, make_data, make_mask, private_copy, refused, run, snapshot
from aimfair_cli.core.fsio import MSG_BAD_SUFFIX, MSG_CANNOT_WRITE, MSG_IS_FOLDER, MSG_NOT_FOLDER, MSG_SAME_AS_INPUT
from aimfair_cli.core.tasks import find_prompt_file
from aimfair_cli.stages.pretrain import MSG_BAD_OUT

TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", *CPU]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    make_data(root)
    make_checkpoint(root / "model.safetensors")
    make_mask(root / "mask.safetensors")
    return root


@pytest.fixture
def ws(base, tmp_path, monkeypatch):
    return private_copy(base, tmp_path, monkeypatch)



# ---- an output that is an input ----------------------------------------------------------------------------


def test_finetune_out_over_model_dot_dot(ws):
    (ws / "sub").mkdir()
    refused(ws, ["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                 "--strategy", "full", "-o", "./sub/../model.safetensors", *TINY[:2], *CPU],
            MSG_SAME_AS_INPUT.format(out_label="--out", output="sub/../model.safetensors", in_label="--model",
                                     input="model.safetensors"))


def test_finetune_out_over_mask(ws):
    refused(ws, ["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                 "--mask", "mask.safetensors", "-o", "mask.safetensors", *CPU],
            MSG_SAME_AS_INPUT.format(out_label="--out", output="mask.safetensors", in_label="--mask",
                                     input="mask.safetensors"))


def test_mask_out_over_model_through_a_symlink(ws):
    os.symlink("model.safetensors", ws / "link.safetensors")
    refused(ws, ["mask", "--model", "model.safetensors", "--real", "data/train.csv", "--synth", "data/synth.csv",
                 "-o", "link.safetensors", *CPU],
            MSG_SAME_AS_INPUT.format(out_label="--out", output="link.safetensors", in_label="--model",
                                     input="model.safetensors"))


def test_mask_out_over_model_through_a_hard_link(ws):
    os.link(ws / "model.safetensors", ws / "hard.safetensors")
    refused(ws, ["mask", "--model", "model.safetensors", "--real", "data/train.csv", "--synth", "data/synth.csv",
                 "-o", "hard.safetensors", *CPU],
            MSG_SAME_AS_INPUT.format(out_label="--out", output="hard.safetensors", in_label="--model",
                                     input="model.safetensors"))


def test_pretrain_out_over_weights(ws):
    refused(ws, ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--weights", "model.safetensors",
                 "--out", str(ws / "model.safetensors"), *TINY],
            MSG_SAME_AS_INPUT.format(out_label="--out", output=ws / "model.safetensors", in_label="--weights",
                                     input="model.safetensors"))


def test_eval_predictions_over_the_test_manifest(ws):
    refused(ws, ["eval", "--model", "model.safetensors", "--data", "data/test.csv", "--predictions",
                 "data/./test.csv", *CPU],
            MSG_SAME_AS_INPUT.format(out_label="--predictions", output="data/test.csv", in_label="--data",
                                     input="data/test.csv"))


def test_eval_predictions_over_a_symlinked_manifest(ws):
    os.symlink(ws / "data" / "test.csv", ws / "preds.csv")
    refused(ws, ["eval", "--model", "model.safetensors", "--data", "data/test.csv", "--predictions", "preds.csv",
                 *CPU],
            MSG_SAME_AS_INPUT.format(out_label="--predictions", output="preds.csv", in_label="--data",
                                     input="data/test.csv"))


def test_synth_config_over_the_prompt_file(ws):
    (ws / "synth").mkdir()
    shutil.copy(find_prompt_file("smiling_male"), ws / "synth" / "synth.config.yaml")
    refused(ws, ["synth", "--prompts", "synth/synth.config.yaml", "--group", "smiling_male", "--n", "2",
                 "--out", "synth"],
            MSG_SAME_AS_INPUT.format(out_label="the resolved config", output="synth/synth.config.yaml",
                                     in_label="--prompts", input="synth/synth.config.yaml"))


def test_data_celeba_manifest_linked_to_the_attribute_file(ws):
    from test_data_celeba import build_celeba, make_entries

    celeba = build_celeba(ws / "celeba", make_entries())
    (ws / "out").mkdir()
    os.symlink(celeba / "list_eval_partition.txt", ws / "out" / "val.csv")
    refused(ws, ["data", "celeba", "celeba", "--out", "out", "--n", "20"],
            MSG_SAME_AS_INPUT.format(out_label="--out val manifest", output="out/val.csv",
                                     in_label="the partition file", input="celeba/list_eval_partition.txt"))


# ---- fixed formats keep their suffix -----------------------------------------------------------------------


def test_mask_out_must_be_safetensors(ws):
    refused(ws, ["mask", "--model", "model.safetensors", "--real", "data/train.csv", "--synth", "data/synth.csv",
                 "-o", "x.csv", *CPU],
            MSG_BAD_SUFFIX.format(label="--out", suffixes=".safetensors", path="x.csv"))


def test_finetune_out_must_be_safetensors(ws):
    refused(ws, ["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                 "--strategy", "full", "-o", "data/val.csv", *CPU],
            MSG_BAD_SUFFIX.format(label="--out", suffixes=".safetensors", path="data/val.csv"))


def test_pretrain_out_must_be_safetensors(ws):
    refused(ws, ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out", "data/val.csv", *TINY],
            MSG_BAD_OUT.format(out="data/val.csv"))


def test_eval_predictions_must_be_csv_or_jsonl(ws):
    refused(ws, ["eval", "--model", "model.safetensors", "--data", "data/test.csv", "--predictions",
                 "model.safetensors.bak", *CPU],
            MSG_BAD_SUFFIX.format(label="--predictions", suffixes=".csv or .jsonl", path="model.safetensors.bak"))


def test_prompts_out_must_be_yaml(ws):
    refused(ws, ["prompts", "--task", "smiling_male", "--per-group", "1", "--out", "data/test.csv"],
            MSG_BAD_SUFFIX.format(label="--out", suffixes=".yaml or .yml", path="data/test.csv"))


def test_eval_predictions_as_jsonl(ws):
    result = run("eval", "--model", "model.safetensors", "--data", "data/test.csv", "--predictions", "p.jsonl", *CPU)
    assert result.exit_code == 0, result.output
    import json

    rows = [json.loads(line) for line in (ws / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and list(rows[0]) == ["file_name", "target", "protected", "score", "pred"]


# ---- unwritable destinations are found before any work -----------------------------------------------------


def test_pretrain_parent_is_a_file(ws):
    refused(ws, ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out",
                 "data/test.csv/m.safetensors", *TINY],
            MSG_NOT_FOLDER.format(path="data/test.csv/m.safetensors", parent="data/test.csv"))


def test_pretrain_out_is_a_folder(ws):
    """The options' own path check answers this, on the command line (exit 1, docs/exit-codes.md) and in the
    library alike."""
    from aimfair_cli.core.errors import UsageError as OutputError
    from aimfair_cli.core.options import MSG_IS_DIR
    from aimfair_cli.stages.pretrain import PretrainConfig, run_pretrain

    (ws / "m.safetensors").mkdir()
    before = snapshot(ws)
    with pytest.raises(OutputError) as err:
        run_pretrain(PretrainConfig(train=Path("data/train.csv"), val=Path("data/val.csv"), out=Path("m.safetensors"),
                                    epochs=1, image_size=32, batch_size=8, workers=0, device="cpu"))
    assert str(err.value) == MSG_IS_DIR.format(where="--out", value="m.safetensors")
    assert snapshot(ws) == before


def test_data_demo_parent_is_a_file(ws):
    refused(ws, ["data", "demo", "--out", "model.safetensors/demo"],
            MSG_NOT_FOLDER.format(path="model.safetensors/demo", parent="model.safetensors"))


def test_demo_parent_is_a_file(ws):
    out = ws / "model.safetensors" / "demo"
    refused(ws, ["demo", "--quick", "--out", "model.safetensors/demo"],
            MSG_NOT_FOLDER.format(path=out, parent=ws / "model.safetensors"))


def test_synth_out_under_a_file(ws):
    refused(ws, ["synth", "--group", "smiling_male", "--n", "2", "--out", "data/test.csv/synth"],
            MSG_NOT_FOLDER.format(path="data/test.csv/synth", parent="data/test.csv"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_finetune_read_only_folder(ws):
    (ws / "ro").mkdir()
    os.chmod(ws / "ro", 0o555)
    try:
        refused(ws, ["finetune", "--model", "model.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                     "--strategy", "full", "-o", "ro/ft.safetensors", *CPU],
                MSG_CANNOT_WRITE.format(path="ro/ft.safetensors", reason="Permission denied"))
    finally:
        os.chmod(ws / "ro", 0o755)


def _sys_is_read_only() -> bool:
    try:
        Path("/sys/.aimfair-probe").touch()
    except OSError:
        return True
    Path("/sys/.aimfair-probe").unlink()
    return False


@pytest.mark.skipif(not _sys_is_read_only(), reason="needs a folder that even root cannot write (/sys)")
def test_pretrain_unwritable_folder_before_training(ws):
    """/sys refuses new files even to root: the refusal comes before any epoch runs."""
    refused(ws, ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out", "/sys/m.safetensors",
                 *TINY],
            MSG_CANNOT_WRITE.format(path="/sys/m.safetensors", reason=os.strerror(13)))


# ---- a write that fails part-way is one line, and leaves nothing --------------------------------------------


def _limit_file_size():  # runs in the child: files may not grow past 1 MB; EFBIG instead of SIGXFSZ
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_pretrain_save_that_fails_midway_is_one_line(ws):
    """A real failed write: the first large file, the resumable state written after epoch 1 (two 45 MB models),
    cannot grow past the 1 MB file-size limit (EFBIG, as a full disk gives ENOSPC). The error names the file,
    and no partial checkpoint, state or temporary file remains."""
    before = snapshot(ws)
    env = {**os.environ, "AIMFAIR_DEBUG": ""}
    proc = subprocess.run([sys.executable, "-m", "aimfair_cli", "pretrain", "--train", "data/train.csv", "--val",
                           "data/val.csv", "--out", "m.safetensors", "--weights", "none", *TINY], cwd=ws, env=env, capture_output=True,
                          text=True, preexec_fn=_limit_file_size, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == "Error: " + MSG_CANNOT_WRITE.format(path="m.resume.safetensors",
                                                                               reason=os.strerror(27))
    assert snapshot(ws) == before
