"""`aimfair finetune`: fine-tune only some tensors of the biased model on balanced synthetic data."""

from __future__ import annotations

import json

from ..core import dist
from ..stages.finetune import FinetuneConfig, run_finetune
from . import console
from .options import command


@command("finetune", FinetuneConfig)
def finetune(cfg: FinetuneConfig, *, json_out: bool) -> None:
    """Fine-tune the biased model on balanced synthetic images, updating only the masked (or chosen) tensors;
    every other tensor stays bit-identical."""
    result = run_finetune(cfg, progress=console.make_progress())
    if not dist.is_main():
        return
    summary = {"out": str(result.out), "strategy": result.strategy, "trainable": len(result.trainable),
               "total": result.total, "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc}
    if json_out:
        console.out.print_json(json.dumps(summary))
    else:
        console.out.print(
            f"{result.strategy}: updated {len(result.trainable)} of {result.total} tensors; best epoch "
            f"{result.best_epoch} (val accuracy {result.best_val_acc:.2%}) -> {result.out}"
        )
