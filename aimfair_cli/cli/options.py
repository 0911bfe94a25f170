"""Options shared by several commands, declared once.

Options default to None so that `aimfair_cli.config.resolve` can tell "not given" from a value: explicit
flags win over the run folder's `aimfair.yaml`, which wins over each component's own defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ExistingFile = dict(exists=True, file_okay=True, dir_okay=False, readable=True, resolve_path=False)

SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed; the same seed reproduces the run. [default: 0]")]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N. auto picks CUDA when available. [default: auto]")
]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Data-loader worker processes. [default: 2]")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", help="Images per batch. [default: 128]")]
ImageSizeOpt = Annotated[
    Optional[int], typer.Option("--image-size", help="Side of the square input image in pixels. [default: 224, or the checkpoint's]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="YAML config with one section per command. [default: ./aimfair.yaml if present]", dir_okay=False),
]
OutFileOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file.", dir_okay=False)]
OutDirOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder.", file_okay=False)]
ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Model checkpoint (.safetensors).", dir_okay=False)]
TaskOpt = Annotated[
    Optional[str], typer.Option("--task", help="Task name: smiling_male, smiling_young, young_male or female_white.")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages on stderr.")]
CropScaleOpt = Annotated[
    Optional[float],
    typer.Option("--crop-scale", help="Smallest share of the image a random training crop keeps (torchvision's "
                 "default 0.08; raise it for small images where a crop can cut the face out). [default: 0.08]"),
]
AllowDuplicatesOpt = Annotated[
    Optional[bool],
    typer.Option("--allow-duplicates", help="Keep manifest rows that list an image already listed (a warning, and "
                 "each row counts) instead of refusing the manifest. [default: refuse]"),
]
