"""`aimfair eval`: score checkpoints on a real test manifest and compute the per-cell fairness metrics.

The test manifest needs `protected` on every row and at least one image in every (target, protected) cell.
Several checkpoints (e.g. one per seed) are aggregated with `metrics.aggregate`.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError, UsageError
from ..fsio import atomic_open, check_outputs, check_suffix
from ..manifest import Manifest, read_manifest
from ..metrics import CELLS, GroupMetrics, aggregate, group_metrics
from ..progress import NULL, Progress

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("file_name", "target", "protected", "score", "pred")
PREDICTION_FORMATS = (".csv", ".jsonl")
_GLOB_CHARS = "*?["

MSG_EMPTY_CELL = "{path}: no image in cell (target={y}, protected={s}); evaluation needs every (target, protected) cell"
MSG_NO_MATCH = "no checkpoint matches '{pattern}'"
MSG_NO_MODELS = "no checkpoint given (use --model, once or more, or a glob such as 'runs/*/finetune.safetensors')"
MSG_PREDICTIONS_MANY = "--predictions takes a single --model; got {n} checkpoints"
MSG_POSITIVE = "--{name} must be at least {low}; got {value}"


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


def load_test_manifest(data: str | os.PathLike) -> Manifest:
    """Read a test manifest: protected required on every row, every cell non-empty."""
    manifest = read_manifest(data, require_protected=True)
    present = {(r["target"], r["protected"]) for r in manifest.rows}
    for y, s in CELLS:
        if (y, s) not in present:
            raise DataError(MSG_EMPTY_CELL.format(path=manifest.path, y=y, s=s))
    return manifest


def _check_sizes(batch_size: int, workers: int) -> None:
    for name, value, low in (("batch-size", batch_size, 1), ("workers", workers, 0)):
        if value < low:
            raise UsageError(MSG_POSITIVE.format(name=name, low=low, value=value))


def _score(model_path: Path, manifest: Manifest, *, batch_size: int, workers: int, device: Any,
           progress: Progress) -> Any:
    """Predictions of one checkpoint over the manifest (resize to the checkpoint's image size)."""
    from ..checkpoint import load_checkpoint
    from ..data.images import ImageDataset, build_transform, make_loader
    from ..training import predict

    model, meta = load_checkpoint(model_path, device=device)
    transform = build_transform(int(meta["image_size"]), train=False, mean=meta["mean"], std=meta["std"])
    loader = make_loader(ImageDataset(manifest, transform), batch_size=batch_size, shuffle=False, workers=workers,
                         seed=0, pin_memory=device.type == "cuda")
    with progress.task(f"eval {model_path.name}", total=len(loader)) as task:
        return predict(model, loader, device=device, task=task, channels_last=device.type == "cuda")


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


def evaluate_many(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    *,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    predictions: str | os.PathLike | None = None,
    progress: Progress = NULL,
) -> tuple[list[tuple[Path, GroupMetrics]], dict[str, Any]]:
    """Evaluate each checkpoint on `data`; returns the per-run metrics and their aggregate (mean ± sample std,
    WST both as mean of runs and as min of mean cells). `models` may hold glob patterns."""
    from ..checkpoint import read_meta
    from ..data.images import check_images
    from ..models import resolve_device

    paths = expand_models(models)
    if predictions is not None and len(paths) > 1:
        raise UsageError(MSG_PREDICTIONS_MANY.format(n=len(paths)))
    _check_sizes(batch_size, workers)
    if predictions is not None:
        check_suffix(predictions, PREDICTION_FORMATS, "--predictions")
        check_outputs({"--predictions": predictions}, {"--data": data, "--model": paths})
    for p in paths:
        read_meta(p)  # every checkpoint exists and is safetensors before any work starts
    manifest = load_test_manifest(data)
    dev = resolve_device(device)
    check_images(manifest, progress=progress)
    runs: list[tuple[Path, GroupMetrics]] = []
    for p in paths:
        preds = _score(p, manifest, batch_size=batch_size, workers=workers, device=dev, progress=progress)
        metrics = group_metrics(preds.targets, preds.protected, preds.preds)
        log.info("%s on %s: acc %.4f  wst %.4f  eo %.4f", p, Path(data).name, metrics.acc, metrics.wst, metrics.eo)
        if predictions is not None:
            write_predictions(predictions, manifest, preds)
        runs.append((p, metrics))
    return runs, aggregate([m for _, m in runs])


def evaluate_checkpoint(
    *,
    model: str | os.PathLike,
    data: str | os.PathLike,
    batch_size: int = 256,
    workers: int = 2,
    device: str = "auto",
    predictions: str | os.PathLike | None = None,
    progress: Progress = NULL,
) -> GroupMetrics:
    """Metrics of one checkpoint on a test manifest; `predictions` also writes the per-image CSV."""
    if any(ch in os.fspath(model) for ch in _GLOB_CHARS):
        raise UsageError("evaluate_checkpoint takes one path, not a pattern; use evaluate_many")
    runs, _ = evaluate_many([model], data, batch_size=batch_size, workers=workers, device=device,
                            predictions=predictions, progress=progress)
    return runs[0][1]
