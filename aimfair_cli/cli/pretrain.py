"""`aimfair pretrain`: train the biased ResNet-18 on real data (no group labels) and save the best checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import dist, layout
from ..config import build, resolve
from ..stages.pretrain import PretrainConfig, run_pretrain
from . import console
from .options import BatchSizeOpt, ConfigOpt, CropScaleOpt, DeviceOpt, ImageSizeOpt, JsonOpt, SeedOpt, VerboseOpt, WorkersOpt


def pretrain(
    train: Annotated[
        Optional[Path], typer.Option(help=f"Training manifest (protected may be empty). [default: {layout.TRAIN}]", dir_okay=False)
    ] = None,
    val: Annotated[
        Optional[Path], typer.Option(help=f"Validation manifest; the epoch with the best accuracy is kept. [default: {layout.VAL}]",
                                     dir_okay=False)
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help=f"Output checkpoint (.safetensors). [default: {layout.PRETRAIN}]", dir_okay=False)
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs. [default: 15]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="SGD learning rate (momentum 0.9, weight decay 1e-4). [default: 0.01]")] = None,
    milestones: Annotated[
        Optional[str], typer.Option(help="Comma-separated epochs after which lr is multiplied by 0.1. [default: 10]")
    ] = None,
    batch_size: BatchSizeOpt = None,
    image_size: ImageSizeOpt = None,
    crop_scale: CropScaleOpt = None,
    workers: WorkersOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    weights: Annotated[
        Optional[str],
        typer.Option(help="Initial weights: imagenet (torchvision's ResNet-18 IMAGENET1K_V1, as the paper; from the torch "
                     "cache, hub/checkpoints/resnet18-f37072fd.pth, or downloaded; checked by SHA-256), none (random) "
                     "or a .safetensors checkpoint. [default: imagenet]"),
    ] = None,
    amp: Annotated[
        Optional[str], typer.Option(help="Mixed precision: auto (on for CUDA), on or off. channels_last follows the device. "
                                    "[default: auto]")
    ] = None,
    target_name: Annotated[
        Optional[str], typer.Option(help="Target attribute name recorded in the checkpoint. [default: from the data "
                                    "folder's data_*.config.yaml, else none]")
    ] = None,
    protected_name: Annotated[
        Optional[str], typer.Option(help="Protected attribute name recorded in the checkpoint. [default: as --target-name]")
    ] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train ResNet-18 (one logit) on the biased real training set with the paper's recipe and keep the epoch
    with the best validation accuracy. Writes the checkpoint and its resolved config beside it."""
    defaults = asdict(PretrainConfig(train=layout.TRAIN, val=layout.VAL, out=layout.PRETRAIN))
    explicit = dict(train=train, val=val, out=out, epochs=epochs, lr=lr, milestones=milestones, batch_size=batch_size,
                    image_size=image_size, crop_scale=crop_scale, workers=workers, seed=seed, device=device, weights=weights, amp=amp,
                    target_name=target_name, protected_name=protected_name)
    opts = resolve("pretrain", explicit, defaults, config_file=config)
    cfg = build(PretrainConfig, opts)
    console.setup_logging(verbose)
    result = run_pretrain(cfg, progress=console.RichProgress())
    if not dist.is_main():
        return
    if json_:
        summary = {"out": str(result.out), "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
                   "config": str(result.config_path), "history": result.history}
        console.out.print_json(json.dumps(summary))
    else:
        console.out.print(f"best epoch {result.best_epoch} of {cfg.epochs} (val accuracy {result.best_val_acc:.2%}) "
                          f"-> {result.out}", markup=False)
