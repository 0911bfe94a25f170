"""What the dataset importers share: the import result, option checks, manifest naming and the all-or-nothing
writer of `<out>/{train,val,test}.csv` with the resolved config (used by `data celeba`, `data utkface` and
`data demo`)."""

from __future__ import annotations

import difflib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import DataError, UsageError
from ..fairness.cells import CELLS

log = logging.getLogger(__name__)

MSG_ROOT_NOT_FOUND = "dataset folder not found: {root}"
MSG_SAME_ATTRIBUTE = "target and protected must be different attributes, got '{name}' for both"
MSG_OUT_NOT_DIR = "output folder is a file: {out}"


def close_names(name: str, names: Sequence[str], n: int = 3) -> str:
    """The n names most like `name`, ignoring case, best first (always n, so a bad guess still helps)."""
    lower = {x.lower(): x for x in names}
    best = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.0)
    return ", ".join(lower[b] for b in best)



@dataclass
class ImportResult:
    """What an import wrote: one manifest per split, its cell counts, and warnings for the user."""

    out: Path
    paths: dict[str, Path]  # split -> manifest
    counts: dict[str, dict[tuple[int, int], int]]  # split -> (target, protected) -> images
    config_path: Path
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "splits": {
                split: {
                    "path": str(self.paths[split]),
                    "n": sum(self.counts[split].values()),
                    "cells": {f"{t},{p}": self.counts[split][(t, p)] for t, p in CELLS},
                }
                for split in self.paths
            },
            "config": str(self.config_path),
            "warnings": list(self.warnings),
        }


def check_root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DataError(MSG_ROOT_NOT_FOUND.format(root=root))
    return path


def check_distinct(target: str, protected: str) -> None:
    if target == protected:
        raise UsageError(MSG_SAME_ATTRIBUTE.format(name=target))


def manifest_file_name(image: str | os.PathLike, *, out: str | os.PathLike, root: str | os.PathLike) -> str:
    """How a manifest in `out` names `image`.

    Absolute by default, so the manifests keep working when the output folder moves. When `out` lies inside
    the dataset folder, relative to `out` instead, so moving the whole dataset folder keeps them working.
    abspath, not resolve: a symlinked dataset folder keeps the name the user gave it.
    """
    image_abs, out_abs, root_abs = (os.path.abspath(p) for p in (image, out, root))
    if os.path.commonpath([out_abs, root_abs]) == root_abs:
        return Path(os.path.relpath(image_abs, out_abs)).as_posix()
    return image_abs


def cell_counts(rows: Sequence[dict[str, Any]]) -> dict[tuple[int, int], int]:
    c = Counter((r["target"], r["protected"]) for r in rows)
    return {cell: c[cell] for cell in CELLS}


def check_split_outputs(out: str | os.PathLike, stage: str, inputs: dict[str, Any]) -> None:
    """Before any work: `<out>/{train,val,test}.csv` and the resolved config are no input and can be written."""
    from ..core.config import config_path_for
    from ..core.fsio import check_outputs

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(MSG_OUT_NOT_DIR.format(out=out))
    outputs: dict[str, Any] = {f"--out {split} manifest": out / f"{split}.csv" for split in ("train", "val", "test")}
    outputs["the resolved config"] = config_path_for(out, stage)
    check_outputs(outputs, inputs, folders={"--out": out})


def write_splits(
    out: str | os.PathLike,
    splits: dict[str, list[dict[str, Any]]],
    *,
    stage: str,
    config: dict[str, Any],
    warnings: Sequence[str] = (),
) -> ImportResult:
    """Write `<out>/<split>.csv` for every split and `<out>/<stage>.config.yaml`, all or nothing.

    Every manifest is first written under a temporary name; only when all are written do they take their
    final names, so a failure never leaves a train.csv without its val.csv.
    """
    from ..core.config import write_resolved_config
    from ..core.manifest import write_manifest

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(MSG_OUT_NOT_DIR.format(out=out))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    columns = ("file_name", "target", "protected", "split")
    staged: dict[str, Path] = {}
    placed: list[Path] = []
    final = {split: out / f"{split}.csv" for split in splits}
    try:
        for split, rows in splits.items():
            staged[split] = write_manifest(out / f".{split}.partial.csv", rows, columns=columns)
        for split, tmp in staged.items():
            os.replace(tmp, final[split])
            placed.append(final[split])
        config_path = write_resolved_config(out, stage, config)
    except BaseException:
        for path in (*staged.values(), *placed):
            path.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    counts = {split: cell_counts(rows) for split, rows in splits.items()}
    for split, path in final.items():
        log.debug("wrote %s (%d images)", path, sum(counts[split].values()))
    return ImportResult(out=out, paths=final, counts=counts, config_path=config_path, warnings=list(warnings))
