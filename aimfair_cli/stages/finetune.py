"""`aimfair finetune`: fine-tune a pretrained (biased) model on balanced synthetic data, updating only some
parameter tensors.

Strategies (which tensors receive updates; all others stay bit-identical):
- `mask`      AIM-Fair, Eq. 8: the tensors selected by `aimfair mask`;
- `full`      every tensor (full fine-tuning);
- `linear`    the fc layer only (linear probing);
- `random:R`  a random R fraction of the tensors (seeded; the names are recorded);
- `update:B`  one block only, `freeze:B` every block but one (sub-tuning; B in stem, layer1..layer4, fc);
- `opposite`  a control the paper lacks, with `--mask`: the mask's opposite criterion at the same k (the k
              tensors most sensitive to the domain gap ∩ the k least sensitive to the bias), to see whether the
              gradient ranking matters beyond how many tensors are updated.

Training from scratch on synthetic data, supplementing real with synthetic data and repairing the real data
(paper Tab. 3) start from random weights rather than from the biased model, so they are `aimfair pretrain`
runs on the corresponding manifests, not fine-tuning strategies.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import dist
from ..config import write_resolved_config
from ..errors import UsageError
from ..manifest import Manifest, read_manifest
from ..progress import NULL, Progress
from ..synthsets import draw_balanced

log = logging.getLogger(__name__)

BLOCKS = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")
BN_MODES = ("update", "freeze")
MSG_BAD_STRATEGY = (
    "unknown strategy '{value}' (use full, linear, random:RATIO, update:BLOCK, freeze:BLOCK or opposite; "
    "blocks: stem, layer1..layer4, fc)"
)
MSG_MASK_AND_STRATEGY = "give either --mask or --strategy, not both (only --strategy opposite reads a --mask)"
MSG_NO_STRATEGY = "give --mask FILE (AIM-Fair) or --strategy"
MSG_OPPOSITE_NEEDS_MASK = "--strategy opposite needs --mask FILE: it ranks the mask's Δ1/Δ2 scores at the mask's k"
MSG_MASK_WITHOUT_SCORES = "{path}: the mask holds no Δ1/Δ2 scores, so its opposite cannot be computed"
# The released runner.sh fine-tunes at 0.06 (main.py's own default is 0.05). The paper's text says the rate was
# searched in {0.4, 0.5, 0.6}: ten times the released value, with momentum 0.9 on a pretrained ResNet-18.
DEFAULT_LR = 0.06


@dataclass(frozen=True)
class Strategy:
    kind: str  # mask | full | linear | random | update | freeze | opposite
    arg: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


def parse_strategy(text: str) -> Strategy:
    text = text.strip().lower()
    if text in ("full", "linear", "opposite"):
        return Strategy(text)
    m = re.fullmatch(r"random:(\d*\.?\d+)(%?)", text)
    if m:
        ratio = float(m.group(1)) / (100 if m.group(2) else 1)
        if 0 < ratio <= 1:
            return Strategy("random", f"{ratio:g}")
    m = re.fullmatch(r"(update|freeze):(\w+)", text)
    if m and m.group(2) in BLOCKS:
        return Strategy(m.group(1), m.group(2))
    raise UsageError(MSG_BAD_STRATEGY.format(value=text))


def trainable_names(names: list[str], strategy: Strategy, *, selected: list[str] | None = None, seed: int = 0) -> list[str]:
    """The parameter names that receive updates, in parameter order."""
    from ..models import block_of

    if strategy.kind in ("mask", "opposite"):  # `selected`: the mask's selection, or its opposite
        chosen = set(selected or [])
    elif strategy.kind == "full":
        chosen = set(names)
    elif strategy.kind == "linear":
        chosen = {n for n in names if block_of(n) == "fc"}
    elif strategy.kind == "random":
        count = max(1, round(float(strategy.arg) * len(names)))
        chosen = set(random.Random(f"{seed}:random-tensors").sample(names, count))
    elif strategy.kind == "update":
        chosen = {n for n in names if block_of(n) == strategy.arg}
    else:  # freeze
        chosen = {n for n in names if block_of(n) != strategy.arg}
    return [n for n in names if n in chosen]


def opposite_selection(mask, path: Path) -> list[str]:
    """The opposite criterion at the mask's k, from the Δ1/Δ2 scores stored in the mask file."""
    from ..selection import select_opposite
    from .mask import mask_scores

    scores = mask_scores(mask)
    if not scores or "k" not in mask.meta:
        raise UsageError(MSG_MASK_WITHOUT_SCORES.format(path=path))
    return select_opposite(scores, int(mask.meta["k"]))


@dataclass
class FinetuneConfig:
    model: Path
    synth: Path
    val: Path
    out: Path
    mask: Path | None = None
    strategy: str | None = None
    epochs: int = 10
    lr: float = DEFAULT_LR  # runner.sh's 0.06; the paper's text says {0.4, 0.5, 0.6} (see DEFAULT_LR)
    milestones: tuple[int, ...] = ()
    batch_size: int = 128
    crop_scale: float = 0.08  # smallest share of the image a training crop keeps (torchvision's default)
    n_synth: int | None = None  # balanced images in total; default: the mask's balanced set, else all groups' min × 4
    bn: str = "update"  # BN running statistics of frozen layers keep updating, as in the paper's code
    workers: int = 2
    device: str = "auto"
    seed: int = 0


@dataclass
class FinetuneResult:
    out: Path
    strategy: str
    trainable: list[str]
    total: int
    best_epoch: int
    best_val_acc: float
    history: list[dict[str, Any]] = field(default_factory=list)


def run_finetune(cfg: FinetuneConfig, *, progress: Progress = NULL) -> FinetuneResult:
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..data.images import ImageDataset, build_transform, check_images, make_loader
    from ..maskfile import load_mask
    from ..models import resolve_device
    from ..training import OptimConfig, fit, seed_everything

    if cfg.mask is None and cfg.strategy is None:
        raise UsageError(MSG_NO_STRATEGY)
    strategy = Strategy("mask") if cfg.strategy is None else parse_strategy(cfg.strategy)
    if strategy.kind == "opposite" and cfg.mask is None:
        raise UsageError(MSG_OPPOSITE_NEEDS_MASK)
    if cfg.mask is not None and strategy.kind not in ("mask", "opposite"):
        raise UsageError(MSG_MASK_AND_STRATEGY)
    if cfg.bn not in BN_MODES:
        raise UsageError(f"--bn must be update or freeze, got '{cfg.bn}'")
    if cfg.epochs <= 0 or cfg.lr <= 0:
        raise UsageError("--epochs and --lr must be positive")
    mask = load_mask(cfg.mask) if cfg.mask is not None else None

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, meta = load_checkpoint(cfg.model, device=device)
    if mask is not None:
        mask.check_fits(model)
    names = [n for n, _ in model.named_parameters()]
    selected = None
    if strategy.kind == "mask":
        selected = mask.selected
    elif strategy.kind == "opposite":
        selected = opposite_selection(mask, Path(cfg.mask))
    trainable = trainable_names(names, strategy, selected=selected, seed=cfg.seed)
    if not trainable:
        raise UsageError(f"strategy {strategy} selects no tensor; nothing to fine-tune")

    synth = read_manifest(cfg.synth, require_protected=True)
    val = read_manifest(cfg.val)
    n = cfg.n_synth
    if n is None and mask is not None:
        # The mask's uncapped set size: a mask computed with --max-samples must not shrink fine-tuning. Masks
        # written before this key existed record only the (possibly capped) sizes.
        n = mask.meta.get("n_synth") or mask.meta.get("sizes", {}).get("synthetic_balanced")
    train = Manifest(path=synth.path, rows=draw_balanced(synth.rows, n=n, seed=cfg.seed), columns=synth.columns)
    check_images(train)
    check_images(val)
    size, mean, std = meta["image_size"], meta["mean"], meta["std"]
    train_loader = make_loader(ImageDataset(train, build_transform(size, train=True, mean=mean, std=std, crop_scale=cfg.crop_scale)),
                               batch_size=cfg.batch_size, shuffle=True, workers=cfg.workers, seed=cfg.seed)
    val_loader = make_loader(ImageDataset(val, build_transform(size, train=False, mean=mean, std=std)),
                             batch_size=cfg.batch_size, shuffle=False, workers=cfg.workers, seed=cfg.seed)
    log.info("fine-tuning %d of %d tensors (%s) on %d balanced synthetic images", len(trainable), len(names),
             strategy, len(train.rows))
    result = fit(
        model, train_loader, val_loader,
        optim=OptimConfig(lr=cfg.lr, epochs=cfg.epochs, milestones=tuple(cfg.milestones)),
        device=device, trainable=set(trainable), bn=cfg.bn, progress=progress, description=f"finetune {strategy}",
    )
    new_meta = dict(meta)
    new_meta.update({
        "config": cfg,
        "base_model": str(cfg.model),
        "finetune": {"strategy": str(strategy), "trainable": trainable, "total": len(names),
                     "n_synth": len(train.rows), "best_epoch": result.best_epoch,
                     "best_val_acc": result.best_val_acc},
    })
    if dist.is_main():
        save_checkpoint(cfg.out, model, new_meta)
        write_resolved_config(cfg.out, "finetune", cfg)
    dist.barrier()
    return FinetuneResult(out=Path(cfg.out), strategy=str(strategy), trainable=trainable, total=len(names),
                          best_epoch=result.best_epoch, best_val_acc=result.best_val_acc, history=result.history)
