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

from .. import dist, layout
from ..config import config_path_for, write_resolved_config
from ..errors import UsageError
from ..fsio import check_outputs, check_suffix
from ..manifest import Manifest, read_manifest
from ..options import (ALLOW_DUPLICATES_HELP, AMP_HELP, CACHE_HELP, CHANNELS_LAST_HELP, CROP_HELP, DEVICE_HELP,
                       KEEP_STATE_HELP, MAX_BATCH, MAX_EPOCHS, MAX_IMAGES, MAX_LR, MAX_SEED, MAX_WORKERS, RESUME_HELP,
                       SPEED_MODES, check, mode_flag, option)
from ..progress import NULL, Progress
from ..provenance import input_sha256, provenance, sha256_file
from ..resume import finish, prepare, state_path_for
from ..tracking import check_tensorboard, open_tensorboard
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
MSG_MASK_OTHER_MODEL = ("--mask {mask} was computed on a model with SHA-256 {made_on}…, not on --model {model} "
                        "({sha}…): compute the mask on the model you fine-tune")
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
    """Options of `aimfair finetune` (flags, the `finetune:` section of aimfair.yaml, the saved config)."""

    model: Path = option(layout.PRETRAIN, short=("-m",), help="Model checkpoint (.safetensors).", path="file")
    synth: Path = option(layout.SYNTH_MANIFEST, help="Synthetic manifest; a balanced set is drawn from it.", path="file")
    val: Path = option(layout.VAL, help="Real validation manifest; the best epoch by accuracy is kept.", path="file")
    out: Path = option(layout.FINETUNE, short=("-o",), help="Output checkpoint (.safetensors).", path="file")
    mask: Path | None = option(None, help="Mask from `aimfair mask`: update only its tensors (AIM-Fair).", path="file")
    strategy: str | None = option(None, help="Instead of --mask: full, linear, random:RATIO (e.g. random:0.5), "
                                  "update:BLOCK or freeze:BLOCK (BLOCK: stem, layer1..layer4, fc); or, with --mask, "
                                  "opposite: the k tensors most sensitive to the domain gap ∩ the k least sensitive to "
                                  "the bias (a control).")
    epochs: int = option(10, help="Epochs.", min=1, max=MAX_EPOCHS)
    lr: float = option(DEFAULT_LR, above=0, max=MAX_LR,
                       help="SGD learning rate (momentum 0.9). The released runner.sh uses 0.06 (its code's default "
                       "0.05); the paper's text says 0.4, 0.5, 0.6, ten times that.")
    milestones: tuple[int, ...] = option((), help="Comma-separated epochs at which lr is multiplied by 0.1.",
                                         min=1, max=MAX_EPOCHS)
    batch_size: int = option(128, help="Images per batch.", min=1, max=MAX_BATCH)
    crop_scale: float = option(0.08, help=CROP_HELP, above=0, max=1)
    n_synth: int | None = option(None, min=4, max=MAX_IMAGES, help="Balanced synthetic images in total (n/4 per group).",
                                 default_text="the mask's balanced set, else as many as the smallest group allows")
    bn: str = option("update", choices=BN_MODES,
                     help="update: BN running statistics of every layer keep updating (the paper's code); "
                     "freeze: BN layers outside the selection keep their statistics.")
    workers: int = option(2, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    device: str = option("auto", help=DEVICE_HELP)
    amp: str = option("auto", help=AMP_HELP, choices=SPEED_MODES)
    channels_last: str = option("auto", help=CHANNELS_LAST_HELP, choices=SPEED_MODES)
    cache: bool = option(True, help=CACHE_HELP)
    seed: int = option(0, help="Random seed; the same seed reproduces the run.", min=0, max=MAX_SEED)
    allow_duplicates: bool = option(False, help=ALLOW_DUPLICATES_HELP)
    tensorboard: Path | None = option(None, path="dir", help="Also write the per-epoch figures of <out stem>.history.csv "
                                      "as TensorBoard scalars to this folder (needs the tensorboard package).")
    resume: bool = option(False, help=RESUME_HELP)
    keep_state: bool = option(False, help=KEEP_STATE_HELP)


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
    from ..images import ImageDataset, build_transform, check_images, make_loader
    from ..maskfile import load_mask
    from ..models import resolve_device
    from ..tensorcache import make_train_loader
    from ..training import OptimConfig, fit, seed_everything, write_history

    cfg = check(cfg)
    if cfg.mask is None and cfg.strategy is None:
        raise UsageError(MSG_NO_STRATEGY)
    strategy = Strategy("mask") if cfg.strategy is None else parse_strategy(cfg.strategy)
    if strategy.kind == "opposite" and cfg.mask is None:
        raise UsageError(MSG_OPPOSITE_NEEDS_MASK)
    if cfg.mask is not None and strategy.kind not in ("mask", "opposite"):
        raise UsageError(MSG_MASK_AND_STRATEGY)
    dist.local_batch(cfg.batch_size)  # under torchrun the global batch must split evenly across ranks
    check_suffix(cfg.out, (".safetensors",), "--out")
    check_outputs({"--out": cfg.out, "the resolved config": config_path_for(cfg.out, "finetune"),
                   "the resumable state": state_path_for(cfg.out),
                   "the history": cfg.out.with_name(cfg.out.stem + ".history.csv")},
                  {"--model": cfg.model, "--synth": cfg.synth, "--val": cfg.val, "--mask": cfg.mask})
    resumable = prepare(cfg.out, cfg, resume=cfg.resume)
    check_tensorboard(cfg.tensorboard)
    mask = load_mask(cfg.mask) if cfg.mask is not None else None

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, meta = load_checkpoint(cfg.model, device=device)
    if mask is not None:
        mask.check_fits(model)
        made_on = input_sha256(mask.meta, "--model")
        if made_on is not None and made_on != sha256_file(cfg.model):
            raise UsageError(MSG_MASK_OTHER_MODEL.format(mask=cfg.mask, made_on=made_on[:12], model=cfg.model,
                                                         sha=sha256_file(cfg.model)[:12]))
    names = [n for n, _ in model.named_parameters()]
    selected = None
    if strategy.kind == "mask":
        selected = mask.selected
    elif strategy.kind == "opposite":
        selected = opposite_selection(mask, Path(cfg.mask))
    trainable = trainable_names(names, strategy, selected=selected, seed=cfg.seed)
    if not trainable:
        raise UsageError(f"strategy {strategy} selects no tensor; nothing to fine-tune")

    synth = read_manifest(cfg.synth, require_protected=True, allow_duplicates=cfg.allow_duplicates)
    val = read_manifest(cfg.val, allow_duplicates=cfg.allow_duplicates)
    n = cfg.n_synth
    if n is None and mask is not None:
        # The mask's uncapped set size: a mask computed with --max-samples must not shrink fine-tuning. Masks
        # written before this key existed record only the (possibly capped) sizes.
        n = mask.meta.get("n_synth") or mask.meta.get("sizes", {}).get("synthetic_balanced")
    train = Manifest(path=synth.path, rows=draw_balanced(synth.rows, n=n, seed=cfg.seed), columns=synth.columns)
    check_images(train)
    check_images(val)
    size, mean, std = meta["image_size"], meta["mean"], meta["std"]
    train_loader = make_train_loader(train, cache=cfg.cache, image_size=size, crop_scale=cfg.crop_scale, mean=mean,
                                     std=std, batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers,
                                     device=device, progress=progress)
    val_loader = make_loader(ImageDataset(val, build_transform(size, train=False, mean=mean, std=std)),
                             batch_size=cfg.batch_size, shuffle=False, workers=cfg.workers, seed=cfg.seed)
    log.info("fine-tuning %d of %d tensors (%s) on %d balanced synthetic images", len(trainable), len(names),
             strategy, len(train.rows))
    tensorboard = open_tensorboard(cfg.tensorboard, Path(cfg.out).stem)
    try:
        result = fit(
            model, train_loader, val_loader,
            optim=OptimConfig(lr=cfg.lr, epochs=cfg.epochs, milestones=tuple(cfg.milestones)),
            device=device, trainable=set(trainable), bn=cfg.bn, amp=mode_flag(cfg.amp),
            channels_last=mode_flag(cfg.channels_last), progress=progress, description=f"finetune {strategy}",
            resumable=resumable, on_epoch=tensorboard,
        )
    finally:
        if tensorboard is not None:
            tensorboard.close()
    new_meta = dict(meta)
    new_meta.update({
        "config": cfg,
        "base_model": str(cfg.model),
        "provenance": provenance(device, {"--model": cfg.model, "--synth": cfg.synth, "--val": cfg.val,
                                          "--mask": cfg.mask}),
        "finetune": {"strategy": str(strategy), "trainable": trainable, "total": len(names),
                     "n_synth": len(train.rows), "best_epoch": result.best_epoch,
                     "best_val_acc": result.best_val_acc},
    })
    if dist.is_main():
        save_checkpoint(cfg.out, model, new_meta)
        write_resolved_config(cfg.out, "finetune", cfg)
        write_history(cfg.out, result.history)
        finish(resumable, keep=cfg.keep_state)
    dist.barrier()
    return FinetuneResult(out=Path(cfg.out), strategy=str(strategy), trainable=trainable, total=len(names),
                          best_epoch=result.best_epoch, best_val_acc=result.best_val_acc, history=result.history)
