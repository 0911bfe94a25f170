"""`aimfair pretrain`: train the (biased) classifier on real data without group labels.

Reads the train and val manifests, trains ResNet-18 with the paper's recipe (DESIGN.md: 15 epochs, SGD lr 0.01,
x0.1 at epoch 10, batch 128, 224 px), keeps the epoch with the best val accuracy and writes it as a
safetensors checkpoint, with `<out stem>.config.yaml` (the resolved config) beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import dist, layout
from ..core.config import config_path_for, write_resolved_config
from ..core.errors import UsageError
from ..core.fsio import check_outputs
from ..core.manifest import read_manifest
from ..core.options import (ALLOW_DUPLICATES_HELP, AMP_HELP, CACHE_HELP, CHANNELS_LAST_HELP, CROP_HELP, DEVICE_HELP,
                            KEEP_STATE_HELP, MAX_BATCH, MAX_EPOCHS, MAX_IMAGE, MAX_LR, MAX_SEED, MAX_WORKERS, MIN_IMAGE,
                            RESUME_HELP, SPEED_MODES, check, mode_flag, option)
from ..core.progress import NULL, Progress
from ..core.provenance import provenance
from ..methods import METHOD_HELP, METHODS, cvar_dro, dfr, eiil, group_dro, jtt, lff
from ..training.modelselect import SELECT_HELP, SELECT_MODES
from ..training.resume import finish, history_path_for, prepare, state_path_for
from ..training.tracking import check_tensorboard, open_tensorboard

log = logging.getLogger(__name__)

DATA_CONFIGS = "data*.config.yaml"  # what `aimfair data ...` writes beside the manifests (attribute names)

MSG_BAD_OUT = "--out must end in .safetensors; got {out}"


@dataclass
class PretrainConfig:
    """Options of `aimfair pretrain` (flags, the `pretrain:` section of aimfair.yaml, the saved config)."""

    train: Path = option(layout.TRAIN, help="Training manifest (protected may be empty).", path="file")
    val: Path = option(layout.VAL, help="Validation manifest; the epoch with the best accuracy is kept.", path="file")
    out: Path = option(layout.PRETRAIN, short=("-o",), help="Output checkpoint (.safetensors).", path="file")
    epochs: int = option(15, help="Training epochs.", min=1, max=MAX_EPOCHS)
    lr: float = option(0.01, help="SGD learning rate.", above=0, max=MAX_LR)
    milestones: tuple[int, ...] = option((10,), help="Comma-separated epochs after which lr is multiplied by --gamma.",
                                         min=1, max=MAX_EPOCHS)
    gamma: float = option(0.1, help="Learning-rate factor at each milestone.", above=0, max=1)
    momentum: float = option(0.9, help="SGD momentum.", min=0, max=1)
    weight_decay: float = option(1e-4, help="SGD weight decay.", min=0, max=1)
    batch_size: int = option(128, help="Images per batch.", min=1, max=MAX_BATCH)
    image_size: int = option(224, help="Side of the square input image in pixels.", min=MIN_IMAGE, max=MAX_IMAGE)
    crop_scale: float = option(0.08, help=CROP_HELP, above=0, max=1)
    workers: int = option(2, help="Data-loader worker processes.", min=0, max=MAX_WORKERS)
    seed: int = option(0, help="Random seed; the same seed reproduces the run.", min=0, max=MAX_SEED)
    device: str = option("auto", help=DEVICE_HELP)
    weights: str = option("imagenet", help="Initial weights: imagenet (torchvision's ResNet-18 IMAGENET1K_V1, as the "
                          "paper; from the torch cache, hub/checkpoints/resnet18-f37072fd.pth, or downloaded; checked "
                          "by SHA-256), none (random) or a .safetensors checkpoint.")
    amp: str = option("auto", help=AMP_HELP, choices=SPEED_MODES)
    channels_last: str = option("auto", help=CHANNELS_LAST_HELP, choices=SPEED_MODES)
    cache: bool = option(True, help=CACHE_HELP)
    arch: str = option("resnet18", help="Model architecture.", choices=("resnet18",))
    target_name: str | None = option(None, help="Target attribute name recorded in the checkpoint.",
                                     default_text="from the data folder's data_*.config.yaml, else none")
    protected_name: str | None = option(None, help="Protected attribute name recorded in the checkpoint.",
                                        default_text="as --target-name")
    allow_duplicates: bool = option(False, help=ALLOW_DUPLICATES_HELP)
    tensorboard: Path | None = option(None, path="dir", help="Also write the per-epoch figures of <out stem>.history.csv "
                                      "as TensorBoard scalars to this folder (needs the tensorboard package).")
    resume: bool = option(False, help=RESUME_HELP)
    keep_state: bool = option(False, help=KEEP_STATE_HELP)
    method: str = option("erm", help=METHOD_HELP, choices=tuple(METHODS))
    select: str = option("overall", help=SELECT_HELP, choices=SELECT_MODES)
    jtt_epochs: int = option(jtt.EPOCHS, help=jtt.EPOCHS_HELP, min=1, max=MAX_EPOCHS)
    jtt_upweight: int = option(jtt.UPWEIGHT, help=jtt.UPWEIGHT_HELP, min=1, max=1000)
    cvar_alpha: float = option(cvar_dro.ALPHA, help=cvar_dro.ALPHA_HELP, above=0, max=1)
    lff_q: float = option(lff.Q, help=lff.Q_HELP, above=0, max=1)
    lff_ema: float = option(lff.EMA, help=lff.EMA_HELP, min=0, max=0.999)
    eiil_ref_epochs: int = option(eiil.REF_EPOCHS, help=eiil.REF_EPOCHS_HELP, min=1, max=MAX_EPOCHS)
    eiil_steps: int = option(eiil.STEPS, help=eiil.STEPS_HELP, min=1, max=1_000_000)
    eiil_lr: float = option(eiil.LR, help=eiil.LR_HELP, above=0, max=MAX_LR)
    dro_step: float = option(group_dro.STEP, help=group_dro.STEP_HELP, above=0, max=100)
    dfr_retrains: int = option(dfr.RETRAINS, help=dfr.RETRAINS_HELP, min=1, max=1000)


@dataclass
class PretrainResult:
    out: Path
    best_val_acc: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    config_path: Path | None = None


def _check(cfg: PretrainConfig) -> PretrainConfig:
    """Validate the options (again, for library callers) before anything heavy runs."""
    cfg = check(cfg)
    if cfg.out.suffix.lower() != ".safetensors":
        raise UsageError(MSG_BAD_OUT.format(out=cfg.out))
    dist.local_batch(cfg.batch_size)  # under torchrun the global batch must split evenly across ranks
    cfg.milestones = tuple(sorted(cfg.milestones))
    return cfg


def _attribute_names(cfg: PretrainConfig) -> tuple[str | None, str | None]:
    """Target/protected attribute names: explicit, else from the resolved config `aimfair data` wrote beside
    the train manifest (e.g. data_celeba.config.yaml), else None."""
    import yaml

    target, protected = cfg.target_name, cfg.protected_name
    for path in sorted(cfg.train.parent.glob(DATA_CONFIGS)):
        if target is not None and protected is not None:
            break
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        for section in (data.values() if isinstance(data, dict) else []):
            if not isinstance(section, dict):
                continue
            if target is None and isinstance(section.get("target"), str):
                target = section["target"]
            if protected is None and isinstance(section.get("protected"), str):
                protected = section["protected"]
    return target, protected


def _resume_main(cfg: PretrainConfig) -> bool:
    """With --resume, whether the final training resumes: not when the run was cut during a method's earlier stage
    (its state is there, the final training's is not yet): that stage resumes and the final training starts."""
    main = state_path_for(cfg.out)
    stages = main.parent.glob(main.name.replace(".resume.safetensors", ".*.resume.safetensors"))
    return cfg.resume and (main.exists() or not any(stages))


def _context(cfg: PretrainConfig, train: Any, val: Any, device: Any, resumable: Any, stages: list[Any],
             tensorboard: Any, progress: Progress) -> Any:
    """The method's view of this run (methods/base.py): models, loaders and the shared loop with the recipe bound."""
    from ..methods.base import Context
    from ..training.checkpoint import initial_model
    from ..training.images import MEAN, STD, ImageDataset, build_transform, make_loader
    from ..training.loop import OptimConfig, fit, predict, seed_everything
    from ..training.resume import stage_resumable
    from ..training.tensorcache import make_train_loader

    amp, channels_last = mode_flag(cfg.amp), mode_flag(cfg.channels_last)
    plain = build_transform(cfg.image_size, train=False, mean=MEAN, std=STD)
    val_loader = make_loader(ImageDataset(val, plain), batch_size=cfg.batch_size, shuffle=False, workers=cfg.workers,
                             seed=cfg.seed, pin_memory=device.type == "cuda")

    def new_model(reseed: bool) -> Any:
        if reseed:
            seed_everything(cfg.seed)
        return initial_model(cfg.weights, arch=cfg.arch)

    def loader(pool: Any) -> Any:
        return make_train_loader(train, cache=cfg.cache, image_size=cfg.image_size, crop_scale=cfg.crop_scale,
                                 mean=MEAN, std=STD, batch_size=cfg.batch_size, seed=cfg.seed, workers=cfg.workers,
                                 device=device, progress=progress, pool=pool)

    speed = dict(amp=device.type == "cuda" if amp is None else amp,
                 channels_last=device.type == "cuda" if channels_last is None else channels_last)

    def predict_train(model: Any) -> Any:
        plain_train = make_loader(ImageDataset(train, plain), batch_size=cfg.batch_size, shuffle=False,
                                  workers=cfg.workers, seed=cfg.seed, pin_memory=device.type == "cuda")
        return predict(model, plain_train, device=device, **speed)

    def embed_val(model: Any) -> Any:
        return predict(model, val_loader, device=device, features=True, **speed)

    def fit_stage(model: Any, train_loader: Any, *, stage: str | None = None, epochs: int | None = None,
                  objective: Any = None, select_val: bool = True) -> Any:
        state = resumable
        if stage is not None:
            state = stage_resumable(resumable, stage, resume=cfg.resume)
            stages.append(state)
        optim = OptimConfig(lr=float(cfg.lr), epochs=epochs or cfg.epochs, milestones=cfg.milestones, gamma=cfg.gamma,
                            momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return fit(model, train_loader, val_loader if select_val else None, optim=optim, device=device, amp=amp,
                   channels_last=channels_last, progress=progress, resumable=state, objective=objective,
                   description="pretrain" + (f" ({cfg.method} {stage})" if stage else ""), select=cfg.select,
                   on_epoch=tensorboard if stage is None else None)  # leaves the best epoch's weights in `model`

    return Context(cfg=cfg, train=train, val=val, device=device, new_model=new_model, loader=loader,
                   predict_train=predict_train, embed_val=embed_val, fit=fit_stage)


def run_pretrain(cfg: PretrainConfig, *, progress: Progress = NULL) -> PretrainResult:
    from ..methods import get_method
    from ..training.checkpoint import save_checkpoint
    from ..training.images import MEAN, STD, check_images, check_trainable
    from ..training.loop import write_history
    from ..training.models import resolve_device
    from ..training.modelselect import check_select, group_labels

    cfg = _check(cfg)
    weights = Path(cfg.weights) if str(cfg.weights) not in ("none", "imagenet") else None
    check_outputs({"--out": cfg.out, "the resolved config": config_path_for(cfg.out, "pretrain"),
                   "the resumable state": state_path_for(cfg.out),
                   "the history": history_path_for(cfg.out)},
                  {"--train": cfg.train, "--val": cfg.val, "--weights": weights})
    resumable = prepare(cfg.out, cfg, resume=_resume_main(cfg))
    check_tensorboard(cfg.tensorboard)
    device = resolve_device(cfg.device)  # a bad --device is refused before any download
    if str(cfg.weights) == "imagenet":
        from ..training.models import ensure_imagenet_weights

        ensure_imagenet_weights(cfg.arch)  # before any data is read: offline, fail at once saying where the file goes
    # protected may be empty: pretraining uses no group labels (but --method group-dro and --select worst-group do)
    train = read_manifest(cfg.train, allow_duplicates=cfg.allow_duplicates)
    val = read_manifest(cfg.val, allow_duplicates=cfg.allow_duplicates)
    check_trainable(len(train.rows), f"--train {cfg.train}", cfg.batch_size)
    check_select(cfg.select, val)
    check_images(train, progress=progress)
    check_images(val, progress=progress)

    method = get_method(cfg.method)
    log.info("pretraining %s (%s) on %d images (val %d) on %s", cfg.arch, cfg.method, len(train), len(val), device)
    tensorboard = open_tensorboard(cfg.tensorboard, cfg.out.stem)
    stages: list[Any] = []
    ctx = _context(cfg, train, val, device, resumable, stages, tensorboard, progress)
    try:
        model, result = method.train(ctx)
    finally:
        if tensorboard is not None:
            tensorboard.close()
    target, protected = _attribute_names(cfg)
    meta = {
        "stage": "pretrain",
        "arch": cfg.arch,
        "image_size": cfg.image_size,
        "mean": list(MEAN),
        "std": list(STD),
        "target": target,
        "protected": protected,
        "config": cfg,
        "weights": cfg.weights,
        "method": cfg.method,
        "group_labels": group_labels(method.group_labels, cfg.select),
        "select": cfg.select,
        "method_notes": ctx.notes,
        "best_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "sizes": {"train": len(train), "val": len(val)},
        "provenance": provenance(device, {"--train": cfg.train, "--val": cfg.val, "--weights": weights}),
    }
    config_path = config_path_for(cfg.out, "pretrain")
    if dist.is_main():  # only rank 0 writes
        save_checkpoint(cfg.out, model, meta)
        write_resolved_config(cfg.out, "pretrain", cfg)
        write_history(cfg.out, result.history)
        for state in (resumable, *stages):
            finish(state, keep=cfg.keep_state)
    dist.barrier()
    return PretrainResult(out=cfg.out, best_val_acc=result.best_val_acc, best_epoch=result.best_epoch,
                          history=result.history, config_path=config_path)
