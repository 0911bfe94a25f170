"""`aimfair mask` and `aimfair finetune` as users run them, in a tiny run folder (32 px, a few dozen images)."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.masking.maskfile import Mask, load_mask, save_mask

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
FAST = ["--workers", "0", "--device", "cpu", "--batch-size", "16"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """data demo (64 train images) + 32 synthetic images per group + a 1-epoch pretrained model."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for args in (
            ["data", "demo", "--out", "data", "--n-train", 64, "--n-val", 32, "--n-test", 32, "--size", 32],
            ["synth", "--task", "smiling_male", "--group", "all", "--n", 32, "--size", 32],
            ["pretrain", "--epochs", 1, "--image-size", 32, "--weights", "none", *FAST],
        ):
            result = run(*args)
            assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def in_run(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def masked(run_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run_dir)
        result = run("mask", "--topk", 40, "--json", *FAST)
        assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_mask_short_form_writes_mask_and_scores(masked, in_run):
    assert masked["total"] == 62
    assert masked["k"] == 40
    assert masked["n_selected"] == len(masked["selected"]) <= 40
    # at least 2k - total tensors are in both top-k lists
    assert masked["n_selected"] >= 2 * 40 - 62
    assert masked["sizes"] == {"real": 64, "synthetic_biased": 64, "synthetic_balanced": 64}
    mask = load_mask(in_run / "mask.safetensors")
    assert mask.selected == masked["selected"]
    assert len(mask.meta["scores"]) == 62 and mask.meta["bias_ratio"] == "1:9"
    # K1 ∩ K2 recomputed from the saved scores gives the saved selection
    s = mask.meta["scores"]
    names = list(s)
    k1 = set(sorted(names, key=lambda n: (s[n]["delta1"], names.index(n)))[:40])
    k2 = set(sorted(names, key=lambda n: (-s[n]["delta2"], names.index(n)))[:40])
    assert mask.selected == [n for n in names if n in k1 and n in k2]
    assert (in_run / "mask.config.yaml").is_file()


def test_mask_table_and_percent_topk(in_run, tmp_path):
    result = run("mask", "--topk", "88%", "--out", tmp_path / "m.safetensors", *FAST)
    assert result.exit_code == 0, result.output
    assert "tensors selected (k=55)" in result.stdout
    assert "layer4" in result.stdout and "bn" in result.stdout


def test_mask_auto_bias_ratio_prints_the_estimate(in_run, tmp_path):
    result = run("mask", "--bias-ratio", "auto", "--out", tmp_path / "m.safetensors", *FAST)
    assert result.exit_code == 0, result.output
    assert "bias estimate: error rate" in result.stdout
    assert load_mask(tmp_path / "m.safetensors").meta["bias_ratio_source"] == "auto"


def test_mask_auto_shrinks_the_biased_set_to_what_the_pool_holds(in_run, tmp_path, monkeypatch):
    """An estimated ratio steeper than the pool was made for keeps the ratio with fewer biased images, where a
    given ratio is refused (32 synthetic images per cell; 80 at 1:9 need 36 in each majority cell)."""
    from fractions import Fraction

    from aimfair_cli.stages import mask as mask_stage

    estimate = mask_stage.BiasEstimate(error_rate=0.1, bias=Fraction(1, 9), minority={0: 0, 1: 1},
                                       synthetic_group_accuracy={})
    monkeypatch.setattr(mask_stage, "_estimate_bias", lambda *a, **k: estimate)
    result = run("mask", "--bias-ratio", "1:9", "--n-synth", 80, "--out", tmp_path / "given.safetensors", *FAST)
    assert result.exit_code == 1 and "the biased set needs 36" in result.stderr
    result = run("mask", "--bias-ratio", "auto", "--n-synth", 80, "--out", tmp_path / "m.safetensors", *FAST)
    assert result.exit_code == 0, result.output
    assert "the synthetic-biased set has 70 images instead of 80" in result.stderr
    meta = load_mask(tmp_path / "m.safetensors").meta
    assert meta["sizes"]["synthetic_biased"] == 70 and meta["sizes"]["synthetic_balanced"] == 80
    assert meta["bias_ratio"] == "1:9"


def test_mask_errors(in_run, tmp_path):
    out = tmp_path / "m.safetensors"
    result = run("mask", "--topk", "0", "--out", out, *FAST)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --topk must be a positive tensor count or a percentage like 88%, got '0'"
    )
    result = run("mask", "--n-synth", 1000, "--out", out, *FAST)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: synthetic group not_smiling_female (target=0, protected=0) has 32 images; the biased set needs 50"
        " (generate more with `aimfair synth` or lower --n-synth)"
    )
    assert not out.exists()


def _tensors(path):
    return load_file(str(path))


def test_finetune_updates_only_masked_tensors_and_bn_update(masked, in_run, tmp_path):
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--mask", "mask.safetensors", "--epochs", 1, "--lr", 0.1, "--out", out, "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trainable"] == masked["n_selected"]
    before, after = _tensors(in_run / "pretrain.safetensors"), _tensors(out)
    params = [n for n in before if not n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    selected = set(masked["selected"])
    for name in params:
        if name not in selected:
            assert torch.equal(before[name], after[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in selected)
    # --bn update (default): running statistics move even in BN layers outside the mask
    frozen_bn = [n for n in params if n.endswith("bn1.weight") and n not in selected]
    stats = [n.replace("weight", "running_mean") for n in frozen_bn] or ["bn1.running_mean"]
    assert any(not torch.equal(before[s], after[s]) for s in stats)


def test_finetune_bn_freeze_keeps_frozen_statistics(masked, in_run, tmp_path):
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--strategy", "update:fc", "--bn", "freeze", "--epochs", 1, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    before, after = _tensors(in_run / "pretrain.safetensors"), _tensors(out)
    for name in before:
        if not name.startswith("fc."):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


@pytest.mark.parametrize("strategy, changed", [
    ("linear", lambda n: n.startswith("fc.")),
    ("freeze:layer1", lambda n: not n.startswith("layer1.")),
])
def test_strategies_choose_tensors(in_run, tmp_path, strategy, changed):
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--strategy", strategy, "--epochs", 1, "--lr", 0.1, "--out", out, "--json", *FAST)
    assert result.exit_code == 0, result.output
    before, after = _tensors(in_run / "pretrain.safetensors"), _tensors(out)
    for name, p in before.items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        if not changed(name):
            assert torch.equal(p, after[name]), name


def test_random_strategy_records_its_tensors(in_run, tmp_path):
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--strategy", "random:0.5", "--epochs", 1, "--out", out, "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trainable"] == 31
    from aimfair_cli.training.checkpoint import read_meta

    assert len(read_meta(out)["finetune"]["trainable"]) == 31


def test_finetune_errors(in_run, tmp_path):
    out = tmp_path / "ft.safetensors"
    cases = [
        (["--strategy", "half"], "Error: unknown strategy 'half' (use mask, full, linear, random:RATIO, update:BLOCK, "
         "freeze:BLOCK, opposite; blocks: stem, layer1, layer2, layer3, layer4, fc)"),
        (["--mask", "mask.safetensors", "--strategy", "full"],
         "Error: give either --mask or --strategy, not both (only a strategy that reads the mask, such as opposite, "
         "takes --mask)"),
        (["--strategy", "opposite"],
         "Error: --strategy opposite needs --mask FILE: it reads the mask's selection or its Δ1/Δ2 scores"),
        ([], "Error: give --mask FILE (AIM-Fair) or --strategy"),
        (["--mask", tmp_path / "none.safetensors"], f"Error: mask not found: {tmp_path / 'none.safetensors'}"),
    ]
    for extra, message in cases:
        result = run("finetune", *extra, "--out", out, *FAST)
        assert result.exit_code == 1, (extra, result.output)
        assert result.stderr.strip().splitlines()[-1] == message
    assert not out.exists()


def test_mask_for_another_model_is_refused(masked, in_run, tmp_path):
    mask = load_mask(in_run / "mask.safetensors")
    shapes = dict(mask.shapes)
    shapes["layer2.0.conv1.weight"] = [64, 64, 3, 3]
    wrong = save_mask(tmp_path / "wrong.safetensors", Mask(selected=mask.selected, shapes=shapes, meta=mask.meta))
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--mask", wrong, "--out", out, *FAST)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: mask does not fit the model: tensor 'layer2.0.conv1.weight' has shape [128, 64, 3, 3] in the model"
        " but [64, 64, 3, 3] in the mask"
    )
    assert not out.exists()


def _opposite_by_hand(scores, k):
    names = list(scores)
    most_domain = set(sorted(names, key=lambda n: (-scores[n]["delta1"], names.index(n)))[:k])
    least_bias = set(sorted(names, key=lambda n: (scores[n]["delta2"], names.index(n)))[:k])
    return [n for n in names if n in most_domain and n in least_bias]


def test_opposite_strategy_updates_the_opposite_selection(masked, in_run, tmp_path):
    mask = load_mask(in_run / "mask.safetensors")
    expected = _opposite_by_hand(mask.meta["scores"], 40)
    assert expected and expected != mask.selected
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--mask", "mask.safetensors", "--strategy", "opposite", "--epochs", 1, "--lr", 0.1,
                 "--out", out, "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["strategy"] == "opposite"
    from aimfair_cli.training.checkpoint import read_meta

    assert read_meta(out)["finetune"]["trainable"] == expected
    before, after = _tensors(in_run / "pretrain.safetensors"), _tensors(out)
    for name in mask.shapes:
        if name not in expected:
            assert torch.equal(before[name], after[name]), name


def test_max_samples_leaves_the_finetuning_set_alone(masked, in_run, tmp_path):
    capped = tmp_path / "capped.safetensors"
    result = run("mask", "--max-samples", 8, "--topk", 40, "--out", capped, "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sizes"] == {"real": 8, "synthetic_biased": 8, "synthetic_balanced": 8}
    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--mask", capped, "--epochs", 1, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    from aimfair_cli.training.checkpoint import read_meta

    assert read_meta(out)["finetune"]["n_synth"] == 64  # the uncapped balanced set (N_R = 64), not 8


def test_finetune_help_shows_the_released_lr():
    result = runner.invoke(app, ["finetune", "--help"], terminal_width=400)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "runner.sh uses 0.06" in text and "0.4, 0.5, 0.6" in text and "[default: 0.06]" in text
    from aimfair_cli.stages.finetune import FinetuneConfig

    assert FinetuneConfig(model=None, synth=None, val=None, out=None).lr == 0.06


def test_mask_prints_cutoffs_and_draws_the_selection(in_run, tmp_path):
    plot = tmp_path / "sel.png"
    result = run("mask", "--topk", 40, "--out", tmp_path / "m.safetensors", "--plot", plot, *FAST)
    assert result.exit_code == 0, result.output
    assert "K1: Δ1 ≤ " in result.stdout and "K2: Δ2 ≥ " in result.stdout and f"plot -> {plot}" in result.stdout
    from PIL import Image

    with Image.open(plot) as img:
        assert img.size == (940, 560)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_selection_does_not_depend_on_the_order_of_rows(in_run, tmp_path):
    """The same synthetic images, cell-sorted and row-shuffled, give the same sets, batches and selection."""
    from aimfair_cli.stages.mask import MaskConfig, run_mask

    rows = [json.loads(line) for line in (in_run / "synth" / "metadata.jsonl").read_text().splitlines()]
    by_cell = sorted(rows, key=lambda r: (r["target"], r["protected"], r["file_name"]))
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    assert shuffled != by_cell
    results = []
    for name, order in (("by_cell", by_cell), ("shuffled", shuffled)):
        synth = _write_jsonl(in_run / "synth" / f"metadata-{name}.jsonl", order)  # beside the images
        cfg = MaskConfig(model=in_run / "pretrain.safetensors", real=in_run / "data" / "train.csv", synth=synth,
                         out=tmp_path / f"{name}.safetensors", topk="40", batch_size=16, workers=0, device="cpu")
        results.append(run_mask(cfg))
    a, b = results
    assert a.mask.selected == b.mask.selected
    assert a.scores == b.scores  # the very same batches and crops: identical numbers, not just the same ranking


@pytest.mark.parametrize("cache", [True, False])
def test_gradient_batches_mix_the_cells(in_run, cache):
    from fractions import Fraction

    import torch

    from aimfair_cli.core.manifest import Manifest, read_manifest
    from aimfair_cli.masking.synthsets import build_synthetic_sets
    from aimfair_cli.stages.mask import MaskConfig, gradient_loader

    synth = read_manifest(in_run / "synth" / "metadata.jsonl")
    sets = build_synthetic_sets(synth.rows, n=64, bias=Fraction(1, 9), seed=0)
    cfg = MaskConfig(model=None, real=None, synth=None, out=None, batch_size=16, workers=0, cache=cache)
    balanced = Manifest(path=synth.path, rows=sets.balanced, columns=synth.columns)
    loader = gradient_loader(balanced, label="synthetic_balanced", image_size=32, mean=[0.5] * 3, std=[0.5] * 3,
                             cfg=cfg, device=torch.device("cpu"))
    seen = []
    for images, targets, protected, idx in loader:
        assert images.shape[1:] == (3, 32, 32)
        cells = set(zip(targets.int().tolist(), protected.tolist()))
        assert len(cells) >= 3, cells  # a cell-sorted read would give one cell per batch
        seen += idx.tolist()
    assert sorted(seen) == list(range(64))  # every image exactly once


def test_outputs_record_provenance_and_history(masked, in_run, tmp_path):
    from aimfair_cli.core.provenance import sha256_file
    from aimfair_cli.training.checkpoint import read_meta
    from aimfair_cli.training.loop import HISTORY_COLUMNS

    mask = load_mask("mask.safetensors")
    prov = mask.meta["provenance"]
    assert {"aimfair", "torch", "torchvision", "python", "device", "git_commit", "inputs"} <= set(prov)
    assert prov["device"] == "cpu" and prov["torch"] == str(torch.__version__)
    assert prov["inputs"]["--model"]["sha256"] == sha256_file(in_run / "pretrain.safetensors")
    assert set(prov["inputs"]) == {"--model", "--real", "--synth"}

    out = tmp_path / "ft.safetensors"
    result = run("finetune", "--mask", "mask.safetensors", "--epochs", 2, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    meta = read_meta(out)
    assert meta["provenance"]["inputs"]["--mask"]["sha256"] == sha256_file(in_run / "mask.safetensors")
    assert "--train" in read_meta(in_run / "pretrain.safetensors")["provenance"]["inputs"]
    lines = (tmp_path / "ft.history.csv").read_text().splitlines()
    assert tuple(lines[0].split(",")) == HISTORY_COLUMNS and len(lines) == 3
    row = dict(zip(HISTORY_COLUMNS, lines[2].split(",")))
    assert row["epoch"] == "2" and float(row["img_s"]) > 0 and float(row["seconds"]) > 0
    assert 0 <= float(row["val_wst"]) <= float(row["val_acc"]) <= 1  # the val set has group labels


def test_finetune_refuses_a_mask_computed_on_another_checkpoint(masked, in_run, tmp_path):
    import shutil

    other = tmp_path / "other.safetensors"
    shutil.copy(in_run / "pretrain.safetensors", other)
    same = run("finetune", "--mask", "mask.safetensors", "--model", other, "--epochs", 1,
               "--out", tmp_path / "a.safetensors", *FAST)
    assert same.exit_code == 0, same.output  # a byte-identical copy is the same model
    # same weights and shapes, other bytes (metadata): not the file the mask's gradients were computed on
    from aimfair_cli.training.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(other)
    save_checkpoint(other, model, {**meta, "note": "retrained"})
    result = run("finetune", "--mask", "mask.safetensors", "--model", other, "--epochs", 1,
                 "--out", tmp_path / "b.safetensors", *FAST)
    assert result.exit_code == 1
    assert "was computed on a model with SHA-256" in result.stderr and "compute the mask on the model" in result.stderr
    assert not (tmp_path / "b.safetensors").exists()


def test_from_mask_selects_what_a_full_run_at_that_k_selects(masked, in_run, tmp_path):
    """`--from-mask` re-selects from the stored scores without gradient passes: the same tensors as a full run at
    the new k (the passes are seeded per set), and refusals for another model or a contradicting option."""
    from aimfair_cli.stages.mask import clear_passes

    fresh, quick = tmp_path / "fresh.safetensors", tmp_path / "quick.safetensors"
    clear_passes()  # a full run: its own three gradient passes, not those of the masks before it
    assert run("mask", "--topk", 50, "--out", fresh, *FAST).exit_code == 0
    # --real that does not exist: not read in this mode
    result = run("mask", "--topk", 50, "--from-mask", "mask.safetensors", "--real", tmp_path / "none.csv",
                 "--out", quick, *FAST)
    assert result.exit_code == 0, result.output
    a, b = load_mask(fresh), load_mask(quick)
    assert b.selected == a.selected and b.meta["k"] == 50 and b.meta["scores"] == a.meta["scores"]
    assert b.selected != load_mask(in_run / "mask.safetensors").selected  # k=40 there

    conflict = run("mask", "--from-mask", "mask.safetensors", "--score", "cosine", "--out", tmp_path / "c.safetensors",
                   *FAST)
    assert conflict.exit_code == 1 and not (tmp_path / "c.safetensors").exists()
    assert conflict.stderr.strip().splitlines()[-1] == (
        "Error: --score cosine differs from the absdiff of --from-mask mask.safetensors; drop --score or make a new mask")

    other = tmp_path / "other.safetensors"
    assert run("pretrain", "--epochs", 1, "--image-size", 32, "--weights", "none", "--seed", 5, "--out", other,
               *FAST).exit_code == 0
    refused = run("mask", "--model", other, "--from-mask", "mask.safetensors", "--out", tmp_path / "o.safetensors",
                  *FAST)
    assert refused.exit_code == 1 and not (tmp_path / "o.safetensors").exists()
    assert ("--from-mask mask.safetensors was computed on a model with SHA-256" in refused.stderr
            and "compute the mask on the model you select for" in refused.stderr)


def test_masks_reuse_the_gradient_passes_they_share(in_run, tmp_path, caplog):
    """A second mask of the same model at another bias ratio runs only its synthetic-biased pass, and scores
    exactly what a mask computed from scratch does; a changed image file is not taken for the same set."""
    import logging
    import os

    from aimfair_cli.core.manifest import read_manifest
    from aimfair_cli.stages.mask import MaskConfig, clear_passes, run_mask

    def mask(ratio, name):
        cfg = MaskConfig(model=in_run / "pretrain.safetensors", real=in_run / "data" / "train.csv",
                         synth=in_run / "synth" / "metadata.jsonl", out=tmp_path / f"{name}.safetensors", topk="40",
                         bias_ratio=ratio, batch_size=16, workers=0, device="cpu")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="aimfair_cli.stages.mask"):
            result = run_mask(cfg)
        return result, {m.split(":")[1].strip() for m in caplog.messages if m.endswith("reused")}

    clear_passes()
    _, reused = mask("1:9", "a")
    assert reused == set()
    shared, reused = mask("2:8", "b")
    assert reused == {"real", "synthetic balanced"}
    clear_passes()
    scratch, reused = mask("2:8", "c")
    assert reused == set()
    assert shared.scores == scratch.scores and shared.mask.selected == scratch.mask.selected

    # touching one real image (a new modification time) makes the real pass run again
    real = read_manifest(in_run / "data" / "train.csv")
    image = real.image_path(real.rows[0])
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        _, reused = mask("2:8", "d")
    finally:
        os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert reused == {"synthetic biased", "synthetic balanced"}
