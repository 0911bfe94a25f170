"""`aimfair pretrain`: train the (biased) classifier on real data without group labels.

Reads the train and val manifests, trains ResNet-18 with the paper's recipe (DESIGN.md: 15 epochs, SGD lr 0.01,
x0.1 at epoch 10, batch 128, 224 px), keeps the epoch with the best val accuracy and writes it as a
safetensors checkpoint, with `<out stem>.config.yaml` (the resolved config) beside it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import dist
from ..config import config_path_for, write_resolved_config
from ..errors import UsageError
from ..manifest import read_manifest
from ..progress import NULL, Progress

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "on", "off")
DATA_CONFIGS = "data*.config.yaml"  # what `aimfair data ...` writes beside the manifests (attribute names)

MSG_BAD_OUT = "--out must end in .safetensors; got {out}"
MSG_POSITIVE = "--{name} must be at least {low}; got {value}"
MSG_BAD_LR = "--lr must be a positive number; got {value}"
MSG_BAD_MILESTONES = "--milestones must be epoch numbers separated by commas (e.g. 10 or 10,12); got '{value}'"
MSG_BAD_AMP = "--amp must be one of auto, on, off; got '{value}'"


@dataclass
class PretrainConfig:
    train: Path
    val: Path
    out: Path
    epochs: int = 15
    lr: float = 0.01
    milestones: tuple[int, ...] = (10,)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    image_size: int = 224
    crop_scale: float = 0.08  # smallest share of the image a training crop keeps (torchvision's default)
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    weights: str = "imagenet"  # imagenet (the paper's and the released code's) | none (random) | PATH.safetensors
    amp: str = "auto"  # auto: on for CUDA only
    arch: str = "resnet18"
    target_name: str | None = None  # attribute names for the checkpoint; default: from data.config.yaml
    protected_name: str | None = None


@dataclass
class PretrainResult:
    out: Path
    best_val_acc: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    config_path: Path | None = None


def parse_milestones(value: Any) -> tuple[int, ...]:
    """"10" / "10,12" / 10 / [10, 12] -> (10, 12). Empty means no decay."""
    if isinstance(value, int) and not isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [v for v in value.replace(" ", "").split(",") if v]
    else:
        raise UsageError(MSG_BAD_MILESTONES.format(value=value))
    try:
        out = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise UsageError(MSG_BAD_MILESTONES.format(value=value)) from None
    if any(m < 1 for m in out):
        raise UsageError(MSG_BAD_MILESTONES.format(value=value))
    return tuple(sorted(out))


def parse_amp(value: Any) -> str:
    """auto|on|off; YAML booleans are accepted as on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text not in AMP_MODES:
        raise UsageError(MSG_BAD_AMP.format(value=value))
    return text


def amp_flag(mode: str) -> bool | None:
    """"auto" -> None (training decides: on for CUDA), "on" -> True, "off" -> False."""
    return {"auto": None, "on": True, "off": False}[mode]


def _check(cfg: PretrainConfig) -> PretrainConfig:
    """Normalise and validate the options before anything heavy runs."""
    cfg.train, cfg.val, cfg.out = Path(cfg.train), Path(cfg.val), Path(cfg.out)
    if cfg.out.suffix.lower() != ".safetensors":
        raise UsageError(MSG_BAD_OUT.format(out=cfg.out))
    for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 16), ("workers", 0)):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < low:
            raise UsageError(MSG_POSITIVE.format(name=name.replace("_", "-"), low=low, value=value))
    try:
        lr = float(cfg.lr)  # YAML reads "1e-3" as a string
    except (TypeError, ValueError):
        raise UsageError(MSG_BAD_LR.format(value=cfg.lr)) from None
    if not math.isfinite(lr) or lr <= 0:
        raise UsageError(MSG_BAD_LR.format(value=cfg.lr))
    cfg.lr = lr
    cfg.milestones = parse_milestones(cfg.milestones)
    cfg.amp = parse_amp(cfg.amp)
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
        except (OSError, yaml.YAMLError):
            continue
        for section in (data.values() if isinstance(data, dict) else []):
            if not isinstance(section, dict):
                continue
            if target is None and isinstance(section.get("target"), str):
                target = section["target"]
            if protected is None and isinstance(section.get("protected"), str):
                protected = section["protected"]
    return target, protected


def run_pretrain(cfg: PretrainConfig, *, progress: Progress = NULL) -> PretrainResult:
    from ..checkpoint import save_checkpoint
    from ..data.images import MEAN, STD, ImageDataset, build_transform, check_images, make_loader
    from ..models import build_model, resolve_device
    from ..training import OptimConfig, fit, seed_everything

    cfg = _check(cfg)
    if str(cfg.weights) == "imagenet":
        from ..models import ensure_imagenet_weights

        ensure_imagenet_weights(cfg.arch)  # before any data is read: offline, fail at once saying where the file goes
    train = read_manifest(cfg.train)  # protected may be empty: pretraining uses no group labels
    val = read_manifest(cfg.val)
    device = resolve_device(cfg.device)
    check_images(train, progress=progress)
    check_images(val, progress=progress)

    seed_everything(cfg.seed)
    model = build_model(weights=cfg.weights, arch=cfg.arch)
    pin = device.type == "cuda"
    train_loader = make_loader(ImageDataset(train, build_transform(cfg.image_size, train=True, mean=MEAN, std=STD,
                                                                  crop_scale=cfg.crop_scale)),
                               batch_size=cfg.batch_size, shuffle=True, workers=cfg.workers, seed=cfg.seed,
                               pin_memory=pin)
    val_loader = make_loader(ImageDataset(val, build_transform(cfg.image_size, train=False, mean=MEAN, std=STD)),
                             batch_size=cfg.batch_size, shuffle=False, workers=cfg.workers, seed=cfg.seed,
                             pin_memory=pin)
    log.info("pretraining %s on %d images (val %d) on %s", cfg.arch, len(train), len(val), device)
    result = fit(
        model, train_loader, val_loader,
        optim=OptimConfig(lr=float(cfg.lr), epochs=cfg.epochs, milestones=cfg.milestones, gamma=cfg.gamma,
                          momentum=cfg.momentum, weight_decay=cfg.weight_decay),
        device=device, amp=amp_flag(cfg.amp), progress=progress, description="pretrain",
    )  # leaves the best epoch's weights in `model`
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
        "best_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "sizes": {"train": len(train), "val": len(val)},
    }
    config_path = config_path_for(cfg.out, "pretrain")
    if dist.is_main():  # only rank 0 writes
        save_checkpoint(cfg.out, model, meta)
        write_resolved_config(cfg.out, "pretrain", cfg)
    dist.barrier()
    return PretrainResult(out=cfg.out, best_val_acc=result.best_val_acc, best_epoch=result.best_epoch,
                          history=result.history, config_path=config_path)
