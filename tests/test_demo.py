"""`aimfair demo --quick`: the whole pipeline on the offline benchmark, as the README's main job runs it."""

import json

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
STRATEGIES = ["pretrained", "aimfair", "full", "linear", "random", "opposite", "freeze"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.mark.slow
def test_quick_demo_reports_every_strategy(demo_run):
    out, summary = demo_run
    assert list(summary["strategies"]) == STRATEGIES
    for name, agg in summary["strategies"].items():
        for key in ("acc", "wst_mean_of_runs", "eo", "eo_worst", "std"):
            assert 0.0 <= agg[key]["mean"] <= 1.0, (name, key)
        assert sum(c["n"] for c in agg["cells"].values()) > 0
    for name in ("report.md", "metrics.png", "cells.png", "commands.sh", "demo.config.yaml",
                 "data/train.csv", "synth/metadata.jsonl", "seed0/pretrain.safetensors", "seed0/mask.safetensors",
                 "seed0/aimfair.safetensors", "seed0/full.safetensors", "seed0/linear.safetensors",
                 "seed0/random.safetensors", "seed0/opposite.safetensors", "seed0/freeze-fc.safetensors",
                 "selection-seed0.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "| AIM-Fair (mask k=55) |" in report and "![metrics per strategy](metrics.png)" in report
    # one seed: paired rows against full fine-tuning for every other strategy, without an interval
    assert list(summary["paired_vs_full"]) == [n for n in STRATEGIES if n != "full"]
    for name, comparison in summary["paired_vs_full"].items():
        assert list(comparison) == ["acc", "wst", "eo", "std"]
        for key, entry in comparison.items():
            assert entry["n"] == 1 and entry["ci95"] is None, (name, key)
            diff = summary["strategies"][name][key if key != "wst" else "wst_mean_of_runs"]["mean"] \
                - summary["strategies"]["full"][key if key != "wst" else "wst_mean_of_runs"]["mean"]
            assert entry["mean_diff"] == pytest.approx(diff)
    assert "## Paired against full fine-tuning" in report
    assert "With one seed there is no interval" in report
    paired_row = next(line for line in report.splitlines() if line.startswith("| linear probing (fc) | ") and "—" in line)
    assert paired_row.count("—") == 4 and "/1" in paired_row
    assert "| opposite criterion, same k (control) |" in report and "![selection, seed 0](selection-seed0.png)" in report
    assert "seed 0: " in report and "per block stem " in report
    from PIL import Image

    for figure in ("metrics.png", "cells.png", "curves.png", "samples.png"):  # the report's figures, non-empty
        assert f"]({figure})" in report, figure
        with Image.open(out / figure) as im:
            assert im.width > 200 and im.height > 200 and sum(1 for c in im.convert("L").histogram() if c) > 10, figure
    assert "| strategy | not smiling · female | not smiling · male | smiling · female | smiling · male |" in report
    with Image.open(out / "samples.png") as im:  # 4 groups × (real, synthetic) rows of 72 px
        assert im.height == 8 * (72 + 4) + 4
    assert (out / "seed0" / "aimfair.history.csv").read_text().startswith("epoch,lr,loss,acc,val_acc,val_wst")
    commands = (out / "commands.sh").read_text()
    assert "aimfair mask --model seed0/pretrain.safetensors" in commands
    assert "aimfair finetune --model seed0/pretrain.safetensors" in commands and "--mask seed0/mask.safetensors" in commands
    assert "--mask seed0/mask.safetensors --strategy opposite" in commands
    assert "aimfair pretrain --train data/train.csv --val data/val.csv --out seed0/pretrain.safetensors --weights none" in commands


@pytest.mark.slow
def test_rerun_reuses_finished_steps(demo_run):
    out, summary = demo_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("seed0/*.safetensors")}
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed0/*.safetensors")} == before
    assert json.loads(result.stdout)["strategies"] == summary["strategies"]
    assert "reused" in result.stderr
    assert "steps reused from an earlier run, their time not counted" in (out / "report.md").read_text()


@pytest.mark.slow
def test_table_is_printed_whole_on_a_narrow_console(demo_run):
    out, summary = demo_run
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu"], terminal_width=60)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name in STRATEGIES:  # one row per strategy, name and numbers uncut
        row = next(line for line in lines if line.startswith(f"│ {name} "))
        assert f"{100 * summary['strategies'][name]['acc']['mean']:.2f}" in row
    assert "…" not in result.stdout


def _fake_strategies(n_seeds):
    """Demo results without training: full fine-tuning and two strategies, cells with 100 images each."""
    from aimfair_cli.metrics import CELLS, GroupMetrics
    from aimfair_cli.stages.demo import StrategyRuns

    def runs(accs):
        return [GroupMetrics(cells={c: (100, a + seed % 2) for c, a in zip(CELLS, accs)}) for seed in range(n_seeds)]

    full = StrategyRuns("full", "full fine-tuning", runs([90, 80, 70, 60]))
    better = StrategyRuns("aimfair", "AIM-Fair", runs([90, 80, 75, 68]))  # WST +8 and ACC +3.25 on every seed
    same = StrategyRuns("linear", "linear probing", runs([90, 80, 70, 60]))
    same.metrics[0] = GroupMetrics(cells={c: (100, a) for c, a in zip(CELLS, [91, 80, 70, 60])})
    return [better, full, same]


def test_paired_rows_and_the_words_for_several_seeds():
    from aimfair_cli.stages.demo import distinguishable_text, paired_rows

    strategies = _fake_strategies(3)
    rows = paired_rows(strategies)
    assert [r["strategy"] for r in rows] == ["AIM-Fair", "linear probing"]
    assert rows[0]["WST"] == "+8.00 [+8.00, +8.00] 3/3"  # the same gain on every seed: a zero-width interval
    assert rows[1]["ACC"].startswith("+0.08 [") and rows[1]["ACC"].endswith("] 1/3")
    text = distinguishable_text(strategies)
    assert text.startswith("At 3 seeds these differences against full fine-tuning are distinguishable from zero")
    assert "AIM-Fair: ACC +3.25 points (better)" in text and "AIM-Fair: WST +8.00 points (better)" in text
    assert "linear probing" not in text  # one seed of three moved: its interval contains 0


def test_paired_words_with_one_seed_and_with_nothing_distinguishable():
    from aimfair_cli.stages.demo import distinguishable_text, paired_rows

    one = _fake_strategies(1)
    assert distinguishable_text(one).startswith("With one seed there is no interval")
    assert paired_rows(one)[0]["WST"] == "+8.00 — 1/1"
    strategies = [s for s in _fake_strategies(3) if s.name != "aimfair"]
    assert distinguishable_text(strategies) == ("At 3 seeds no difference against full fine-tuning is "
                                                "distinguishable from zero: every 95 % interval contains 0.")


def test_demo_rejects_bad_seeds(tmp_path):
    result = runner.invoke(app, ["demo", "--quick", "--seeds", "0", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "Error: --seeds: must be at least 1, got 0"


def test_demo_data_from_another_renderer_is_stale(tmp_path):
    from PIL import Image

    from aimfair_cli.data.demo import make_demo_dataset
    from aimfair_cli.stages.demo import _same_renderer

    result = make_demo_dataset(out=tmp_path / "data", n_train=8, n_val=4, n_test=4, size=32, seed=3)
    train = result.paths["train"]
    assert _same_renderer(train, size=32, seed=3)
    assert not _same_renderer(train, size=32, seed=4)  # other seed: other pixels
    first = tmp_path / "data" / "images" / "train" / "000000.png"
    img = Image.open(first).convert("RGB")
    img.putpixel((0, 0), tuple(255 - v for v in img.getpixel((0, 0))))  # as an older renderer would differ
    img.save(first)
    assert not _same_renderer(train, size=32, seed=3)
    first.unlink()
    assert not _same_renderer(train, size=32, seed=3)
