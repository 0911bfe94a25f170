"""`aimfair finetune`: fine-tune a pretrained (biased) model on balanced synthetic data, updating only some
parameter tensors.

The strategies (which tensors receive updates; all others stay bit-identical) are the registry in
`aimfair_cli/masking/strategies.py`; `--strategy`'s help lists them from it (`mask` is AIM-Fair, Eq. 8).

Training from scratch on synthetic data, supplementing real with synthetic data and repairing the real data
(paper Tab. 3) start from random weights rather than from the biased model, so they are `aimfair pretrain`
runs on the corresponding manifests, not fine-tuning strategies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import dist, layout
from ..core.config import config_path_for, write_resolved_config
from ..core.errors import UsageError
from ..core.fsio import check_outputs, check_suffix
from ..core.manifest import Manifest, read_manifest
from ..core.options import (ALLOW_DUPLICATES_HELP, AMP_HELP, CACHE_HELP, CHANNELS_LAST_HELP, CROP_HELP, DEVICE_HELP,
                            KEEP_STATE_HELP, MAX_BATCH, MAX_EPOCHS, MAX_IMAGES, MAX_LR, MAX_SEED, MAX_WORKERS,
                            RESUME_HELP, SPEED_MODES, check, mode_flag, option)
from ..core.progress import NULL, Progress
from ..core.provenance import provenance
from ..masking import strategies
from ..masking.synthsets import draw_balanced
from ..training.modelselect import SELECT_HELP, SELECT_MODES
from ..training.resume import finish, history_path_for, prepare, state_path_for
from ..training.tracking import check_tensorboard, open_tensorboard

log = logging.getLogger(__name__)

BN_MODES = ("update", "freeze")
MSG_MASK_AND_STRATEGY = "give either --mask or --strategy, not both (only a strategy that reads the mask, such as " \
    "opposite, takes --mask)"
MSG_NO_STRATEGY = "give --mask FILE (AIM-Fair) or --strategy"
MSG_NEEDS_MASK = "--strategy {strategy} needs --mask FILE: it reads the mask's selection or its Δ1/Δ2 scores"
# The released runner.sh fine-tunes at 0.06 (main.py's own default is 0.05). The paper's text says the rate was
# searched in {0.4, 0.5, 0.6}: ten times the released value, with momentum 0.9 on a pretrained ResNet-18.
DEFAULT_LR = 0.06


@dataclass
class FinetuneConfig:
    """Options of `aimfair finetune` (flags, the `finetune:` section of aimfair.yaml, the saved config)."""

    model: Path = option(layout.PRETRAIN, short=("-m",), help="Model checkpoint (.safetensors).", path="file")
    synth: Path = option(layout.SYNTH_MANIFEST, help="Synthetic manifest; a balanced set is drawn from it.", path="file")
    val: Path = option(layout.VAL, help="Real validation manifest; the best epoch by accuracy is kept.", path="file")
    out: Path = option(layout.FINETUNE, short=("-o",), help="Output checkpoint (.safetensors).", path="file")
    mask: Path | None = option(None, help="Mask from `aimfair mask`: update only its tensors (AIM-Fair).", path="file")
    strategy: str | None = option(None, help="Which tensors to update instead of --mask's (with --mask, only a "
                                  "strategy that reads the mask): " + strategies.help_text())
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
    select: str = option("overall", help=SELECT_HELP, choices=SELECT_MODES)


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
    """Fine-tune `cfg.model`'s tensors that the strategy (or --mask) selects on a balanced set drawn from --synth,
    keep the best epoch on --val and write the checkpoint, its config and history."""
    from ..masking.maskfile import load_mask
    from ..training.checkpoint import load_checkpoint, save_checkpoint
    from ..training.images import ImageDataset, build_transform, make_loader
    from ..training.loop import OptimConfig, fit, seed_everything, write_history
    from ..training.models import resolve_device
    from ..training.tensorcache import make_train_loader

    cfg, strategy = _check_options(cfg)
    resumable = prepare(cfg.out, cfg, resume=cfg.resume)
    check_tensorboard(cfg.tensorboard)
    mask = load_mask(cfg.mask) if cfg.mask is not None else None

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, meta = load_checkpoint(cfg.model, device=device)
    if mask is not None:
        mask.check_made_on(model, cfg.model, flag="--mask", path=cfg.mask, purpose="fine-tune")
    names = [n for n, _ in model.named_parameters()]
    trainable = strategies.trainable_names(names, strategy, mask=mask, mask_path=cfg.mask, seed=cfg.seed)
    if not trainable:
        raise UsageError(f"strategy {strategy} selects no tensor; nothing to fine-tune")
    train, val = _balanced_set(cfg, mask)
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
            resumable=resumable, on_epoch=tensorboard, select=cfg.select,
        )
    finally:
        if tensorboard is not None:
            tensorboard.close()
    new_meta = _checkpoint_meta(cfg, meta, device, strategy=str(strategy), trainable=trainable, total=len(names),
                                n_synth=len(train.rows), result=result)
    if dist.is_main():
        save_checkpoint(cfg.out, model, new_meta)
        write_resolved_config(cfg.out, "finetune", cfg)
        write_history(cfg.out, result.history)
        finish(resumable, keep=cfg.keep_state)
    dist.barrier()
    return FinetuneResult(out=Path(cfg.out), strategy=str(strategy), trainable=trainable, total=len(names),
                          best_epoch=result.best_epoch, best_val_acc=result.best_val_acc, history=result.history)


def _check_options(cfg: FinetuneConfig) -> tuple[FinetuneConfig, strategies.Strategy]:
    """The options checked before any file is read: --mask and --strategy agree, the batch splits under torchrun,
    no output is an input. Returns the checked config and the parsed strategy."""
    cfg = check(cfg)
    if cfg.mask is None and cfg.strategy is None:
        raise UsageError(MSG_NO_STRATEGY)
    strategy = strategies.parse_strategy(cfg.strategy or "mask")
    if strategy.entry.needs_mask and cfg.mask is None:
        raise UsageError(MSG_NEEDS_MASK.format(strategy=strategy))
    if cfg.mask is not None and not strategy.entry.needs_mask:
        raise UsageError(MSG_MASK_AND_STRATEGY)
    dist.local_batch(cfg.batch_size)  # under torchrun the global batch must split evenly across ranks
    check_suffix(cfg.out, (".safetensors",), "--out")
    check_outputs({"--out": cfg.out, "the resolved config": config_path_for(cfg.out, "finetune"),
                   "the resumable state": state_path_for(cfg.out),
                   "the history": history_path_for(cfg.out)},
                  {"--model": cfg.model, "--synth": cfg.synth, "--val": cfg.val, "--mask": cfg.mask})
    return cfg, strategy


def _balanced_set(cfg: FinetuneConfig, mask: Any) -> tuple[Manifest, Manifest]:
    """The balanced synthetic training set (as large as the mask's, unless --n-synth) and the validation set,
    their images checked."""
    from ..training.images import check_images, check_trainable
    from ..training.modelselect import check_select

    synth = read_manifest(cfg.synth, require_protected=True, allow_duplicates=cfg.allow_duplicates)
    val = read_manifest(cfg.val, allow_duplicates=cfg.allow_duplicates)
    check_select(cfg.select, val)
    n = cfg.n_synth
    if n is None and mask is not None:
        # The mask's uncapped set size: a mask computed with --max-samples must not shrink fine-tuning. Masks
        # written before this key existed record only the (possibly capped) sizes.
        n = mask.meta.get("n_synth") or mask.meta.get("sizes", {}).get("synthetic_balanced")
    train = Manifest(path=synth.path, rows=draw_balanced(synth.rows, n=n, seed=cfg.seed), columns=synth.columns)
    check_trainable(len(train.rows), f"--synth {cfg.synth} (the balanced set)", cfg.batch_size)
    check_images(train)
    check_images(val)
    return train, val


def _checkpoint_meta(cfg: FinetuneConfig, meta: dict[str, Any], device: Any, *, strategy: str, trainable: list[str],
                     total: int, n_synth: int, result: Any) -> dict[str, Any]:
    """The pretrained checkpoint's metadata with what fine-tuning did: the config, the method, the group labels it
    read, the provenance and the strategy's tensors."""
    from ..training.modelselect import LABEL_USES, group_labels

    new_meta = dict(meta)
    base_labels = meta.get("group_labels", "none")  # the pretrained model's (older checkpoints: none)
    new_meta.update({
        "config": cfg,
        "method": "aimfair" if strategy == "mask" else f"finetune {strategy}",
        "base_method": meta.get("method", "erm"),
        "select": cfg.select,
        "group_labels": max(base_labels, group_labels("none", cfg.select), key=LABEL_USES.index),
        "base_model": str(cfg.model),
        "provenance": provenance(device, {"--model": cfg.model, "--synth": cfg.synth, "--val": cfg.val,
                                          "--mask": cfg.mask}),
        "finetune": {"strategy": strategy, "trainable": trainable, "total": total, "n_synth": n_synth,
                     "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc},
    })
    return new_meta
