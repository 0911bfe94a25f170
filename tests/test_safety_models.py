"""Issue 9 §3, never report a broken model as a result: training that diverges stops without a checkpoint, a
checkpoint holding NaN/inf is refused by every command, and a constant predictor is flagged as degenerate in
eval's JSON and table and in the demo report."""

from __future__ import annotations

import json

import pytest
import torch

from _safety import CPU, make_checkpoint, make_data, make_model, private_copy, raw_checkpoint, refused, run
from aimfair_cli.core.errors import TrainingError
from aimfair_cli.fairness.metrics import DEGENERATE_MARK, MSG_DEGENERATE_NOTE, GroupMetrics, aggregate
from aimfair_cli.training.checkpoint import MSG_NOT_FINITE, state_tensors
from aimfair_cli.training.loop import MSG_LOSS_NOT_FINITE, MSG_WEIGHTS_NOT_FINITE, OptimConfig, fit

TINY = ["--epochs", "1", "--batch-size", "8", *CPU]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    make_data(root)
    make_checkpoint(root / "model.safetensors")
    broken = make_model()
    with torch.no_grad():
        broken.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")
    raw_checkpoint(root / "nan.safetensors", {"format": 1, "image_size": 32}, state_tensors(broken))
    constant = make_model()
    with torch.no_grad():  # logit = +10 for every image: predicts 1 everywhere
        constant.fc.weight.zero_()
        constant.fc.bias.fill_(10.0)
    make_checkpoint(root / "constant.safetensors", constant)
    huge = make_model()
    with torch.no_grad():  # finite weights whose logits overflow: the first loss is inf or nan
        huge.fc.weight.fill_(3e38)
    make_checkpoint(root / "huge.safetensors", huge)
    return root


@pytest.fixture
def ws(base, tmp_path, monkeypatch):
    return private_copy(base, tmp_path, monkeypatch)



# ---- training that diverges --------------------------------------------------------------------------------


def test_finetune_with_exploding_logits_stops_without_a_checkpoint(ws):
    refused(ws, ["finetune", "--model", "huge.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                 "--strategy", "full", "-o", "ft.safetensors", *TINY],
            MSG_LOSS_NOT_FINITE.format(description="finetune full", value="nan", epoch=1, where=", batch 1"))


def test_pretrain_from_exploding_weights_stops_without_a_checkpoint(ws):
    # `--lr` is bounded by the options layer now (1e30 is refused before training), so divergence is provoked by
    # starting from finite weights whose logits overflow.
    refused(ws, ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--out", "p.safetensors",
                 "--weights", "huge.safetensors", "--image-size", "32", "--epochs", "1", "--batch-size", "4", *CPU],
            MSG_LOSS_NOT_FINITE.format(description="pretrain", value="nan", epoch=1, where=", batch 1"))


def test_non_finite_batchnorm_statistics_stop_training():
    """A finite loss with NaN running statistics (BN uses batch statistics while training): the weight check
    after each epoch catches what the loss does not show."""
    model = make_model()
    with torch.no_grad():
        model.bn1.running_var[0] = float("nan")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0.0, 1.0, 0.0, 1.0]), torch.zeros(4),
                torch.arange(4))]
    with pytest.raises(TrainingError) as err:
        fit(model, batches, None, optim=OptimConfig(lr=0.01, epochs=2), device="cpu", description="pretrain")
    assert str(err.value) == MSG_WEIGHTS_NOT_FINITE.format(description="pretrain", epoch=1, name="bn1.running_var")


# ---- checkpoints with NaN/inf are refused by every command ---------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "mask", "finetune", "pretrain"])
def test_every_command_refuses_a_nan_checkpoint(ws, command):
    args = {
        "eval": ["eval", "--model", "nan.safetensors", "--data", "data/test.csv", "--predictions", "p.csv", *CPU],
        "mask": ["mask", "--model", "nan.safetensors", "--real", "data/train.csv", "--synth", "data/synth.csv",
                 "-o", "m.safetensors", *CPU],
        "finetune": ["finetune", "--model", "nan.safetensors", "--synth", "data/synth.csv", "--val", "data/val.csv",
                     "--strategy", "full", "-o", "f.safetensors", *TINY],
        "pretrain": ["pretrain", "--train", "data/train.csv", "--val", "data/val.csv", "--weights", "nan.safetensors",
                     "--out", "p.safetensors", "--image-size", "32", *TINY],
    }[command]
    refused(ws, args, MSG_NOT_FINITE.format(path="nan.safetensors", name="layer1.0.conv1.weight"))


# ---- a constant predictor is flagged -----------------------------------------------------------------------


def test_eval_flags_a_constant_predictor_in_json(ws):
    result = run("eval", "--model", "constant.safetensors", "--data", "data/test.csv", "--json", *CPU)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["degenerate"] is True and out["positive_rate"] == 1.0
    assert out["eo"] == 0.0  # what would read as "perfectly fair" without the flag


def test_eval_flags_a_constant_predictor_in_the_table(ws):
    result = run("eval", "--model", "constant.safetensors", "--data", "data/test.csv", *CPU)
    assert result.exit_code == 0, result.output
    assert DEGENERATE_MARK in result.stdout.split("\n", 3)[3]  # in a table row, not only in a note
    assert result.stdout.rstrip("\n").splitlines()[-1] == MSG_DEGENERATE_NOTE


def test_eval_several_models_aggregate_counts_degenerate_runs(ws):
    result = run("eval", "--model", "constant.safetensors", "--model", "model.safetensors", "--data",
                 "data/test.csv", "--json", *CPU)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    flags = [r["degenerate"] for r in out["runs"]]
    assert flags[0] is True and out["aggregate"]["degenerate_runs"] == sum(flags)


def _metrics(pos_per_cell: dict) -> GroupMetrics:
    """100 images per cell; pos_per_cell[(y, s)] of them predicted 1."""
    return GroupMetrics(cells={(y, s): (100, k if y == 1 else 100 - k) for (y, s), k in pos_per_cell.items()})


def test_degenerate_threshold_is_99_percent():
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert _metrics({c: 100 for c in cells}).degenerate  # all 1
    assert _metrics({c: 0 for c in cells}).degenerate  # all 0
    assert _metrics({(0, 0): 96, (0, 1): 100, (1, 0): 100, (1, 1): 100}).degenerate  # 396/400 = 99 %
    assert not _metrics({(0, 0): 95, (0, 1): 100, (1, 0): 100, (1, 1): 100}).degenerate  # 98.75 %
    assert not _metrics({(0, 0): 20, (0, 1): 30, (1, 0): 80, (1, 1): 70}).degenerate


def test_demo_report_marks_degenerate_strategies(tmp_path):
    from aimfair_cli.experiments.catalogue import STUDIES, RowRuns as StrategyRuns
    from aimfair_cli.experiments.report import summary_rows, write_report

    ok = _metrics({(0, 0): 20, (0, 1): 30, (1, 0): 80, (1, 1): 70})
    const = _metrics({c: 100 for c in [(0, 0), (0, 1), (1, 0), (1, 1)]})
    runs = [StrategyRuns("full", "full fine-tuning", [ok, ok]), StrategyRuns("aimfair", "AIM-Fair", [const, ok])]
    rows = summary_rows(runs)
    assert rows[0]["strategy"] == "full fine-tuning"
    assert rows[1]["strategy"] == f"AIM-Fair {DEGENERATE_MARK} (1/2 seeds)"
    report = write_report(tmp_path, intro="", studies=[STUDIES["main"]], results={"main": runs}, mask_summary=[],
                          seeds=2, blocks=["fc"], commands=["aimfair demo"]).read_text()
    assert f"| AIM-Fair {DEGENERATE_MARK} (1/2 seeds) |" in report and MSG_DEGENERATE_NOTE in report
    assert aggregate([const, ok])["degenerate_runs"] == 1
