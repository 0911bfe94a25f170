"""`aimfair data celeba` and `aimfair data utkface`: real datasets -> train/val/test manifests.

Options are the fields of `CelebaConfig` / `UtkfaceConfig` (flags > the `data_celeba` / `data_utkface` section of
./aimfair.yaml or --config > defaults). The output folder defaults to the run folder's `data/`, where
`pretrain`, `mask`, `finetune` and `eval` look for the manifests.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ..data.celeba import STAGE as CELEBA_STAGE
from ..data.celeba import CelebaConfig, ImportResult, import_celeba
from ..data.utkface import STAGE as UTKFACE_STAGE
from ..data.utkface import UtkfaceConfig, import_utkface
from ..fairness.cells import CELLS
from .console import err, make_progress, out
from .options import command


@command(CELEBA_STAGE, CelebaConfig)
def celeba(cfg: CelebaConfig, *, json_out: bool) -> None:
    """Write a biased train subset with exact cell quotas and the official val/test partitions of CelebA."""
    result = import_celeba(root=cfg.root, out=cfg.out, config=cfg, progress=make_progress())
    report(result, cfg.target, cfg.protected, json_out)


@command(UTKFACE_STAGE, UtkfaceConfig)
def utkface(cfg: UtkfaceConfig, *, json_out: bool) -> None:
    """Write a biased train subset and balanced val/test sets of UTKFace, labelled from the file names."""
    result = import_utkface(root=cfg.root, out=cfg.out, config=cfg, progress=make_progress())
    report(result, cfg.target, cfg.protected, json_out)


def report(result: ImportResult, target: str, protected: str, json_out: bool) -> None:
    """Warnings on stderr; the cell counts per split on stdout (a table, or one JSON object)."""
    for warning in result.warnings:
        err.print(f"Warning: {warning}", markup=False, soft_wrap=True)
    if json_out:
        typer.echo(json.dumps(result.to_dict()))
        return
    table = Table(title=f"cells (target {target}, protected {protected})")
    table.add_column("split")
    for t, p in CELLS:
        table.add_column(f"({t},{p})", justify="right")
    table.add_column("total", justify="right")
    for split, counts in result.counts.items():
        table.add_row(split, *(str(counts[c]) for c in CELLS), str(sum(counts.values())))
    out.print(table)
    files = ", ".join(p.name for p in result.paths.values())
    out.print(f"wrote {files} and {result.config_path.name} in {result.out}", markup=False)
