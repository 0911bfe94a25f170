"""`aimfair eval`: score checkpoints on a real test manifest and compute the per-cell fairness metrics.

The test manifest needs `protected` on every row and at least one image in every (target, protected) cell.
Several checkpoints (e.g. one per seed) are aggregated with `metrics.aggregate`; checkpoints of another strategy on
the same seeds (`references`) are compared with them pair by pair (`metrics.paired`).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..core import dist, layout
from ..core.errors import DataError, UsageError
from ..core.fsio import atomic_open, check_outputs, check_suffix
from ..core.manifest import Manifest, read_manifest
from ..core.options import ALLOW_DUPLICATES_HELP, DEVICE_HELP, MAX_BATCH, MAX_WORKERS, option
from ..core.progress import NULL, Progress
from ..fairness.metrics import CELLS, GroupMetrics, aggregate, group_metrics, paired

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("file_name", "target", "protected", "score", "pred")
PREDICTION_FORMATS = (".csv", ".jsonl")
_GLOB_CHARS = "*?["

MSG_EMPTY_CELL = "{path}: no image in cell (target={y}, protected={s}); evaluation needs every (target, protected) cell"
MSG_NO_MATCH = "no checkpoint matches '{pattern}'"
MSG_NO_MODELS = "no checkpoint given (use --model, once or more, or a glob such as 'runs/*/finetune.safetensors')"
MSG_PREDICTIONS_MANY = "--predictions takes a single --model; got {n} checkpoints"
MSG_POSITIVE = "--{name} must be at least {low}; got {value}"
MSG_REFERENCE_COUNT = ("--model gives {n} checkpoint(s) and --reference {m}; a paired comparison needs the same "
                       "number (paired by position, globs sorted)")


@dataclass
class EvalConfig:
    """Options of `aimfair eval` (flags and the `eval:` section of aimfair.yaml)."""

    model: list[str] = option((str(layout.FINETUNE),), short=("-m",),
                              help="Checkpoint (.safetensors); repeat it or pass a quoted glob such as "
                              "'runs/seed*/finetune.safetensors' to aggregate several.")
    data: Path = option(layout.TEST, help="Test manifest with target and protected on every row.", path="file")
    predictions: Path | None = option(None, path="file", help="Write one row per image: "
                                      "file_name,target,protected,score,pred, as CSV (.csv) or JSON lines (.jsonl); "
                                      "one --model only.")
    batch_size: int = option(256, help="Images per batch.", min=1, max=MAX_BATCH)
    workers: int = option(2, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    device: str = option("auto", help=DEVICE_HELP)
    reference: list[str] | None = option(None, short=("-r",),
                                         help="Checkpoints of another strategy on the same seeds (repeat it or pass a "
                                         "quoted glob), as many as --model and paired with them by position (globs "
                                         "sorted): adds the mean difference, its 95 % CI (Student t over seeds) and the "
                                         "wins for ACC, WST, EO and STD.")
    allow_duplicates: bool = option(False, help=ALLOW_DUPLICATES_HELP)
    out: Path | None = option(None, short=("-o",), path="file", help="Also write what --json prints to this JSON "
                              "file (atomically; the study pipeline reads its runs from it).")
    plot: Path | None = option(None, path="file", help="Also draw a PNG: accuracy per cell for every --model (and "
                               "--reference) with the 50 % chance line, and the first model's score histogram per "
                               "group.")


def expand_models(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand glob patterns (sorted, duplicates dropped); plain paths pass through unchanged."""
    out: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if any(ch in text for ch in _GLOB_CHARS) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise UsageError(MSG_NO_MATCH.format(pattern=text))
            paths = [Path(m) for m in matches]
        else:
            paths = [Path(text)]
        out.extend(p for p in paths if p not in out)
    if not out:
        raise UsageError(MSG_NO_MODELS)
    return out


def load_test_manifest(data: str | os.PathLike, *, allow_duplicates: bool = False) -> Manifest:
    """Read a test manifest: protected required on every row, every cell non-empty, no image listed twice
    (unless `allow_duplicates`: then each row counts, with a warning)."""
    manifest = read_manifest(data, require_protected=True, allow_duplicates=allow_duplicates)
    present = {(r["target"], r["protected"]) for r in manifest.rows}
    for y, s in CELLS:
        if (y, s) not in present:
            raise DataError(MSG_EMPTY_CELL.format(path=manifest.path, y=y, s=s))
    return manifest


def _check_sizes(batch_size: int, workers: int) -> None:
    for name, value, low in (("batch-size", batch_size, 1), ("workers", workers, 0)):
        if value < low:
            raise UsageError(MSG_POSITIVE.format(name=name, low=low, value=value))
    dist.local_batch(batch_size)  # under torchrun the global batch must split evenly across ranks


def _score(model_path: Path, manifest: Manifest, *, batch_size: int, workers: int, device: Any,
           progress: Progress) -> Any:
    """Predictions of one checkpoint over the manifest (resize to the checkpoint's image size)."""
    from ..training.checkpoint import load_checkpoint
    from ..training.images import ImageDataset, build_transform, make_loader
    from ..training.loop import predict

    model, meta = load_checkpoint(model_path, device=device)
    transform = build_transform(int(meta["image_size"]), train=False, mean=meta["mean"], std=meta["std"])
    loader = make_loader(ImageDataset(manifest, transform), batch_size=batch_size, shuffle=False, workers=workers,
                         seed=0, pin_memory=device.type == "cuda")
    with progress.task(f"eval {model_path.name}", total=len(loader)) as task:
        return predict(model, loader, device=device, task=task, channels_last=device.type == "cuda", what=str(model_path))


def write_predictions(path: str | os.PathLike, manifest: Manifest, preds: Any) -> Path:
    """One row per image: file_name, target, protected, score (sigmoid), pred (0/1); CSV, or JSON lines when
    `path` ends in .jsonl. Atomic."""
    import csv
    import json

    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as fh:
        jsonl = path.suffix.lower() == ".jsonl"
        writer = csv.writer(fh, lineterminator="\n")
        if not jsonl:
            writer.writerow(PREDICTION_COLUMNS)
        for i, score, y, s, p in zip(preds.indices, preds.scores, preds.targets, preds.protected, preds.preds):
            row = [manifest.rows[int(i)]["file_name"], int(y), int(s), round(float(score), 6), int(p)]
            if jsonl:
                fh.write(json.dumps(dict(zip(PREDICTION_COLUMNS, row)), ensure_ascii=False) + "\n")
            else:
                writer.writerow([*row[:3], f"{row[3]:.6f}", row[4]])
    return path


@dataclass
class Comparison:
    """`runs` against `reference_runs` of another strategy on the same seeds, paired by position."""

    runs: list[tuple[Path, GroupMetrics]]
    aggregate: dict[str, Any]
    reference_runs: list[tuple[Path, GroupMetrics]]
    reference_aggregate: dict[str, Any]
    paired: dict[str, Any]  # metrics.paired: per metric mean_diff, ci95, wins, n


def _check_predictions(predictions: str | os.PathLike | None, data: str | os.PathLike, models: list[Path]) -> None:
    """A predictions file has a known format and never overwrites the test manifest or a checkpoint."""
    if predictions is not None:
        check_suffix(predictions, PREDICTION_FORMATS, "--predictions")
        check_outputs({"--predictions": predictions}, {"--data": data, "--model": models})


def _check_plot(plot: str | os.PathLike | None, data: str | os.PathLike, models: list[Path]) -> None:
    if plot is not None:
        check_suffix(plot, (".png",), "--plot")
        check_outputs({"--plot": plot}, {"--data": data, "--model": models})


def _cell_names(model: Path) -> list[str]:
    """The cells in words when the checkpoint names attributes of a known task, else y=…/s=…."""
    from ..core.tasks import TASKS
    from ..training.checkpoint import read_meta

    meta = read_meta(model)
    for task in TASKS.values():
        if (task.target.name, task.protected.name) == (meta.get("target"), meta.get("protected")):
            return [task.cell_name(y, s) for y, s in CELLS]
    return [f"y={y} · s={s}" for y, s in CELLS]


def plot_eval(path: str | os.PathLike, runs: list[tuple[Path, GroupMetrics]], preds: Any, first: Path) -> Path:
    """One PNG: accuracy per cell for every run (the dashed line is chance, 50 %) above the first model's score
    histogram per cell (the dashed line is the 0.5 decision threshold)."""
    import tempfile

    from PIL import Image

    from ..core.fsio import atomic_path
    from ..fairness.plots import bar_chart, histograms

    names = _cell_names(first)
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        bars = bar_chart(Path(tmp) / "bars.png", title="Accuracy per cell (target · protected)", groups=names,
                         series={_short(p): [100 * m.cell_acc(y, s) for y, s in CELLS] for p, m in runs}, line=50.0)
        hist = histograms(Path(tmp) / "hist.png", title=f"{first.name}: score per cell (sigmoid of the logit)",
                          groups={name: preds.scores[(preds.targets == y) & (preds.protected == s)]
                                  for name, (y, s) in zip(names, CELLS)})
        with Image.open(bars) as a, Image.open(hist) as b:
            out = Image.new("RGB", (max(a.width, b.width), a.height + b.height), "white")
            out.paste(a.convert("RGB"), (0, 0))
            out.paste(b.convert("RGB"), (0, a.height))
    with atomic_path(path) as tmp_path:
        out.save(tmp_path, format="PNG")
    return path


def _short(path: Path) -> str:
    return "/".join(path.parts[-2:]) if len(path.parts) > 1 else path.name


def _prepare(paths: list[Path], data: str | os.PathLike, *, batch_size: int, workers: int, device: str,
             allow_duplicates: bool, progress: Progress) -> tuple[Manifest, Any]:
    """Every check that can fail cheaply, before any checkpoint is scored."""
    from ..training.checkpoint import read_meta
    from ..training.images import check_images
    from ..training.models import resolve_device

    _check_sizes(batch_size, workers)
    for p in paths:
        read_meta(p)  # every checkpoint exists and is safetensors before any work starts
    manifest = load_test_manifest(data, allow_duplicates=allow_duplicates)
    dev = resolve_device(device)
    check_images(manifest, progress=progress)
    return manifest, dev


def _score_all(paths: list[Path], manifest: Manifest, data: str | os.PathLike, *, batch_size: int, workers: int,
               device: Any, predictions: str | os.PathLike | None, progress: Progress,
               scores: list | None = None) -> list[tuple[Path, GroupMetrics]]:
    """Metrics per checkpoint; `scores`, if given, receives each checkpoint's Predictions."""
    runs: list[tuple[Path, GroupMetrics]] = []
    for p in paths:
        preds = _score(p, manifest, batch_size=batch_size, workers=workers, device=device, progress=progress)
        if scores is not None:
            scores.append(preds)
        metrics = group_metrics(preds.targets, preds.protected, preds.preds)
        log.info("%s on %s: acc %.4f  wst %.4f  eo %.4f", p, Path(data).name, metrics.acc, metrics.wst, metrics.eo)
        if predictions is not None and dist.is_main():  # every rank holds all predictions; one writes
            write_predictions(predictions, manifest, preds)
        dist.barrier()
        runs.append((p, metrics))
    return runs


def evaluate_many(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    *,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    predictions: str | os.PathLike | None = None,
    allow_duplicates: bool = False,  # --allow-duplicates: keep rows that repeat an image (warn instead of refusing)
    progress: Progress = NULL,
    plot: str | os.PathLike | None = None,
) -> tuple[list[tuple[Path, GroupMetrics]], dict[str, Any]]:
    """Evaluate each checkpoint on `data`; returns the per-run metrics and their aggregate (mean ± sample std,
    WST and STD also from the mean cells). `models` may hold glob patterns. `plot`: see plot_eval."""
    paths = expand_models(models)
    if predictions is not None and len(paths) > 1:
        raise UsageError(MSG_PREDICTIONS_MANY.format(n=len(paths)))
    _check_predictions(predictions, data, paths)
    _check_plot(plot, data, paths)
    manifest, dev = _prepare(paths, data, batch_size=batch_size, workers=workers, device=device,
                             allow_duplicates=allow_duplicates, progress=progress)
    scores: list = []
    runs = _score_all(paths, manifest, data, batch_size=batch_size, workers=workers, device=dev,
                      predictions=predictions, progress=progress, scores=scores)
    if plot is not None and dist.is_main():
        plot_eval(plot, runs, scores[0], paths[0])
    return runs, aggregate([m for _, m in runs])


def compare_to_reference(
    models: Sequence[str | os.PathLike],
    references: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    *,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    predictions: str | os.PathLike | None = None,
    allow_duplicates: bool = False,
    progress: Progress = NULL,
    plot: str | os.PathLike | None = None,
) -> Comparison:
    """Evaluate `models` and `references` (each a list of paths or glob patterns, globs sorted) on `data` and pair
    them by position: model i and reference i should share a seed. Both lists must hold as many checkpoints.
    `predictions` is written for the single model, never for the reference."""
    paths, ref_paths = expand_models(models), expand_models(references)
    if len(paths) != len(ref_paths):
        raise UsageError(MSG_REFERENCE_COUNT.format(n=len(paths), m=len(ref_paths)))
    if predictions is not None and len(paths) > 1:
        raise UsageError(MSG_PREDICTIONS_MANY.format(n=len(paths)))
    _check_predictions(predictions, data, paths + ref_paths)
    _check_plot(plot, data, paths + ref_paths)
    manifest, dev = _prepare(paths + ref_paths, data, batch_size=batch_size, workers=workers, device=device,
                             allow_duplicates=allow_duplicates, progress=progress)
    kw = dict(batch_size=batch_size, workers=workers, device=dev, progress=progress)
    scores: list = []
    runs = _score_all(paths, manifest, data, predictions=predictions, scores=scores, **kw)
    ref_runs = _score_all(ref_paths, manifest, data, predictions=None, **kw)
    if plot is not None and dist.is_main():
        plot_eval(plot, runs + [(Path(f"reference: {p}"), m) for p, m in ref_runs], scores[0], paths[0])
    a, b = [m for _, m in runs], [m for _, m in ref_runs]
    return Comparison(runs=runs, aggregate=aggregate(a), reference_runs=ref_runs, reference_aggregate=aggregate(b),
                      paired=paired(a, b))


def evaluate_checkpoint(
    *,
    model: str | os.PathLike,
    data: str | os.PathLike,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    predictions: str | os.PathLike | None = None,
    allow_duplicates: bool = False,
    progress: Progress = NULL,
) -> GroupMetrics:
    """Metrics of one checkpoint on a test manifest; `predictions` also writes the per-image CSV."""
    if any(ch in os.fspath(model) for ch in _GLOB_CHARS):
        raise UsageError("evaluate_checkpoint takes one path, not a pattern; use evaluate_many")
    runs, _ = evaluate_many([model], data, batch_size=batch_size, workers=workers, device=device,
                            predictions=predictions, allow_duplicates=allow_duplicates, progress=progress)
    return runs[0][1]


@dataclass
class EvalResult:
    """What `aimfair eval` computed: the runs and their aggregate, and the comparison when --reference was given."""

    runs: list[tuple[Path, GroupMetrics]]
    aggregate: dict[str, Any]
    comparison: Comparison | None = None

    def to_dict(self) -> dict[str, Any]:
        """What `--json` prints: one run's metrics alone, several runs with their aggregate, and the reference and
        the paired differences with --reference."""
        def listed(runs: list[tuple[Path, GroupMetrics]]) -> list[dict[str, Any]]:
            return [{"model": str(p), **m.to_dict()} for p, m in runs]

        cmp = self.comparison
        if cmp is not None:
            return {"runs": listed(cmp.runs), "aggregate": cmp.aggregate,
                    "reference": {"runs": listed(cmp.reference_runs), "aggregate": cmp.reference_aggregate},
                    "paired": cmp.paired}
        if len(self.runs) == 1:
            return self.runs[0][1].to_dict()
        return {"runs": listed(self.runs), "aggregate": self.aggregate}


def run_eval(cfg: EvalConfig, *, progress: Progress = NULL) -> EvalResult:
    """`aimfair eval` from its options; writes `cfg.out` (the --json payload) when given."""
    import json

    from ..core.fsio import atomic_write_text

    if cfg.out is not None:
        check_suffix(cfg.out, (".json",), "--out")
    # every output (--out, --predictions, --plot, the --log-file) against every input, even with no --out
    check_outputs({"--out": cfg.out, "--predictions": cfg.predictions, "--plot": cfg.plot},
                  {"--data": cfg.data, "--model": list(cfg.model), "--reference": list(cfg.reference or [])})
    kw = dict(batch_size=cfg.batch_size, workers=cfg.workers, device=cfg.device, predictions=cfg.predictions,
              allow_duplicates=cfg.allow_duplicates, progress=progress, plot=cfg.plot)
    if cfg.reference:
        cmp = compare_to_reference(cfg.model, cfg.reference, cfg.data, **kw)
        result = EvalResult(runs=cmp.runs, aggregate=cmp.aggregate, comparison=cmp)
    else:
        result = EvalResult(*evaluate_many(cfg.model, cfg.data, **kw))
    if cfg.out is not None and dist.is_main():
        atomic_write_text(cfg.out, json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def read_eval_runs(path: str | os.PathLike) -> list[GroupMetrics]:
    """The per-run metrics of a file written by `eval --out` (one run, or several)."""
    import json

    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    runs = payload["runs"] if "runs" in payload else [payload]
    return [GroupMetrics.from_dict(r) for r in runs]
