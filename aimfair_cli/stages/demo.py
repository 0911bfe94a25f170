"""`aimfair demo`: the whole method on the built-in offline benchmark, with the paper's baselines.

    data (photo-style faces, biased train) -> prompts (template) -> synth (procedural) ->
    per seed: pretrain (random init) -> mask (k = 55) -> finetune {AIM-Fair, full, linear, random mask at
    AIM-Fair's ratio, the opposite criterion at the same k, best single-block freeze} -> eval on the real test
    set -> one table, paired differences against full fine-tuning, report.md, plots (metrics, cells, Δ1 against
    Δ2 per seed), commands.sh.

Every step calls the same library function as its command, and writes the same files, into the demo folder;
`commands.sh` holds the equivalent shell commands. A step whose output exists and was made with the same
options (its saved resolved config matches) is reused, so a rerun only does what is missing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import is_done, write_resolved_config
from ..data.demo import MAX_DEMO_IMAGES, MAX_DEMO_SIZE
from ..options import CROP_HELP, DEVICE_HELP, MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_WORKERS, check, option
from ..fsio import check_writable
from ..metrics import DEGENERATE_MARK, MSG_DEGENERATE_NOTE
from ..progress import NULL, Progress

log = logging.getLogger(__name__)

TASK = "smiling_male"
REFERENCE = "full"  # every strategy is compared, seed by seed, with full fine-tuning
BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")

# Sizes for these 2-core CPU machines. At 64 px a ResNet-18 trains at ~140 img/s here, so "default" is about
# 10 minutes for one seed and "quick" about a minute. A GPU user can raise every number with the options.
# Small batches and mild crops (keeping >= 60 % of the picture, so the mouth stays in) let a randomly initialised
# ResNet-18 learn the task in a few epochs at 64 px (see benchmarks/demo_properties.py).
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(n_train=4000, n_eval=1000, size=64, batch_size=32, crop_scale=0.6, pretrain_epochs=4,
                    pretrain_lr=0.02, pretrain_milestones=(3,), finetune_epochs=2, finetune_lr=0.01,
                    freeze_blocks=("layer1", "fc")),
    "quick": dict(n_train=400, n_eval=400, size=32, batch_size=32, crop_scale=0.6, pretrain_epochs=2,
                  pretrain_lr=0.02, pretrain_milestones=(), finetune_epochs=1, finetune_lr=0.01, freeze_blocks=("fc",)),
}


def _preset_text(key: str) -> str:
    d, q = PRESETS["default"][key], PRESETS["quick"][key]
    show = (lambda v: ",".join(map(str, v)) or "none") if isinstance(d, tuple) else str
    return f"{show(d)}; --quick {show(q)}"


@dataclass
class DemoConfig:
    """Options of `aimfair demo`. Sizes left at None come from the preset (`PRESETS`, default or --quick)."""

    out: Path = option(Path("aimfair-demo"), short=("-o",), path="dir", help="Demo folder (reused on rerun).")
    seeds: int = option(1, help="Training seeds; the table shows mean ± std over them.", min=1, max=100)
    quick: bool = option(False, help="A tiny run (~1 minute): fewer, smaller images, 1 fine-tuning epoch, freeze "
                         "baseline on fc only.")
    n_train: int | None = option(None, help="Real training images.", min=8, max=MAX_DEMO_IMAGES,
                                 default_text=_preset_text("n_train"))
    n_eval: int | None = option(None, help="Images in each of val and test.", min=8, max=MAX_DEMO_IMAGES,
                                default_text=_preset_text("n_eval"))
    size: int | None = option(None, help="Image side in pixels.", min=16, max=MAX_DEMO_SIZE,
                              default_text=_preset_text("size"))
    pretrain_epochs: int | None = option(None, help="Pretraining epochs.", min=1, max=MAX_EPOCHS,
                                         default_text=_preset_text("pretrain_epochs"))
    pretrain_lr: float | None = option(None, help="Pretraining learning rate.", above=0, max=MAX_LR,
                                       default_text=_preset_text("pretrain_lr"))
    pretrain_milestones: tuple[int, ...] | None = option(None, help="Pretraining epochs after which lr drops ×0.1.",
                                                         min=1, max=MAX_EPOCHS,
                                                         default_text=_preset_text("pretrain_milestones"))
    finetune_epochs: int | None = option(None, help="Fine-tuning epochs of every strategy.", min=1, max=MAX_EPOCHS,
                                         default_text=_preset_text("finetune_epochs"))
    finetune_lr: float | None = option(None, help="Fine-tuning learning rate of every strategy.", above=0,
                                       max=MAX_LR, default_text=_preset_text("finetune_lr"))
    freeze_blocks: tuple[str, ...] | None = option(None, choices=BLOCKS, default_text=_preset_text("freeze_blocks"),
                                                   help="Comma-separated blocks tried for the best single-block freeze "
                                                   "baseline.")
    topk: str = option("55", help="k for the mask, tensors or percent.")
    batch_size: int | None = option(None, help="Images per batch.", min=1, max=MAX_BATCH,
                                    default_text=_preset_text("batch_size"))
    crop_scale: float | None = option(None, help=CROP_HELP, above=0, max=1, default_text=_preset_text("crop_scale"))
    # images are tiny: loading in the main process beats worker start-up here
    workers: int = option(0, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    device: str = option("auto", help=DEVICE_HELP)

    def resolved(self) -> "DemoConfig":
        preset = PRESETS["quick" if self.quick else "default"]
        values = {k: (preset[k] if getattr(self, k) is None and k in preset else getattr(self, k))
                  for k in (f.name for f in dataclasses.fields(self))}
        return DemoConfig(**values)


@dataclass
class StrategyRuns:
    name: str
    label: str
    metrics: list[Any] = field(default_factory=list)  # GroupMetrics per seed
    detail: list[str] = field(default_factory=list)  # per seed: what was fine-tuned

    def aggregate(self) -> dict[str, Any]:
        from ..metrics import aggregate

        return aggregate(self.metrics)


@dataclass
class DemoResult:
    out: Path
    config: DemoConfig
    strategies: list[StrategyRuns]
    report: Path
    seconds: float
    mask_summary: list[str] = field(default_factory=list)


class _Steps:
    """Runs steps with reuse, logs them, and collects the equivalent shell commands."""

    def __init__(self, out: Path, progress: Progress, total_cost: float) -> None:
        self.out, self.progress, self.commands = out, progress, ["set -euo pipefail", 'cd "$(dirname "$0")"']
        self.reused = 0
        self._outer_cm = progress.task("aimfair demo", total=total_cost)
        self.outer = self._outer_cm.__enter__()

    def run(self, title: str, command: str, cost: float, done: bool, fn: Callable[[], Any]) -> Any:
        self.commands.append(command)
        started = time.perf_counter()
        result = None if done else fn()
        self.reused += done
        verb = "reused" if done else f"done in {time.perf_counter() - started:.0f}s"
        log.info("%s: %s", title, verb)
        self.outer.advance(cost, stage=title)
        return result

    def close(self) -> None:
        self._outer_cm.__exit__(None, None, None)


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


def run_demo(cfg: DemoConfig, *, progress: Progress = NULL) -> DemoResult:
    from ..data.demo import DemoDataConfig, make_demo_dataset, recorded_config
    from ..maskfile import load_mask
    from ..stages.evaluate import evaluate_checkpoint
    from ..stages.finetune import FinetuneConfig, run_finetune
    from ..stages.finetune import opposite_selection
    from ..stages.mask import MaskConfig, plot_selection, run_mask
    from ..stages.pretrain import PretrainConfig, run_pretrain
    from ..stages.prompts import write_prompts
    from ..stages.synth import synthesize
    from ..tasks import get_task

    c = check(cfg).resolved()
    started = time.perf_counter()
    out = Path(c.out).resolve()
    check_writable(out, folder=True)  # a read-only or misplaced folder is found before minutes of work
    out.mkdir(parents=True, exist_ok=True)
    data, prompts_file, synth = out / "data", out / "prompts" / f"{TASK}.yaml", out / "synth"
    train, val, test = data / "train.csv", data / "val.csv", data / "test.csv"
    # Each synthetic group must cover the biased set's majority cell (45 % of N_R at 1:9) and the balanced
    # set (N_R / 4), both drawn from the same pool.
    per_group = math.ceil(0.45 * c.n_train)
    n_finetunes = 5 + len(c.freeze_blocks)
    cost = {
        "data": 0.3 * (c.n_train + 2000), "prompts": 1, "synth": 0.3 * 4 * per_group,
        "pretrain": c.n_train * c.pretrain_epochs + 1000 * c.pretrain_epochs, "mask": 3 * c.n_train,
        "finetune": c.n_train * c.finetune_epochs + 1000 * c.finetune_epochs, "eval": 300,
    }
    total = cost["data"] + cost["prompts"] + cost["synth"] + c.seeds * (
        cost["pretrain"] + cost["mask"] + n_finetunes * cost["finetune"] + (n_finetunes + 1) * cost["eval"])
    steps = _Steps(out, progress, total)
    try:
        data_opts = dict(n_train=c.n_train, n_val=c.n_eval, n_test=c.n_eval, size=c.size, bias="1:9", seed=0)
        data_done = (train.is_file() and is_done(data, "data_demo", recorded_config(DemoDataConfig(out=data, **data_opts)))
                     and _same_renderer(train, size=c.size, seed=data_opts["seed"]))
        steps.run("data", f"aimfair data demo --out data --n-train {c.n_train} --n-val {c.n_eval} --n-test {c.n_eval} "
                  f"--size {c.size} --bias 1:9 --seed 0",
                  cost["data"], data_done, lambda: make_demo_dataset(out=data, progress=progress, **data_opts))
        steps.run("prompts", f"aimfair prompts --task {TASK} --per-group 50 --writer template --seed 0 "
                  f"--out prompts/{TASK}.yaml", cost["prompts"], prompts_file.is_file(),
                  lambda: write_prompts(task=get_task(TASK), out=prompts_file, per_group=50, writer="template", seed=0))
        _drop_stale_synth(synth, c.size)
        made = steps.run("synth", f"aimfair synth --prompts prompts/{TASK}.yaml --group all --n {per_group} --out synth "
                         f"--generator procedural --size {c.size} --seed 0", cost["synth"], False,
                         lambda: synthesize(prompts=prompts_file, groups=[g.name for g in get_task(TASK).groups],
                                            n=per_group, out=synth, generator="procedural",
                                            generator_options={"size": c.size}, seed=0, progress=progress))
        # New real or synthetic data makes every model trained on the old data stale, whatever its options.
        upstream_changed = not data_done or made.written > 0
        manifest = synth / "metadata.jsonl"
        common = dict(batch_size=c.batch_size, workers=c.workers, device=c.device)
        runs = {name: StrategyRuns(name, label) for name, label in (
            ("pretrained", "pretrained (ERM, biased)"), ("aimfair", "AIM-Fair (mask k=%s)" % c.topk),
            ("full", "full fine-tuning"), ("linear", "linear probing (fc)"),
            ("random", "random tensors, AIM-Fair's ratio"),
            ("opposite", "opposite criterion, same k (control)"),
            ("freeze", f"best single-block freeze ({', '.join(c.freeze_blocks)})"))}
        mask_summary = []
        for seed in range(c.seeds):
            sd = out / f"seed{seed}"
            r = f"seed{seed}"
            ms = ",".join(map(str, c.pretrain_milestones)) or '""'
            pre_cfg = PretrainConfig(train=train, val=val, out=sd / "pretrain.safetensors", epochs=c.pretrain_epochs,
                                     lr=c.pretrain_lr, milestones=tuple(c.pretrain_milestones), image_size=c.size,
                                     crop_scale=c.crop_scale, seed=seed, weights="none", **common)
            steps.run(f"pretrain seed {seed}",
                      f"aimfair pretrain --train data/train.csv --val data/val.csv --out {r}/pretrain.safetensors "
                      f"--weights none --epochs {c.pretrain_epochs} --lr {c.pretrain_lr} --milestones {ms} --image-size {c.size} "
                      f"--crop-scale {c.crop_scale} --batch-size {c.batch_size} --seed {seed}",
                      cost["pretrain"], not upstream_changed and is_done(pre_cfg.out, "pretrain", pre_cfg),
                      lambda: run_pretrain(pre_cfg, progress=progress))
            mask_cfg = MaskConfig(model=pre_cfg.out, real=train, synth=manifest, out=sd / "mask.safetensors",
                                  topk=c.topk, crop_scale=c.crop_scale, seed=seed, **common)
            steps.run(f"mask seed {seed}",
                      f"aimfair mask --model {r}/pretrain.safetensors --real data/train.csv --synth synth/metadata.jsonl "
                      f"--topk {c.topk} --crop-scale {c.crop_scale} --batch-size {c.batch_size} "
                      f"--out {r}/mask.safetensors --seed {seed}",
                      cost["mask"], not upstream_changed and is_done(mask_cfg.out, "mask", mask_cfg), lambda: run_mask(mask_cfg, progress=progress))
            mask = load_mask(mask_cfg.out)
            ratio = len(mask.selected) / mask.total
            plot_selection(out / f"selection-seed{seed}.png", mask,
                           title=f"seed {seed}: {len(mask.selected)} of {mask.total} tensors selected (k={mask.meta['k']})")
            opposite = opposite_selection(mask, mask_cfg.out)
            mask_summary.append(f"seed {seed}: {len(mask.selected)} of {mask.total} tensors selected "
                                f"(ratio {ratio:.2f}); per block " + _per_block(mask.selected, mask.shapes)
                                + f"; the opposite criterion keeps {len(opposite)}, {_shared(mask.selected, opposite)} "
                                "of them also in AIM-Fair's mask")

            def finetune(name: str, *, strategy: str | None = None, use_mask: bool = False) -> Path:
                # use_mask with a strategy: `opposite`, which reads the mask's scores
                ft = FinetuneConfig(model=pre_cfg.out, synth=manifest, val=val, out=sd / f"{name}.safetensors",
                                    mask=mask_cfg.out if use_mask else None, strategy=strategy,
                                    epochs=c.finetune_epochs, lr=c.finetune_lr, n_synth=c.n_train,
                                    crop_scale=c.crop_scale, seed=seed, **common)
                how = " ".join(([f"--mask {r}/mask.safetensors"] if use_mask else [])
                               + ([f"--strategy {strategy}"] if strategy else []))
                steps.run(f"finetune {name} seed {seed}",
                          f"aimfair finetune --model {r}/pretrain.safetensors --synth synth/metadata.jsonl "
                          f"--val data/val.csv {how} --n-synth {c.n_train} --epochs {c.finetune_epochs} "
                          f"--lr {c.finetune_lr} --crop-scale {c.crop_scale} --batch-size {c.batch_size} "
                          f"--out {r}/{name}.safetensors --seed {seed}",
                          cost["finetune"], not upstream_changed and is_done(ft.out, "finetune", ft), lambda: run_finetune(ft, progress=progress))
                return ft.out

            def evaluate(path: Path, data: Path = test):
                if data == test:
                    steps.commands.append(f"aimfair eval --model {_rel(path, out)} --data data/test.csv")
                metrics = _cached_eval(path, data, lambda: evaluate_checkpoint(model=path, data=data,
                                                                               **{**common, "batch_size": 256}))
                steps.outer.advance(cost["eval"], stage=f"eval {path.stem} seed {seed}")
                return metrics

            runs["pretrained"].metrics.append(evaluate(pre_cfg.out))
            runs["aimfair"].metrics.append(evaluate(finetune("aimfair", use_mask=True)))
            runs["aimfair"].detail.append(f"{len(mask.selected)}/{mask.total} tensors")
            runs["full"].metrics.append(evaluate(finetune("full", strategy="full")))
            runs["linear"].metrics.append(evaluate(finetune("linear", strategy="linear")))
            runs["random"].metrics.append(evaluate(finetune("random", strategy=f"random:{ratio:.4f}")))
            runs["opposite"].metrics.append(evaluate(finetune("opposite", strategy="opposite", use_mask=True)))
            runs["opposite"].detail.append(f"{len(opposite)}/{mask.total} tensors")
            # The best freeze is chosen on the validation set by worst-group accuracy — a choice that favours this
            # baseline, since it uses group labels that AIM-Fair never sees.
            best = None
            for block in c.freeze_blocks:
                path = finetune(f"freeze-{block}", strategy=f"freeze:{block}")
                score = evaluate(path, val).wst
                if best is None or score > best[0]:
                    best = (score, block, path)
            runs["freeze"].metrics.append(evaluate(best[2]))
            runs["freeze"].detail.append(f"freeze {best[1]}")
        result_runs = list(runs.values())
        write_resolved_config(out, "demo", c)
        _write_commands(out, steps.commands)
        report = write_report(out, c, result_runs, mask_summary, time.perf_counter() - started, reused=steps.reused)
    finally:
        steps.close()
    return DemoResult(out=out, config=c, strategies=result_runs, report=report,
                      seconds=time.perf_counter() - started, mask_summary=mask_summary)


def _per_block(selected: list[str], shapes: dict[str, Any]) -> str:
    """"stem 3/3, layer1 12/15, ..." — selected/total tensors per block."""
    from ..models import block_of

    chosen = set(selected)
    counts: dict[str, list[int]] = {}
    for name in shapes:
        row = counts.setdefault(block_of(name), [0, 0])
        row[0] += name in chosen
        row[1] += 1
    return ", ".join(f"{b} {k}/{n}" for b, (k, n) in counts.items())


def _shared(a: list[str], b: list[str]) -> int:
    return len(set(a) & set(b))


def _cached_eval(model: Path, data: Path, compute: Callable[[], Any]):
    """Metrics of `model` on `data`, kept in `<model stem>.<data stem>.json` and reused while it is newer than
    both the checkpoint and the manifest."""
    import json

    from ..fsio import atomic_write_text
    from ..metrics import GroupMetrics

    cache = model.with_name(f"{model.stem}.{data.stem}.json")
    if cache.is_file() and cache.stat().st_mtime_ns > max(model.stat().st_mtime_ns, data.stat().st_mtime_ns):
        saved = json.loads(cache.read_text())["cells"]
        return GroupMetrics(cells={tuple(map(int, k.split(","))): tuple(v) for k, v in saved.items()})
    metrics = compute()
    cells = {f"{y},{s}": list(v) for (y, s), v in metrics.cells.items()}  # (n, correct) per cell
    atomic_write_text(cache, json.dumps({"model": str(model), "data": str(data), "metrics": metrics.to_dict(),
                                         "cells": cells}, indent=1))
    return metrics


def _same_renderer(train: Path, *, size: int, seed: int) -> bool:
    """Whether the demo images on disk were drawn by this version of the renderer: the first training image is
    drawn again (a few milliseconds) and compared pixel for pixel, so an upgrade that changes the drawing
    makes the old data stale even though its options match."""
    import numpy as np
    from PIL import Image

    from ..data.demo import render_demo_image
    from ..manifest import read_manifest

    try:
        manifest = read_manifest(train)
        row = manifest.rows[0]
        on_disk = np.asarray(Image.open(manifest.image_path(row)).convert("RGB"))
    except Exception:  # unreadable or missing: not reusable, the data step renders it again
        return False
    index = int(Path(row["file_name"]).stem)
    drawn, _ = render_demo_image(seed=seed, split="train", index=index, target=int(row["target"]),
                                 protected=int(row["protected"]), size=size)
    same = on_disk.shape == np.asarray(drawn).shape and np.array_equal(on_disk, np.asarray(drawn))
    if not same:
        log.info("demo images were drawn by another renderer version; rendering them again")
    return same


def _drop_stale_synth(synth: Path, size: int) -> None:
    """The demo owns its synth folder: when it holds images from another image size or vocabulary, start over
    (the synth stage itself refuses to mix settings)."""
    import shutil

    import yaml

    from ..generators import make_generator

    saved = synth / "synth.config.yaml"
    if not saved.is_file():
        return
    settings = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("synth", {}).get("generator_settings")
    if settings is not None and settings != make_generator("procedural", size=size).describe():
        log.info("synthetic images were made with other settings; rendering them again")
        shutil.rmtree(synth)


def _write_commands(out: Path, commands: list[str]) -> Path:
    from ..fsio import atomic_write_text

    path = out / "commands.sh"
    atomic_write_text(path, "#!/usr/bin/env bash\n# The shell commands equivalent to this demo run.\n"
                      + "\n".join(commands) + "\n")
    path.chmod(0o755)
    return path


def _pm(agg: dict[str, Any], key: str) -> str:
    v = agg[key]
    if not isinstance(v, dict):
        return f"{100 * v:.2f}"
    if agg["n_runs"] == 1:
        return f"{100 * v['mean']:.2f}"
    return f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}"


def summary_rows(strategies: list[StrategyRuns], *, labels: bool = True) -> list[dict[str, str]]:
    """One row per strategy: mean ± std over seeds (percent; no ± for one seed). WST and STD are shown both ways
    when there are several seeds (mean of per-seed values, and from the mean cell accuracies as the paper does)."""
    rows = []
    for s in strategies:
        agg = s.aggregate()
        name = s.label if labels else s.name
        if agg["degenerate_runs"]:  # a constant predictor must never read as "perfectly fair"
            name += f" {DEGENERATE_MARK} ({agg['degenerate_runs']}/{agg['n_runs']} seeds)"
        row = {"strategy": name, "ACC": _pm(agg, "acc"), "WST": _pm(agg, "wst_mean_of_runs")}
        if agg["n_runs"] > 1:
            row["WST (min of mean cells)"] = _pm(agg, "wst_of_mean_cells")
        row.update({"EO": _pm(agg, "eo"), "EO worst": _pm(agg, "eo_worst"), "STD": _pm(agg, "std")})
        if agg["n_runs"] > 1:
            row["STD (std of mean cells)"] = _pm(agg, "std_of_mean_cells")
        rows.append(row)
    return rows


def paired_vs_reference(strategies: list[StrategyRuns]) -> dict[str, dict[str, Any]]:
    """`metrics.paired` of every strategy but the reference against full fine-tuning, seed by seed."""
    from ..metrics import paired

    ref = next(s for s in strategies if s.name == REFERENCE)
    return {s.name: paired(s.metrics, ref.metrics) for s in strategies if s.name != REFERENCE}


def paired_rows(strategies: list[StrategyRuns], *, labels: bool = True) -> list[dict[str, str]]:
    """One row per strategy: for ACC, WST, EO and STD, "mean diff [95 % CI] wins/n" against full fine-tuning, in
    percentage points ("—" for the interval with one seed)."""
    from ..metrics import PAIRED, format_paired

    comparisons = paired_vs_reference(strategies)
    rows = []
    for s in strategies:
        if s.name not in comparisons:
            continue
        row = {"strategy": s.label if labels else s.name}
        for key, _ in PAIRED:
            t = format_paired(comparisons[s.name][key])
            row[key.upper()] = f"{t['diff']} {t['ci95']} {t['wins']}"
        rows.append(row)
    return rows


def distinguishable_text(strategies: list[StrategyRuns]) -> str:
    """In words: which paired differences against full fine-tuning have a 95 % interval that excludes 0."""
    from ..metrics import PAIRED, excludes_zero

    comparisons = paired_vs_reference(strategies)
    n = len(next(s for s in strategies if s.name == REFERENCE).metrics)
    if n == 1:
        return ("With one seed there is no interval, so no difference can be told from seed-to-seed noise; "
                "run more seeds (--seeds) for that.")
    found = []
    for s in strategies:
        for key, better in PAIRED:
            entry = comparisons.get(s.name, {}).get(key)
            if entry is not None and excludes_zero(entry):
                verdict = "better" if entry["mean_diff"] * better > 0 else "worse"
                found.append(f"{s.label}: {key.upper()} {100 * entry['mean_diff']:+.2f} points ({verdict})")
    if not found:
        return (f"At {n} seeds no difference against full fine-tuning is distinguishable from zero: every 95 % "
                "interval contains 0.")
    return (f"At {n} seeds these differences against full fine-tuning are distinguishable from zero (95 % interval "
            "excludes 0): " + "; ".join(found) + ". Every other interval contains 0.")


def _training_curves(out: Path, strategies: list[StrategyRuns]) -> list[str]:
    """Validation accuracy per epoch of seed 0's pretraining and fine-tunings, from their history files."""
    import csv

    from ..plots import line_chart

    series = {}
    for name in ["pretrain", *(s.name for s in strategies if s.name not in ("pretrained", "freeze"))]:
        path = out / "seed0" / f"{name}.history.csv"
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as fh:
                series[name] = [100 * float(r["val_acc"]) for r in csv.DictReader(fh) if r["val_acc"]]
    if not series:
        return []
    line_chart(out / "curves.png", title="Seed 0: validation accuracy per epoch (from <checkpoint>.history.csv)",
               series=series, ylabel="val acc %")
    return ["## Training curves", "", "![training curves](curves.png)", ""]


def _sample_grid(out: Path, task: Any, per_row: int = 8) -> list[str]:
    """Real training images against synthetic ones, one pair of rows per group: the domain gap at a glance."""
    from ..manifest import read_manifest
    from ..plots import image_grid

    real, synth = out / "data" / "train.csv", out / "synth" / "metadata.jsonl"
    if not (real.is_file() and synth.is_file()):
        return []
    real_m, synth_m = read_manifest(real), read_manifest(synth)
    rows = []
    for g in task.groups:
        def first(m):
            return [m.image_path(r) for r in m.rows
                    if int(r["target"]) == g.target and int(r["protected"]) == g.protected][:per_row]
        name = task.cell_name(g.target, g.protected)
        rows += [(f"real · {name}", first(real_m)), (f"synthetic · {name}", first(synth_m))]
    image_grid(out / "samples.png", rows)
    return ["## Real and synthetic images", "",
            "The first training images of each group, real (rendered photo style) above synthetic (procedural, "
            "from the contextual prompts): the domain gap the mask's Δ1 measures.", "",
            "![real and synthetic images per group](samples.png)", ""]


def write_report(out: Path, c: DemoConfig, strategies: list[StrategyRuns], mask_summary: list[str],
                 seconds: float, *, reused: int = 0) -> Path:
    from ..bias import CELLS
    from ..fsio import atomic_write_text
    from ..metrics import cell_key
    from ..plots import bar_chart, bar_panels
    from ..tasks import get_task

    rows = summary_rows(strategies)
    prows = paired_rows(strategies)
    aggs = {s.name: s.aggregate() for s in strategies}
    task = get_task(TASK)

    def panel(title: str, keys: dict[str, str]) -> dict[str, Any]:
        return dict(title=title, groups=list(keys),
                    series={s.name: [100 * aggs[s.name][k]["mean"] for k in keys.values()] for s in strategies},
                    errors={s.name: [100 * aggs[s.name][k]["std"] for k in keys.values()] for s in strategies})

    bar_panels(out / "metrics.png", [
        panel("Higher is better (mean ± std over seeds)", {"ACC": "acc", "WST": "wst_mean_of_runs"}),
        panel("Lower is better (mean ± std over seeds)", {"EO": "eo", "STD": "std"}),
    ], size=(620, 420))
    cell_names = [task.cell_name(y, s) for y, s in CELLS]
    bar_chart(out / "cells.png", title="Real test set: accuracy per cell (target · protected)", groups=cell_names,
              series={s.name: [100 * aggs[s.name]["cells"][cell_key(y, p)]["acc"] for y, p in CELLS]
                      for s in strategies}, line=50.0)
    figures = _training_curves(out, strategies) + _sample_grid(out, task)
    cols = list(rows[0])
    lines = [
        "# aimfair demo report", "",
        f"Offline benchmark (task {TASK}: target Smiling, protected Male, train bias 1:9), {c.seeds} seed(s), "
        f"{c.n_train} real training images at {c.size} px; wall time {seconds / 60:.1f} min"
        + (f" ({reused} steps reused from an earlier run, their time not counted)." if reused else "."), "",
        "Metrics on the real test set in percent, mean ± sample std over seeds. WST and STD are shown as the mean "
        "of each seed's value and, with several seeds, from the mean cell accuracies as the paper's released code "
        "does (WST = lowest mean cell, STD = population std of the mean cells).", "",
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
        *("| " + " | ".join(r[c_] for c_ in cols) + " |" for r in rows), "",
        "## Paired against full fine-tuning", "",
        "Every strategy ran on the same seeds as full fine-tuning, so each seed gives one difference (strategy − full "
        "fine-tuning, percentage points). Each cell: mean difference, its 95 % interval (Student t over seeds, "
        "n − 1 degrees of freedom; — with one seed), and the seeds on which the strategy beat full fine-tuning "
        "(higher ACC and WST, lower EO and STD are better).", "",
        "| " + " | ".join(prows[0]) + " |", "|" + "---|" * len(prows[0]),
        *("| " + " | ".join(r.values()) + " |" for r in prows), "",
        distinguishable_text(strategies), "",
        "![metrics per strategy](metrics.png)", "", *figures, "## Accuracy per cell", "",
        "| strategy | " + " | ".join(cell_names) + " |", "|---|" + "---|" * len(cell_names),
        *(f"| {s.label} | " + " | ".join(f"{100 * aggs[s.name]['cells'][cell_key(y, p)]['acc']:.2f}"
                                          for y, p in CELLS) + " |" for s in strategies), "",
        "![accuracy per cell](cells.png)", "", "The dashed line is chance (50 %).", "",
        "## What was fine-tuned", "",
        *(f"- {m}" for m in mask_summary),
        *(f"- {s.label}: " + "; ".join(s.detail) for s in strategies if s.detail),
        f"- The best single-block freeze is chosen per seed among {', '.join(c.freeze_blocks)} by worst-group accuracy "
        "on the validation set (this uses group labels AIM-Fair does not need, so it flatters the baseline).",
        "- The opposite criterion, a control the paper lacks, fine-tunes at the same k the k tensors *most* sensitive "
        "to the domain gap ∩ the k *least* sensitive to the bias (`finetune --mask mask.safetensors --strategy "
        "opposite`). Where it does as well as AIM-Fair, the gradient ranking adds nothing beyond how many tensors "
        "are updated.", "",
        "## Where the selection comes from", "",
        "One point per parameter tensor: Δ1 = mean |g_R − g_S1| (sensitivity to the real/synthetic domain gap) "
        "against Δ2 = mean |g_S1 − g_S2| (sensitivity to the bias). K1 = the k tensors left of the vertical line "
        "(smallest Δ1), K2 = the k above the horizontal line (largest Δ2); filled points are selected (K1 ∩ K2, the "
        "shaded corner). The legend counts the selected tensors per block.", "",
        *(f"![selection, seed {i}](selection-seed{i}.png)" for i in range(c.seeds)), "",
        "## Reproduce", "",
        "Every step above is one `aimfair` command; `commands.sh` in this folder lists them in order.", "",
        "```sh", *(out / "commands.sh").read_text().splitlines()[2:], "```", "",
    ]
    if any(a["degenerate_runs"] for a in aggs.values()):
        lines[lines.index("![metrics per strategy](metrics.png)")] = f"{MSG_DEGENERATE_NOTE}.\n\n![metrics per strategy](metrics.png)"
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
