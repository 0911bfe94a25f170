"""`aimfair data demo`: render the offline benchmark's real-style faces and their train/val/test manifests.

Options resolve as flags > the `data_demo` section of ./aimfair.yaml (or --config) > `DemoConfig` defaults.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import config, layout
from ..data.demo import STAGE, DemoConfig, make_demo_dataset
from .console import RichProgress, out, setup_logging
from .data_real import report
from .options import ConfigOpt, JsonOpt, SeedOpt, VerboseOpt


def demo(
    out_dir: Annotated[
        Path,
        typer.Option("--out", "-o", help=f"Output folder for images/, train.csv, val.csv and test.csv. [default: {layout.DATA_DIR}]",
                     file_okay=False, show_default=False),
    ] = layout.DATA_DIR,
    n_train: Annotated[Optional[int], typer.Option("--n-train", help="Images in the biased train split. [default: 4000]")] = None,
    n_val: Annotated[Optional[int], typer.Option("--n-val", help="Images in the val split (CelebA-like mild skew). [default: 1000]")] = None,
    n_test: Annotated[Optional[int], typer.Option("--n-test", help="Images in the test split (CelebA-like mild skew). [default: 1000]")] = None,
    size: Annotated[Optional[int], typer.Option("--size", help="Image side in pixels. [default: 64]")] = None,
    bias: Annotated[
        Optional[str],
        typer.Option("--bias", help="Minority:majority ratio of the train cells: 1:9, 1/9, or the minority share 0.1. [default: 1:9]"),
    ] = None,
    seed: SeedOpt = None,
    json_out: JsonOpt = False,
    config_file: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Render photo-style faces (target Smiling, protected Male) with a biased train split and CelebA-like val/test."""
    setup_logging(verbose)
    explicit = dict(n_train=n_train, n_val=n_val, n_test=n_test, size=size, bias=bias, seed=seed)
    values = config.resolve(STAGE, explicit, asdict(DemoConfig()), config_file=config_file)
    result = make_demo_dataset(out=out_dir, progress=RichProgress(), **values)
    report(result, "Smiling", "Male", json_out)
    if not json_out:
        out.print(f"rendered {result.images_per_s:.0f} images/s", markup=False)
