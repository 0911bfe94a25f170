"""`aimfair pretrain`: train the biased ResNet-18 on real data (no group labels) and save the best checkpoint."""

from __future__ import annotations

import json

from ..core import dist
from ..stages.pretrain import PretrainConfig, run_pretrain
from . import console
from .options import command


@command("pretrain", PretrainConfig)
def pretrain(cfg: PretrainConfig, *, json_out: bool) -> None:
    """Train ResNet-18 (one logit) on the biased real training set with the paper's recipe and keep the epoch
    with the best validation accuracy. Writes the checkpoint and its resolved config beside it."""
    result = run_pretrain(cfg, progress=console.make_progress())
    if not dist.is_main():
        return
    if json_out:
        summary = {"out": str(result.out), "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
                   "config": str(result.config_path), "history": result.history}
        console.out.print_json(json.dumps(summary))
    else:
        console.out.print(f"best epoch {result.best_epoch} of {cfg.epochs} (val accuracy {result.best_val_acc:.2%}) "
                          f"-> {result.out}", markup=False)
