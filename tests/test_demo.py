"""`aimfair demo --quick`: the whole pipeline on the offline benchmark, as the README's main job runs it."""

import json

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app

runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
STRATEGIES = ["pretrained", "aimfair", "full", "linear", "random", "opposite"]


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
                 "seed0/random.safetensors", "seed0/opposite.safetensors",
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
    # notes on the rows that ran, none on a row that did not (the freeze baseline is in the partial study only)
    assert "The opposite criterion, a control the paper lacks" in report
    assert "single-block freeze" not in report
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
    assert ("aimfair pretrain --train data/train.csv --val data/val.csv --out seed0/pretrain.safetensors --epochs 2 "
            "--lr 0.02 --milestones ''") in commands and "--weights none" in commands
    assert "aimfair eval --model seed0/aimfair.safetensors --data data/test.csv" in commands
    assert "![utility against fairness](utility-fairness.png)" in report
    assert summary["plan"].startswith("6 trainings (1 pretrainings, 5 fine-tunings) and 6 evaluations to run, 0 steps "
                                      "reused; about ")
    rows = summary["studies"]["main"]["rows"]
    assert [r["name"] for r in rows] == STRATEGIES
    assert rows[1]["paired_vs_full"]["acc"]["mean_diff"] == pytest.approx(summary["paired_vs_full"]["aimfair"]["acc"]["mean_diff"])
    from aimfair_cli.masking.maskfile import load_mask

    mask = load_mask(out / "seed0" / "mask.safetensors")
    ratio = len(mask.selected) / mask.total
    assert "paired_vs_full" not in rows[2] and rows[4]["chosen"] == [f"seed 0: {ratio:.2f} of the tensors"]


@pytest.mark.slow
def test_rerun_reuses_finished_steps(demo_run):
    out, summary = demo_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("seed0/*.safetensors")}
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed0/*.safetensors")} == before
    assert json.loads(result.stdout)["strategies"] == summary["strategies"]
    assert "reused" in result.stderr and "aimfair demo: nothing to run: all 16 steps reused" in result.stderr
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
    from aimfair_cli.experiments.catalogue import RowRuns as StrategyRuns
    from aimfair_cli.fairness.metrics import CELLS, GroupMetrics

    def runs(accs):
        return [GroupMetrics(cells={c: (100, a + seed % 2) for c, a in zip(CELLS, accs)}) for seed in range(n_seeds)]

    full = StrategyRuns("full", "full fine-tuning", runs([90, 80, 70, 60]))
    better = StrategyRuns("aimfair", "AIM-Fair", runs([90, 80, 75, 68]))  # WST +8 and ACC +3.25 on every seed
    same = StrategyRuns("linear", "linear probing", runs([90, 80, 70, 60]))
    same.metrics[0] = GroupMetrics(cells={c: (100, a) for c, a in zip(CELLS, [91, 80, 70, 60])})
    return [better, full, same]


def test_paired_rows_and_the_words_for_several_seeds():
    from aimfair_cli.experiments.report import distinguishable_text, paired_rows

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
    from aimfair_cli.experiments.report import distinguishable_text, paired_rows

    one = _fake_strategies(1)
    assert distinguishable_text(one).startswith("With one seed there is no interval")
    assert paired_rows(one)[0]["WST"] == "+8.00 — 1/1"
    strategies = [s for s in _fake_strategies(3) if s.name != "aimfair"]
    assert distinguishable_text(strategies) == ("At 3 seeds no difference against full fine-tuning is "
                                                "distinguishable from zero: every 95 % interval contains 0.")


def test_the_verdict_sorts_rows_by_their_paired_intervals():
    from aimfair_cli.experiments.catalogue import RowRuns
    from aimfair_cli.experiments.report import verdict_lines
    from aimfair_cli.fairness.metrics import CELLS, GroupMetrics

    strategies = _fake_strategies(3)
    worse = RowRuns("random", "random tensors", [GroupMetrics(cells={c: (100, a - seed % 2) for c, a in
                                                                     zip(CELLS, [85, 75, 60, 50])}) for seed in range(3)])
    erm = RowRuns("pretrained", "ERM", [GroupMetrics(cells={c: (100, a + seed) for c, a in
                                                            zip(CELLS, [95, 95, 60, 40])}) for seed in range(3)])
    text = "\n".join(verdict_lines([erm, *strategies, worse]))
    assert "3 seeds" in text
    assert "- Beat full fine-tuning: AIM-Fair (ACC +3.25 [+3.25, +3.25]; WST +8.00 [+8.00, +8.00]; EO -1.50 " \
           "[-1.50, -1.50])." in text
    assert "- Lose to full fine-tuning: random tensors (" in text
    assert "- Cannot be told apart from full fine-tuning at 3 seeds: linear probing." in text
    assert "ERM" not in text.split("The premise")[0]  # ERM is the premise line, not a row that beats or loses
    assert "- The premise (full fine-tuning on balanced synthetic data repairs the biased model): full " \
           "fine-tuning − ERM is WST +19.33 [+16.46, +22.20]" in text
    one = "\n".join(verdict_lines(_fake_strategies(1)))
    assert one.startswith("**Verdict:** one seed gives no interval")


def test_the_report_sets_the_papers_tab3_beside_its_rows():
    from aimfair_cli.experiments.report import paper_lines

    lines = paper_lines(_fake_strategies(2))
    assert "the paper's Tab. 3 on **CelebA**" in lines[0]
    aimfair = next(line for line in lines if line.startswith("| AIM-Fair |"))
    assert aimfair.endswith("| 89.02 | 84.20 | 6.07 | 2.74 |")  # the paper's row
    assert any(line.startswith("| linear probing |") for line in lines)  # Tab. 3 has linear probing too
    assert any(line.startswith("| full fine-tuning |") for line in lines)
    assert paper_lines([]) == []


def test_demo_rejects_bad_seeds(tmp_path):
    result = runner.invoke(app, ["demo", "--quick", "--seeds", "0", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "Error: --seeds: must be at least 1, got 0"


def test_the_data_steps_fingerprint_follows_the_renderers_pixels(monkeypatch):
    """The demo renderer decides the data without being an option: its drawing of a probe image is part of the
    data step's record, so a renderer that draws differently makes the data (and everything after it) stale."""
    import numpy as np

    from aimfair_cli.data import demo as data_demo
    from aimfair_cli.experiments.demo import _renderer_fingerprint

    before = _renderer_fingerprint(32)
    assert before == _renderer_fingerprint(32) != _renderer_fingerprint(16)
    drawn = data_demo.render_demo_image

    def changed(**kw):
        img, info = drawn(**kw)
        pixels = np.asarray(img).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        from PIL import Image

        return Image.fromarray(pixels), info

    monkeypatch.setattr(data_demo, "render_demo_image", changed)
    assert _renderer_fingerprint(32) != before


@pytest.mark.slow
def test_commands_sh_replayed_in_a_fresh_folder_gives_the_same_checkpoints(demo_run, tmp_path):
    """commands.sh is made from the steps that ran, so running it elsewhere gives the same models, bit for bit."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    out, _ = demo_run
    replay = tmp_path / "replay"
    replay.mkdir()
    shutil.copy(out / "commands.sh", replay)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(replay / "commands.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoints = sorted(p.relative_to(out) for p in out.glob("seed0/*.safetensors"))
    assert len(checkpoints) == 7  # pretrain, mask and five fine-tunings
    for rel in checkpoints:
        a, b = load_file(out / rel), load_file(replay / rel)
        assert a.keys() == b.keys(), rel
        for name in a:
            assert a[name].dtype == b[name].dtype and bool((a[name] == b[name]).all()), (rel, name)
    for rel in ("seed0/aimfair.test.json", "seed0/full.test.json", "data/train.csv", "synth/metadata.jsonl"):
        assert (out / rel).read_bytes() == (replay / rel).read_bytes(), rel


@pytest.mark.slow
def test_every_study_runs_on_quick_sizes(tmp_path):
    """`--study all` at the quick preset, shrunk further (160 images at 16 px): each study reports its rows with
    paired differences against full fine-tuning, rows shared by studies run once, and the report holds their
    tables and figures."""
    out = tmp_path / "all"
    result = runner.invoke(app, ["demo", "--quick", "--n-train", "160", "--n-val", "160", "--n-test", "160", "--size", "16", "--out",
                                 str(out), "--device", "cpu", "--study", "all", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # all: AIM-Fair's studies; sota and sample-ratio (the comparison methods) are asked for by name
    assert list(payload["studies"]) == ["main", "strategies", "partial", "prompts", "topk", "bias-ratio"]
    expected = {
        "main": STRATEGIES,
        "strategies": ["pretrained", "synthetic", "supplement", "repair", "linear", "full", "aimfair"],
        "partial": ["pretrained", "full", "random-best", "update-best", "freeze-best", "cosine", "aimfair", "opposite"],
        "prompts": ["pretrained", "full", "plain", "contextual-25", "contextual-50"],
        "topk": ["pretrained", "full", "k40", "k45", "k50", "k55", "k60"],
        "bias-ratio": ["pretrained", "full", "bias-4-6", "bias-3-7", "bias-2-8", "bias-1-9", "bias-auto"],
    }
    for name, rows in expected.items():
        got = payload["studies"][name]["rows"]
        assert [r["name"] for r in got] == rows, name
        for r in got:
            assert 0 <= r["acc"]["mean"] <= 1 and set(r["cells"]) == {"0,0", "0,1", "1,0", "1,1"}, (name, r["name"])
            assert ("paired_vs_full" in r) == (r["name"] != "full"), (name, r["name"])
    rows = {r["name"]: r for r in payload["studies"]["topk"]["rows"]}
    main = {r["name"]: r for r in payload["studies"]["main"]["rows"]}
    assert rows["k55"]["acc"] == main["aimfair"]["acc"]  # k = 55 is the main comparison's mask: one step, run once
    prompts = {r["name"]: r for r in payload["studies"]["prompts"]["rows"]}
    strategies = {r["name"]: r for r in payload["studies"]["strategies"]["rows"]}
    assert prompts["contextual-50"]["acc"] == strategies["synthetic"]["acc"]  # the same training, run once
    # 6 pretrainings: ERM, synthetic only (= 50 contextual prompts), supplementation, repairing, plain, 25 contextual
    assert payload["plan"].startswith("26 trainings (6 pretrainings, 20 fine-tunings) and 29 evaluations to run")
    # header 4; data, prompts ×2, synth ×3; 5 composed sets; 6 pretrainings; 10 masks; 20 fine-tunings; 29 evaluations
    assert len((out / "commands.sh").read_text().splitlines()) == 4 + 6 + 5 + 6 + 10 + 20 + 29
    assert payload["studies"]["partial"]["rows"][2]["chosen"][0].startswith("seed 0: ratio ")
    report = (out / "report.md").read_text()
    assert "## AIM-Fair against fine-tuning baselines" in report  # the main comparison's section
    for name in list(expected)[1:]:
        assert f"## Study `{name}`" in report, name
    assert "![metrics against k](topk.png)" in report and (out / "topk.png").is_file()
    manifest = (out / "seed0" / "sets" / "repair.csv").read_text().splitlines()
    counts = {}
    for line in manifest[1:]:
        _, y, s, _source = line.split(",")
        counts[(y, s)] = counts.get((y, s), 0) + 1
    assert len(set(counts.values())) == 1  # repairing balances the four cells


@pytest.mark.slow
def test_study_on_a_run_folder_writes_only_into_its_output(demo_run, tmp_path):
    """`aimfair study --run DIR`: the demo's folder stands in for a user's run (data/ and synth/); the run's files
    are inputs only, and the output holds the report, commands.sh and the runs."""
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*")} | \
        {p: p.stat().st_mtime_ns for p in (out / "synth").rglob("*")}
    target = tmp_path / "studies"
    args = ["study", "--run", str(out), "--out", str(target), "--study", "main", "--seeds", "1", "--image-size", "32",
            "--batch-size", "32", "--crop-scale", "0.6", "--weights", "none", "--pretrain-epochs", "1",
            "--pretrain-milestones", "", "--finetune-epochs", "1", "--blocks", "fc", "--workers", "0", "--device", "cpu",
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["name"] for r in payload["studies"]["main"]["rows"]] == STRATEGIES
    assert "aimfair study: 6 trainings (1 pretrainings, 5 fine-tunings)" in result.stderr
    after = {p: p.stat().st_mtime_ns for p in (out / "data").rglob("*")} | \
        {p: p.stat().st_mtime_ns for p in (out / "synth").rglob("*")}
    assert after == before
    commands = (target / "commands.sh").read_text()
    assert f"aimfair pretrain --train {out / 'data' / 'train.csv'}" in commands and "--out seed0/pretrain.safetensors" in commands
    assert (target / "report.md").is_file() and (target / "seed0" / "aimfair.test.json").is_file()
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and "nothing to run" in rerun.stderr
    refused = runner.invoke(app, ["study", "--run", str(out), "--out", str(target), "--study", "prompts"])
    assert refused.exit_code == 1 and refused.stderr.strip().splitlines()[-1].startswith("Error: --study prompts needs")
    missing = runner.invoke(app, ["study", "--run", str(tmp_path / "nowhere"), "--out", str(target)])
    assert missing.exit_code == 1 and "data/train.csv not found" in missing.stderr
