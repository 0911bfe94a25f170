"""The study pipeline's one reuse rule: a step is skipped exactly when its record (command line, input
fingerprints) matches; a changed option or input re-runs exactly the steps that depend on it."""

import csv
import json
from pathlib import Path

from aimfair_cli.data.compose import ComposeConfig
from aimfair_cli.data.demo import DemoDataConfig
from aimfair_cli.experiments.pipeline import Pipeline, Step, record_path
from aimfair_cli.stages.prompts import PromptsConfig
from aimfair_cli.stages.synth import SynthConfig


def steps(root: Path, ext: Path, *, synth_n: int = 8, seed: int = 0, renderer: str = "v1") -> list[Step]:
    data = DemoDataConfig(out=root / "data", n_train=16, n_val=8, n_test=8, size=16)
    prompts = PromptsConfig(task="smiling_male", per_group=4, out=root / "prompts.yaml")
    synth = SynthConfig(group="all", n=synth_n, prompts=prompts.out, out=root / "synth", size=16)
    mixed = ComposeConfig(kind="supplement", real=ext, synth=synth.out / "metadata.jsonl", out=root / "sets/mixed.csv",
                          n=8, seed=seed)
    only = ComposeConfig(kind="synthetic", synth=synth.out / "metadata.jsonl", out=root / "sets/synthetic.csv", n=8)
    return [
        Step(("data", "demo"), data, (), (data.out,), "data", code={"renderer": renderer}),
        Step(("prompts",), prompts, (), (prompts.out,), "prompts"),
        Step(("synth",), synth, (prompts.out,), (synth.out,), "synth"),
        Step(("data", "compose"), mixed, (ext, mixed.synth), (mixed.out,), "mixed"),
        Step(("data", "compose"), only, (only.synth,), (only.out,), "synthetic"),
    ]


def run(root: Path, ext: Path, **kw) -> list[str]:
    pipe = Pipeline(root)
    for step in steps(root, ext, **kw):
        pipe.run(step)
    return [s.title for s in pipe.ran]


def external_manifest(root: Path, folder: Path) -> Path:
    """A real-data manifest outside the pipeline's folder (absolute image paths), as a user's run folder holds."""
    folder.mkdir()
    with open(root / "data" / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    path = folder / "train.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file_name", "target", "protected"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "file_name": str(root / "data" / r["file_name"])})
    return path


def test_reuse_reruns_exactly_the_dependent_steps(tmp_path):
    root, ext = tmp_path / "run", tmp_path / "user" / "train.csv"
    first = Pipeline(root)
    for step in steps(root, ext)[:1]:  # the data step first: the external manifest copies its rows
        first.run(step)
    external_manifest(root, ext.parent)
    assert run(root, ext) == ["prompts", "synth", "mixed", "synthetic"]
    assert run(root, ext) == []  # unchanged: nothing runs
    record = json.loads(record_path(root / "sets/mixed.csv").read_text())
    assert record["command"][:3] == ["aimfair", "data", "compose"] and "--seed" not in record["command"]
    assert set(record["inputs"]) == {str(ext), "synth/metadata.jsonl"}

    assert run(root, ext, seed=1) == ["mixed"]  # an option of one step: that step only
    before = (root / "synth" / "metadata.jsonl").stat().st_mtime_ns
    assert run(root, ext, seed=1, synth_n=12) == ["synth", "mixed", "synthetic"]  # upstream: everything below it
    assert (root / "synth" / "metadata.jsonl").stat().st_mtime_ns != before
    assert sum(1 for _ in open(root / "synth" / "metadata.jsonl")) == 4 * 12

    lines = ext.read_text().splitlines()
    ext.write_text("\n".join(lines[:-1]) + "\n")  # a changed input outside the pipeline: its SHA-256 differs
    assert run(root, ext, seed=1, synth_n=12) == ["mixed"]
    assert run(root, ext, seed=1, synth_n=12, renderer="v2") == ["data"]  # code that decides the data; nothing reads it
    assert run(root, ext, seed=1, synth_n=12, renderer="v2") == []


def test_a_missing_output_or_a_broken_record_reruns_the_step(tmp_path):
    root, ext = tmp_path / "run", tmp_path / "user" / "train.csv"
    Pipeline(root).run(steps(root, ext)[0])
    external_manifest(root, ext.parent)
    run(root, ext)
    (root / "sets" / "synthetic.csv").unlink()
    assert run(root, ext) == ["synthetic"]
    record_path(root / "prompts.yaml").write_text("{not json")
    assert run(root, ext) == ["prompts", "synth", "mixed", "synthetic"]


def test_a_stale_step_starts_from_an_empty_output(tmp_path):
    root, ext = tmp_path / "run", tmp_path / "user" / "train.csv"
    Pipeline(root).run(steps(root, ext)[0])
    external_manifest(root, ext.parent)
    run(root, ext)
    stray = root / "synth" / "smiling_male" / "stray.png"
    stray.write_bytes(b"left over")
    assert run(root, ext, synth_n=6) == ["synth", "mixed", "synthetic"]
    assert not stray.exists()  # the synth folder was the stale step's output: removed before it ran again
    assert sum(1 for _ in open(root / "synth" / "metadata.jsonl")) == 4 * 6


def test_plan_mode_counts_without_running(tmp_path):
    root, ext = tmp_path / "run", tmp_path / "user" / "train.csv"
    plan = Pipeline(root, plan=True)
    for step in steps(root, ext):
        plan.run(step)
    assert [s.title for s in plan.ran] == ["data", "prompts", "synth", "mixed", "synthetic"]
    assert not root.exists() or not any(root.iterdir())
    assert plan.commands()[0].startswith("aimfair data demo --out data --n-train 16")


def test_data_compose_writes_each_kind_and_refuses_a_small_pool(tmp_path):
    from typer.testing import CliRunner

    from aimfair_cli.cli.app import app
    from aimfair_cli.core.manifest import read_manifest

    root, ext = tmp_path / "run", tmp_path / "user" / "train.csv"
    pipe = Pipeline(root)
    for step in steps(root, ext)[:3]:
        pipe.run(step)
    runner = CliRunner(env={"AIMFAIR_DEBUG": ""})
    synth, real = root / "synth" / "metadata.jsonl", root / "data" / "train.csv"
    cells = {}
    for kind in ("synthetic", "supplement", "repair"):
        out = tmp_path / "sets" / f"{kind}.csv"
        result = runner.invoke(app, ["data", "compose", "--kind", kind, "--real", str(real), "--synth", str(synth),
                                     "--out", str(out), "--n", "8", "--json"])
        assert result.exit_code == 0, result.output
        m = read_manifest(out, require_protected=True)
        assert all(m.image_path(r).is_file() for r in m.rows)  # paths relative to the new manifest's folder
        counts = {}
        for r in m.rows:
            key = (r["source"], r["target"], r["protected"])
            counts[key] = counts.get(key, 0) + 1
        cells[kind] = counts
    assert cells["synthetic"] == {("synthetic", y, s): 2 for y in (0, 1) for s in (0, 1)}
    real_rows = {k: v for k, v in cells["supplement"].items() if k[0] == "real"}
    assert sum(real_rows.values()) == 16 and sum(cells["supplement"].values()) == 24
    per_cell = {}
    for (source, y, s), v in cells["repair"].items():
        per_cell[(y, s)] = per_cell.get((y, s), 0) + v
    assert len(set(per_cell.values())) == 1 and {k for k in cells["repair"] if k[0] == "real"} == set(real_rows)
    bad = tmp_path / "sets" / "big.csv"
    result = runner.invoke(app, ["data", "compose", "--synth", str(synth), "--out", str(bad), "--n", "400"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {synth} holds 8 images of cell target=0")
    assert not bad.exists()


def test_the_cache_option_reaches_every_training_step(tmp_path):
    """`demo`/`study --no-cache`: the studies' pretraining, mask and fine-tuning steps carry it (planned, nothing
    runs); with the cache on, their command lines are those of earlier versions, so finished steps stay reused."""
    from aimfair_cli.experiments.catalogue import STUDIES, Bench, Sizes, Sources

    src = Sources(train=tmp_path / "train.csv", val=tmp_path / "val.csv", test=tmp_path / "test.csv",
                  prompts=tmp_path / "prompts", synth=tmp_path / "synth.jsonl")
    for cache in (False, True):
        plan = Pipeline(tmp_path / "run", plan=True)
        sizes = Sizes(image_size=16, batch_size=8, crop_scale=0.6, pretrain_epochs=1, pretrain_lr=0.02,
                      pretrain_milestones=(), finetune_epochs=1, finetune_lr=0.01, topk="55", n_train=16, n_synth=16,
                      blocks=("fc",), cache=cache)
        bench = Bench(plan, src, sizes, tmp_path / "run" / "seed0", 0)
        for row in STUDIES["main"].rows:
            row.make(bench)
        training = [c for c in plan.commands() if c.startswith(("aimfair pretrain", "aimfair mask", "aimfair finetune"))]
        assert len(training) == 7  # ERM, the mask, five fine-tunings
        assert all(("--no-cache" in c) != cache for c in training), training
        assert not any("--cache" in c.replace("--no-cache", "") for c in training)
