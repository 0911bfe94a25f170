"""`aimfair finetune`: fine-tune only some tensors of the biased model on balanced synthetic data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import layout
from ..config import build, resolve
from ..stages.finetune import FinetuneConfig, run_finetune
from ..stages.pretrain import parse_milestones
from . import console
from .options import BatchSizeOpt, ConfigOpt, CropScaleOpt, DeviceOpt, JsonOpt, ModelOpt, SeedOpt, WorkersOpt


def finetune(
    model: ModelOpt = None,
    synth: Annotated[
        Optional[Path], typer.Option(help=f"Synthetic manifest; a balanced set is drawn from it. [default: {layout.SYNTH_MANIFEST}]")
    ] = None,
    val: Annotated[
        Optional[Path], typer.Option(help=f"Real validation manifest; the best epoch by accuracy is kept. [default: {layout.VAL}]")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help=f"Output checkpoint. [default: {layout.FINETUNE}]")] = None,
    mask: Annotated[
        Optional[Path], typer.Option(help="Mask from `aimfair mask`: update only its tensors (AIM-Fair).")
    ] = None,
    strategy: Annotated[
        Optional[str],
        typer.Option(help="Instead of --mask: full, linear, random:RATIO (e.g. random:0.5), update:BLOCK or "
                     "freeze:BLOCK (BLOCK: stem, layer1..layer4, fc); or, with --mask, opposite: the k tensors most "
                     "sensitive to the domain gap ∩ the k least sensitive to the bias (a control)."),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs. [default: 10]")] = None,
    lr: Annotated[
        Optional[float],
        typer.Option(help="SGD learning rate (momentum 0.9). The released runner.sh uses 0.06 (its code's default "
                     "0.05); the paper's text says 0.4, 0.5, 0.6, ten times that. [default: 0.06]"),
    ] = None,
    milestones: Annotated[
        Optional[str], typer.Option(help="Comma-separated epochs at which lr is multiplied by 0.1. [default: none]")
    ] = None,
    n_synth: Annotated[
        Optional[int],
        typer.Option("--n-synth", help="Balanced synthetic images in total (n/4 per group). [default: the mask's balanced "
                     "set, else as many as the smallest group allows]"),
    ] = None,
    bn: Annotated[
        Optional[str],
        typer.Option(help="update: BN running statistics of every layer keep updating (the paper's code); "
                     "freeze: BN layers outside the selection keep their statistics. [default: update]"),
    ] = None,
    batch_size: BatchSizeOpt = None,
    crop_scale: CropScaleOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune the biased model on balanced synthetic images, updating only the masked (or chosen) tensors;
    every other tensor stays bit-identical."""
    defaults = dict(FinetuneConfig(model=layout.PRETRAIN, synth=layout.SYNTH_MANIFEST, val=layout.VAL,
                                   out=layout.FINETUNE).__dict__)
    opts = resolve("finetune", dict(model=model, synth=synth, val=val, out=out, mask=mask, strategy=strategy,
                                    epochs=epochs, lr=lr, milestones=milestones, n_synth=n_synth, bn=bn,
                                    batch_size=batch_size, crop_scale=crop_scale, workers=workers, device=device, seed=seed),
                   defaults, config_file=config)
    opts["milestones"] = parse_milestones(opts["milestones"])
    cfg = build(FinetuneConfig, opts)
    console.setup_logging()
    result = run_finetune(cfg, progress=console.RichProgress())
    summary = {"out": str(result.out), "strategy": result.strategy, "trainable": len(result.trainable),
               "total": result.total, "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc}
    if json_:
        console.out.print_json(json.dumps(summary))
    else:
        console.out.print(
            f"{result.strategy}: updated {len(result.trainable)} of {result.total} tensors; best epoch "
            f"{result.best_epoch} (val accuracy {result.best_val_acc:.2%}) -> {result.out}"
        )
