"""The comparison methods of `pretrain --method` (aimfair_cli/methods/): each core step on a tiny case computed by
hand, the two invariants (cvar-dro at α = 1 and jtt at λ = 1 give ERM's weights bit for bit on CPU), label use and
model selection recorded in the checkpoint, and a run of every method cut by SIGKILL and resumed."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.methods import METHODS, cvar_dro, dfr, eiil, group_dro, jtt, lff
from aimfair_cli.training.checkpoint import read_meta
from aimfair_cli.training.images import EpochSampler
from aimfair_cli.training.loop import Predictions
from aimfair_cli.training.modelselect import MSG_SELECT_NEEDS_GROUPS, group_labels, selection_score
from aimfair_cli.training.resume import state_path_for

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
BASE = ["--train", "data/train.csv", "--val", "data/val.csv", "--epochs", "2", "--image-size", "16", "--batch-size",
        "12", "--device", "cpu", "--weights", "none", "--workers", "0", "--seed", "3", "--eiil-steps", "50"]


def _write(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def make_biased(root, n_train=60, n_val=24):
    """16 px PNGs: target = hue, protected = brightness; train biased 1:4 towards (y == s), protected known."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_val):
        y = i % 2
        s = (y if (i // 2) % 5 else 1 - y) if i < n_train else (i // 2) % 2
        base = np.array([190, 50, 50] if y else [50, 50, 190], float) + 50 * s
        Image.fromarray(np.clip(base + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)).save(
            root / "img" / f"{i}.png")
        rows.append({"file_name": f"img/{i}.png", "target": y, "protected": s})
    _write(root / "train.csv", rows[:n_train])
    _write(root / "val.csv", rows[n_train:])
    _write(root / "val_nogroups.csv", [{**r, "protected": ""} for r in rows[n_train:]])
    _write(root / "train_nogroups.csv", [{**r, "protected": ""} for r in rows[:n_train]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    make_biased(root / "data")
    return root


def _pretrain(root, monkeypatch, out, *args):
    monkeypatch.chdir(root)
    result = runner.invoke(app, ["pretrain", *BASE, "--out", out, *map(str, args)])
    assert result.exit_code == 0, result.output
    return load_file(str(root / out))


def _same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---- each method's core step, by hand -----------------------------------------------------------------------------

def test_jtt_error_set_and_upsampled_epoch():
    preds = Predictions(scores=np.array([0.9, 0.2, 0.7, 0.4, 0.6], np.float32), targets=np.array([1, 1, 0, 0, 1]),
                        protected=np.full(5, -1), indices=np.arange(5))
    errors = jtt.error_set(preds)  # predicted 1, 0, 1, 0, 1 against 1, 1, 0, 0, 1
    assert errors == [1, 2]
    pool = jtt.upsampled_pool(5, errors, 3)
    assert pool == [0, 1, 2, 3, 4, 1, 1, 2, 2]
    sampler = EpochSampler(5, batch_size=4, seed=0, pool=pool)
    drawn = [i for b in sampler.batches() for i in b]
    assert sorted(drawn) == sorted(pool)  # each error-set image 3 times an epoch, the others once
    assert jtt.upsampled_pool(5, errors, 1) == list(range(5))
    plain = EpochSampler(6, batch_size=4, seed=0)
    assert EpochSampler(6, batch_size=4, seed=0, pool=range(6)).batches() == plain.batches()
    assert [len(b) for b in EpochSampler(5, batch_size=4, seed=0, pool=range(5)).batches()] == [5]  # no 1-image batch


def test_cvar_loss_is_the_mean_of_the_worst_fraction():
    losses = torch.tensor([2.0, 4.0, 1.0, 3.0])
    assert cvar_dro.cvar_loss(losses, 0.5).item() == pytest.approx(3.5)  # (4 + 3) / 2
    assert cvar_dro.cvar_loss(losses, 0.3).item() == pytest.approx((4 + 0.2 * 3) / 1.2)  # boundary image: 0.2 of it
    assert cvar_dro.cvar_loss(losses, 0.25).item() == pytest.approx(4.0)
    assert cvar_dro.cvar_loss(losses, 1.0).item() == pytest.approx(2.5)


def test_lff_gce_ema_and_relative_difficulty():
    gce = lff.gce_loss(torch.tensor([0.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 0.0]), 0.7)
    p = 1 / (1 + math.exp(-2))
    assert gce.tolist() == pytest.approx([(1 - 0.5 ** 0.7) / 0.7, (1 - p ** 0.7) / 0.7, (1 - (1 - p) ** 0.7) / 0.7])
    ema, seen = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    lff.ema_update(ema, seen, torch.tensor([0, 2]), torch.tensor([1.0, 2.0], dtype=torch.float64), 0.7)
    assert ema.tolist() == [1.0, 0.0, 2.0]  # first loss taken as is
    lff.ema_update(ema, seen, torch.tensor([0]), torch.tensor([3.0], dtype=torch.float64), 0.7)
    assert ema[0].item() == pytest.approx(0.7 * 1 + 0.3 * 3)
    assert lff.class_max(ema, torch.tensor([0, 0, 1])).tolist() == pytest.approx([1.6, 2.0])
    w = lff.relative_difficulty(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0]),
                                torch.tensor([1.0, 1.0]))
    assert w.tolist() == pytest.approx([0.5 / 1.5, 1.0])  # hard for the biased model, learnt by the debiased: 1


def test_eiil_puts_opposite_penalty_gradients_in_different_environments():
    # a_i = (σ(z) − y) z: two images with a > 0 (confident and wrong) and two with a < 0 (right)
    logits = torch.tensor([2.0, 3.0, 2.0, -3.0])
    targets = torch.tensor([0.0, 0.0, 1.0, 0.0])
    a = eiil.penalty_gradients(logits, targets)
    assert a[0].item() == pytest.approx(1 / (1 + math.exp(-2)) * 2) and (a[:2] > 0).all() and (a[2:] < 0).all()
    env = eiil.infer_environments(logits, targets, steps=500, lr=0.1, seed=0).tolist()
    assert env[0] == env[1] and env[2] == env[3] and env[0] != env[2]


def test_group_dro_exponentiated_gradient_weights():
    q = torch.full((4,), 0.25, dtype=torch.float64)
    new = group_dro.exponentiated_gradient(q, torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64), 0.01)
    z = math.exp(0.01) + math.exp(0.02) + 2
    assert new.tolist() == pytest.approx([math.exp(0.01) / z, math.exp(0.02) / z, 1 / z, 1 / z])
    obj = group_dro.GroupDROObjective(4, 0.01, group_dro.true_groups)
    obj.start(model=None, optimizer=None, device=torch.device("cpu"))
    logits, targets, protected = torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0, 0, 1])
    loss = obj.loss(None, logits, targets, protected, torch.arange(3))
    # every image loses log 2; groups 0 and 3 are present: q ∝ [e^(0.01 log 2), 1, 1, e^(0.01 log 2)]
    e = math.exp(0.01 * math.log(2))
    assert obj.q.tolist() == pytest.approx([e / (2 * e + 2), 1 / (2 * e + 2), 1 / (2 * e + 2), e / (2 * e + 2)])
    assert loss.item() == pytest.approx(math.log(2) * 2 * e / (2 * e + 2))


def test_selection_scores_and_label_use():
    preds = SimpleNamespace(preds=np.array([1, 1, 0, 0, 1]), targets=np.array([1, 1, 1, 0, 0]),
                            protected=np.array([0, 1, 1, 0, 1]), accuracy=0.6)
    assert selection_score(preds, "overall") == 0.6
    assert selection_score(preds, "worst-class") == pytest.approx(0.5)  # class 1: 2/3, class 0: 1/2
    assert selection_score(preds, "worst-group") == 0.0  # cell (1, 1) has one image, wrong
    assert group_labels("none", "overall") == "none" and group_labels("none", "worst-group") == "val"
    assert group_labels("train", "worst-class") == "train"


def test_dfr_balanced_draws_and_halves_keep_every_cell():
    cells = np.array([0] * 5 + [1] * 2 + [2] * 3 + [3] * 7)
    rng = np.random.default_rng(0)
    draw = dfr.balanced_draw(cells, rng)
    assert len(set(draw)) == len(draw) == 8 and np.bincount(cells[draw]).tolist() == [2, 2, 2, 2]
    first, second = dfr.halves(cells, rng)
    assert sorted([*first, *second]) == list(range(len(cells)))
    assert np.bincount(cells[first]).tolist() == [3, 1, 2, 4] and np.bincount(cells[second]).tolist() == [2, 1, 1, 3]


def test_dfr_l1_logistic_meets_its_optimality_conditions():
    """At the optimum of mean BCE + λ‖w‖₁: the loss gradient is −λ·sign(w) where w ≠ 0, within ±λ where w = 0,
    and 0 for the (unpenalised) intercept; a tiny C keeps every weight at 0 and the intercept at the log-odds."""
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(60, 4)))
    y = ((x[:, 0] - 0.5 * x[:, 1] + torch.tensor(rng.normal(size=60))) > 0.3).double()
    for c in (3.0, 0.3, 0.1):
        w, b = dfr.l1_logistic(x, y, c)
        lam = 1 / (c * 60)
        r = torch.sigmoid(x @ w + b) - y
        grad = x.T @ r / 60
        assert abs(float(r.mean())) < 1e-6
        on = w != 0
        assert torch.allclose(grad[on], -lam * torch.sign(w[on]), atol=1e-6)
        assert bool((grad[~on].abs() <= lam + 1e-9).all())
    assert [int((dfr.l1_logistic(x, y, c)[0] != 0).sum()) for c in (3.0, 0.3, 0.1)] == [4, 2, 1]  # L1: sparser
    w, b = dfr.l1_logistic(x, y, 1e-4)
    assert bool((w == 0).all()) and float(b) == pytest.approx(math.log(float(y.mean()) / (1 - float(y.mean()))))


def test_dfr_folds_the_standardisation_into_the_last_layer():
    rng = np.random.default_rng(2)
    feats = rng.normal(3, 2, size=(40, 5)).astype(np.float32)
    feats[:, 4] = 1.0  # a feature that never varies
    targets = np.array([0, 0, 1, 1] * 10)
    protected = np.array([0, 1, 0, 1, 0] * 8)
    preds = Predictions(scores=np.zeros(40, np.float32), targets=targets, protected=protected,
                        indices=np.arange(40), features=feats)
    model = SimpleNamespace(fc=torch.nn.Linear(5, 1))
    notes = dfr.retrain_last_layer(model, preds, draws=3, seed=0)
    assert notes["dfr_c"] in dfr.C_GRID and set(notes["dfr_half_wst"]) == {str(c) for c in dfr.C_GRID}
    assert notes["dfr_draw_size"] == 4 * 8  # the smallest cell has 8 images
    assert float(model.fc.weight.detach()[0, 4]) == 0.0
    # the same seed gives the same layer; the layer separates the target on its own features
    again = SimpleNamespace(fc=torch.nn.Linear(5, 1))
    dfr.retrain_last_layer(again, preds, draws=3, seed=0)
    assert torch.equal(model.fc.weight, again.fc.weight) and torch.equal(model.fc.bias, again.fc.bias)
    mean, sd = feats.mean(0), feats.std(0, ddof=1)
    sd[sd == 0] = 1
    w = model.fc.weight.detach().double().numpy()[0] * sd  # undo the fold: the regression's own weights
    b = float(model.fc.bias.detach()) + float((w * mean / sd).sum())
    logits = torch.nn.functional.linear(torch.tensor(feats), model.fc.weight, model.fc.bias).detach().numpy()[:, 0]
    assert np.allclose(logits, ((feats - mean) / sd) @ w + b, atol=1e-4)


# ---- the invariants and what a checkpoint records -----------------------------------------------------------------

def test_cvar_alpha_1_and_jtt_lambda_1_give_erm_weights_bit_for_bit(folder, monkeypatch):
    erm = _pretrain(folder, monkeypatch, "erm.safetensors")
    assert _same(erm, _pretrain(folder, monkeypatch, "cvar1.safetensors", "--method", "cvar-dro", "--cvar-alpha", 1))
    assert _same(erm, _pretrain(folder, monkeypatch, "jtt1.safetensors", "--method", "jtt", "--jtt-upweight", 1))
    # and the defaults do train something else
    assert not _same(erm, _pretrain(folder, monkeypatch, "cvar.safetensors", "--method", "cvar-dro"))
    meta = read_meta(folder / "jtt1.safetensors")
    assert (meta["method"], meta["group_labels"], meta["select"]) == ("jtt", "none", "overall")
    assert meta["config"]["jtt_upweight"] == 1 and meta["config"]["jtt_epochs"] == jtt.EPOCHS
    assert "jtt_error_set" in meta["method_notes"]


def test_oracle_and_worst_group_selection_are_marked(folder, monkeypatch):
    _pretrain(folder, monkeypatch, "oracle.safetensors", "--method", "group-dro", "--select", "worst-class")
    meta = read_meta(folder / "oracle.safetensors")
    assert (meta["method"], meta["group_labels"], meta["select"]) == ("group-dro", "train", "worst-class")
    assert meta["config"]["dro_step"] == group_dro.STEP
    _pretrain(folder, monkeypatch, "wg.safetensors", "--select", "worst-group")
    assert read_meta(folder / "wg.safetensors")["group_labels"] == "val"


def test_dfr_retrains_only_the_last_layer_of_erm(folder, monkeypatch):
    erm = _pretrain(folder, monkeypatch, "erm-d.safetensors")
    got = _pretrain(folder, monkeypatch, "dfr.safetensors", "--method", "dfr", "--dfr-retrains", 2)
    assert list(got) == list(erm)
    assert all(torch.equal(erm[k], got[k]) for k in erm if not k.startswith("fc."))
    assert not torch.equal(erm["fc.weight"], got["fc.weight"])
    meta = read_meta(folder / "dfr.safetensors")
    assert (meta["method"], meta["group_labels"], meta["select"]) == ("dfr", "val", "overall")
    assert meta["config"]["dfr_retrains"] == 2 and meta["method_notes"]["dfr_c"] in dfr.C_GRID


def _error(result):
    assert result.exit_code == 1, result.output
    return result.output.strip().splitlines()[-1]


def test_label_needs_are_one_line_errors(folder, monkeypatch):
    monkeypatch.chdir(folder)
    r = runner.invoke(app, ["pretrain", *BASE, "--val", "data/val_nogroups.csv", "--select", "worst-group",
                            "--out", "x.safetensors"])
    assert _error(r) == "Error: " + MSG_SELECT_NEEDS_GROUPS.format(path="data/val_nogroups.csv")
    r = runner.invoke(app, ["pretrain", *BASE, "--train", "data/train_nogroups.csv", "--method", "group-dro",
                            "--out", "x.safetensors"])
    assert _error(r) == "Error: " + group_dro.MSG_NEEDS_GROUPS.format(path="data/train_nogroups.csv", n=60, total=60)
    r = runner.invoke(app, ["pretrain", *BASE, "--val", "data/val_nogroups.csv", "--method", "dfr",
                            "--out", "x.safetensors"])
    assert _error(r) == "Error: " + dfr.MSG_NEEDS_GROUPS.format(path="data/val_nogroups.csv", n=24, total=24)
    rows = list(csv.DictReader(open(folder / "data" / "val.csv")))
    thin = [r for r in rows if (r["target"], r["protected"]) != ("1", "0")] + [
        next(r for r in rows if (r["target"], r["protected"]) == ("1", "0"))]
    _write(folder / "data" / "val_thin.csv", thin)
    r = runner.invoke(app, ["pretrain", *BASE, "--val", "data/val_thin.csv", "--method", "dfr", "--out", "x.safetensors"])
    assert _error(r) == "Error: " + dfr.MSG_NEEDS_CELLS.format(path="data/val_thin.csv", n=1, y=1, s=0)
    r = runner.invoke(app, ["pretrain", *BASE, "--method", "maple", "--out", "x.safetensors"])
    assert _error(r) == "Error: --method: must be one of erm, jtt, cvar-dro, lff, eiil, group-dro, dfr, got 'maple'"
    assert not (folder / "x.safetensors").exists()


def test_every_method_is_in_the_help():
    r = runner.invoke(app, ["pretrain", "--help"], env={"COLUMNS": "200"})
    for name in METHODS:
        assert name in r.output


# ---- a real kill and --resume, every method -----------------------------------------------------------------------

def _popen(root, args):
    env = {**os.environ, "AIMFAIR_DEBUG": "", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "aimfair_cli", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(proc, path):
    deadline = time.monotonic() + 600
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("method,cut_in", [("jtt", "identify"), ("jtt", None), ("cvar-dro", None), ("lff", None),
                                           ("eiil", "reference"), ("group-dro", None),
                                           ("dfr", None)])
def test_killed_and_resumed_ends_bit_identical(folder, method, cut_in):
    """Killed after the first epoch of the final training (or of the method's first stage), then --resume."""
    args = ["pretrain", *BASE, "--epochs", "3", "--jtt-epochs", "2", "--eiil-ref-epochs", "2", "--method", method]
    whole, cut = f"whole-{method}.safetensors", f"cut-{method}-{cut_in}.safetensors"
    proc = _popen(folder, [*args, "--out", whole])
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    state = state_path_for(folder / cut)
    if cut_in is not None:
        state = state.with_name(state.name.replace(".resume.", f".{cut_in}.resume."))
    _kill_when(_popen(folder, [*args, "--out", cut]), state)
    assert not (folder / cut).exists(), "the run ended before it could be killed"
    proc = _popen(folder, [*args, "--out", cut, "--resume"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert _same(load_file(str(folder / whole)), load_file(str(folder / cut)))
    assert not list(folder.glob(f"cut-{method}-{cut_in}*.resume.safetensors"))  # every stage's state removed


# ---- the studies: sota and sample-ratio ---------------------------------------------------------------------------

def test_sota_and_sample_ratio_plan_every_method_once_per_ratio(tmp_path):
    from aimfair_cli.experiments.catalogue import METHOD_LABELS, STUDIES, Sizes, Sources, run_seed, trainings
    from aimfair_cli.experiments.pipeline import Pipeline

    assert set(METHOD_LABELS) == set(METHODS) - {"erm"}  # the studies read the registry's methods
    sizes = Sizes(image_size=16, batch_size=8, crop_scale=0.6, pretrain_epochs=1, pretrain_lr=0.02,
                  pretrain_milestones=(), finetune_epochs=1, finetune_lr=0.01, topk="55", n_train=100, n_synth=100,
                  blocks=("fc",))
    src = Sources(train=tmp_path / "train.csv", val=tmp_path / "val.csv", test=tmp_path / "test.csv",
                  prompts=tmp_path / "p.yaml", synth=tmp_path / "synth.jsonl")
    plan = Pipeline(tmp_path, plan=True)
    results = {}
    run_seed(plan, [STUDIES["sota"], STUDIES["sample-ratio"]], src, sizes, tmp_path / "seed0", 0, results)
    lines = plan.commands()
    # sota: ERM and 6 methods; sample-ratio: the same at each of 3 ratios; one pretraining each, none twice
    assert trainings(plan) == {"pretrain": 7 * 4, "finetune": 4}
    for m in METHOD_LABELS:
        assert sum(f"--method {m}" in line for line in lines) == 4
    subsets = [line for line in lines if "--kind subsample" in line]
    assert len(subsets) == 3 and all(f"--n {n}" in " ".join(subsets) for n in (50, 25, 10))
    assert [r.name for r in results["sample-ratio"]][:8] == [
        "pretrained@50", "jtt@50", "cvar-dro@50", "lff@50", "eiil@50", "group-dro@50", "dfr@50", "aimfair@50"]


def test_rows_pair_with_aimfair_at_their_own_ratio():
    from aimfair_cli.experiments.catalogue import STUDIES, RowRuns
    from aimfair_cli.experiments.report import distinguishable_text, paired_vs_reference, study_json, summary_rows
    from aimfair_cli.fairness.metrics import GroupMetrics

    def runs(name, wst_cells, labels="none"):
        cells = {(0, 0): (10, wst_cells), (0, 1): (10, 9), (1, 0): (10, 9), (1, 1): (10, 8)}
        r = RowRuns(name, name, [GroupMetrics(cells=cells)], group_labels=labels, method=name.split("@")[0])
        return r

    rows = [runs("jtt@50", 5), runs("aimfair@50", 7), runs("jtt@10", 2), runs("aimfair@10", 8),
            runs("group-dro@10", 9, "train")]
    paired = paired_vs_reference(rows, "aimfair")
    assert set(paired) == {"jtt@50", "jtt@10", "group-dro@10"}
    assert paired["jtt@50"]["wst"]["mean_diff"] == pytest.approx(0.5 - 0.7)  # with aimfair@50, not @10
    assert paired["jtt@10"]["wst"]["mean_diff"] == pytest.approx(0.2 - 0.8)
    assert distinguishable_text(rows[:1], "aimfair") == "No AIM-Fair row: nothing is paired."
    table = summary_rows(rows)
    assert table[4]["group labels"] == "train" and table[0]["select"] == "overall"
    entry = study_json([STUDIES["sample-ratio"]], {"sample-ratio": rows})["studies"]["sample-ratio"]["rows"][0]
    assert (entry["method"], entry["group_labels"], entry["select"]) == ("jtt", "none", "overall")
    assert entry["paired_vs_aimfair"]["wst"]["n"] == 1


def test_compose_subsample_draws_n_real_images(folder, monkeypatch):
    monkeypatch.chdir(folder)
    r = runner.invoke(app, ["data", "compose", "--kind", "subsample", "--real", "data/train.csv", "--n", "15",
                            "--seed", "2", "--out", "sets/sub.csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(folder / "sets" / "sub.csv")))
    assert len(rows) == 15 and len({row["file_name"] for row in rows}) == 15
    assert all((folder / "sets" / row["file_name"]).is_file() for row in rows)
    r = runner.invoke(app, ["data", "compose", "--kind", "subsample", "--real", "data/train.csv", "--n", "61",
                            "--out", "sets/sub2.csv"])
    assert _error(r) == "Error: --kind subsample: --n 61 is more than the 60 images of data/train.csv"


def test_finetune_select_is_recorded_with_its_label_use(folder, monkeypatch):
    _pretrain(folder, monkeypatch, "base-oracle.safetensors", "--method", "group-dro", "--epochs", "1")
    args = ["finetune", "--model", "base-oracle.safetensors", "--strategy", "full", "--synth", "data/train.csv",
            "--val", "data/val.csv", "--epochs", "1", "--batch-size", "12", "--device", "cpu", "--workers", "0"]
    r = runner.invoke(app, [*args, "--select", "worst-group", "--out", "ft.safetensors"])
    assert r.exit_code == 0, r.output
    meta = read_meta(folder / "ft.safetensors")
    assert (meta["method"], meta["base_method"], meta["select"]) == ("finetune full", "group-dro", "worst-group")
    assert meta["group_labels"] == "train"  # the pretrained oracle's use is inherited
    r = runner.invoke(app, [*args, "--val", "data/val_nogroups.csv", "--select", "worst-group", "--out", "ft2.safetensors"])
    assert _error(r) == "Error: " + MSG_SELECT_NEEDS_GROUPS.format(path="data/val_nogroups.csv")
