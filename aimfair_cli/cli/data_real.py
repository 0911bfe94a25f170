"""`aimfair data celeba` and `aimfair data utkface`: real datasets -> train/val/test manifests.

Options resolve as flags > the `data_celeba` / `data_utkface` section of ./aimfair.yaml (or --config) >
the defaults of `CelebaConfig` / `UtkfaceConfig`. The output folder defaults to the run folder's `data/`, where
`pretrain`, `mask`, `finetune` and `eval` look for the manifests.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .. import config, layout
from ..data.bias import CELLS
from ..data.celeba import STAGE as CELEBA_STAGE
from ..data.celeba import CelebaConfig, ImportResult, import_celeba
from ..data.utkface import STAGE as UTKFACE_STAGE
from ..data.utkface import UtkfaceConfig, import_utkface
from .console import RichProgress, err, out, setup_logging
from .options import ConfigOpt, JsonOpt, SeedOpt, VerboseOpt

OutOpt = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help=f"Output folder for train.csv, val.csv and test.csv. [default: {layout.DATA_DIR}]",
        file_okay=False, show_default=False,
    ),
]
BiasOpt = Annotated[
    Optional[str],
    typer.Option("--bias", help="Minority:majority ratio of the train cells: 1:9, 1/9, or the minority share 0.1. [default: 1:9]"),
]


def celeba(
    root: Annotated[
        Path,
        typer.Argument(
            help="CelebA folder holding img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt (or their .csv forms).",
            metavar="ROOT",
            show_default=False,
        ),
    ],
    out_dir: OutOpt = layout.DATA_DIR,
    target: Annotated[
        Optional[str], typer.Option("--target", help="Attribute to predict, any of the 40 CelebA names. [default: Smiling]")
    ] = None,
    protected: Annotated[
        Optional[str], typer.Option("--protected", help="Protected attribute, any of the 40 CelebA names. [default: Male]")
    ] = None,
    bias: BiasOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Images in the biased train subset. [default: 20000]")] = None,
    seed: Annotated[
        Optional[int],
        typer.Option(
            "--seed",
            help="Draw the train subset at random with this seed instead of taking each cell's first images in file order. [default: file order]",
        ),
    ] = None,
    json_out: JsonOpt = False,
    config_file: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write a biased train subset with exact cell quotas and the official val/test partitions of CelebA."""
    setup_logging(verbose)
    explicit = dict(target=target, protected=protected, bias=bias, n=n, seed=seed)
    values = config.resolve(CELEBA_STAGE, explicit, asdict(CelebaConfig()), config_file=config_file)
    result = import_celeba(root=root, out=out_dir, config=CelebaConfig(**values), progress=RichProgress())
    report(result, values["target"], values["protected"], json_out)


def utkface(
    root: Annotated[
        Path,
        typer.Argument(
            help="UTKFace folder; images named age_gender_race_date.jpg(.chip.jpg) anywhere below it.",
            metavar="ROOT",
            show_default=False,
        ),
    ],
    out_dir: OutOpt = layout.DATA_DIR,
    target: Annotated[
        Optional[str], typer.Option("--target", help="Attribute to predict: Female, White or Young. [default: Female]")
    ] = None,
    protected: Annotated[
        Optional[str], typer.Option("--protected", help="Protected attribute: Female, White or Young. [default: White]")
    ] = None,
    bias: BiasOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Images in the biased train subset. [default: 10000]")] = None,
    test_per_group: Annotated[
        Optional[int], typer.Option("--test-per-group", help="Images per cell in the balanced test set. [default: 800]")
    ] = None,
    val_per_group: Annotated[
        Optional[int],
        typer.Option(
            "--val-per-group",
            help="Images per cell in the balanced val set. [default: as many as every cell can spare, at most --test-per-group]",
        ),
    ] = None,
    young_max_age: Annotated[
        Optional[int], typer.Option("--young-max-age", help="Oldest age that counts as Young. [default: 35]")
    ] = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    config_file: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write a biased train subset and balanced val/test sets of UTKFace, labelled from the file names."""
    setup_logging(verbose)
    explicit = dict(
        target=target, protected=protected, bias=bias, n=n, test_per_group=test_per_group,
        val_per_group=val_per_group, young_max_age=young_max_age, seed=seed,
    )
    values = config.resolve(UTKFACE_STAGE, explicit, asdict(UtkfaceConfig()), config_file=config_file)
    result = import_utkface(root=root, out=out_dir, config=UtkfaceConfig(**values), progress=RichProgress())
    report(result, values["target"], values["protected"], json_out)


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
