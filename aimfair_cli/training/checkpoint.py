"""Model checkpoints: safetensors only, with a JSON blob of metadata under the key "aimfair".

Why safetensors: loading a pickle (.pt/.pth) can run arbitrary code. A file is accepted only if its first
bytes form a safetensors header (8-byte little-endian length, then a JSON object); anything else is refused
before any deserialiser sees it.

Metadata (DESIGN.md): format version, arch, image_size, mean, std, target, protected, config, plus whatever
the caller adds (best_val_acc, best_epoch, stage, ...).
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import CheckpointError
from ..core.fsio import atomic_path

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
META_KEY = "aimfair"
DEFAULT_META = {"arch": "resnet18", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "target": None,
                "protected": None, "config": {}}
REQUIRED_META = ("format", "arch", "image_size", "mean", "std", "target", "protected", "config")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the header size

MSG_NOT_FOUND = "checkpoint not found: {path}"
MSG_NOT_SAFETENSORS = "{path}: not a safetensors checkpoint (pickle files such as .pt/.pth are refused, never unpickled)"
MSG_NO_META = "{path}: safetensors file without aimfair metadata (not written by aimfair)"
MSG_BAD_META = "{path}: aimfair metadata is not valid JSON"
MSG_NEWER = "{path}: checkpoint format {found} is newer than this aimfair supports ({supported})"
MSG_MISMATCH = "{path}: checkpoint tensors do not fit a {arch}: {detail}"
MSG_META_MISSING = "{path}: checkpoint metadata has no '{field}'"
MSG_META_BAD = "{path}: checkpoint metadata '{field}' must be {rule}; got {value}"
MSG_NOT_FINITE = "{path}: tensor '{name}' holds NaN or infinite values; the checkpoint is broken"

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096  # what pretrain accepts; larger would allocate absurd batches
_RULES = {
    "format": "a whole number of at least 1",
    "arch": "a text",
    "image_size": f"a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}",
    "mean": "3 finite numbers",
    "std": "3 finite numbers above 0",
    "target": "a text or null",
    "protected": "a text or null",
    "config": "a mapping",
}


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, or CheckpointError. Reads only the first 8 + N bytes."""
    if not path.is_file():
        raise CheckpointError(MSG_NOT_FOUND.format(path=path))
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(MSG_NOT_SAFETENSORS.format(path=path))
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(MSG_NOT_SAFETENSORS.format(path=path))
        raw = fh.read(n)
    if not raw.startswith(b"{"):
        raise CheckpointError(MSG_NOT_SAFETENSORS.format(path=path))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # nesting deeper than Python's limit is not a header
        raise CheckpointError(MSG_NOT_SAFETENSORS.format(path=path)) from None
    if not isinstance(header, dict):
        raise CheckpointError(MSG_NOT_SAFETENSORS.format(path=path))
    return header


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's aimfair metadata, without loading any tensor (and without torch)."""
    path = Path(path)
    header = _read_header(path)
    blob = (header.get("__metadata__") or {}).get(META_KEY)
    if blob is None:
        raise CheckpointError(MSG_NO_META.format(path=path))
    try:
        meta = json.loads(blob)
    except (ValueError, RecursionError):
        raise CheckpointError(MSG_BAD_META.format(path=path)) from None
    if not isinstance(meta, dict):
        raise CheckpointError(MSG_BAD_META.format(path=path))
    return check_meta(path, meta)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: Any, *, positive: bool) -> bool:
    return (isinstance(v, list) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                    and (x > 0 or not positive) for x in v))


def check_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Validate what every command reads from the metadata (one line naming the field, never a KeyError).

    format and image_size are required; arch, mean, std, target, protected and config fall back to the
    defaults save_checkpoint fills in."""
    for name in ("format", "image_size"):
        if name not in meta:
            raise CheckpointError(MSG_META_MISSING.format(path=path, field=name))
    meta = {**DEFAULT_META, **meta}
    checks = {
        "format": _is_int(meta["format"]) and meta["format"] >= 1,
        "arch": isinstance(meta["arch"], str),
        "image_size": _is_int(meta["image_size"]) and MIN_IMAGE_SIZE <= meta["image_size"] <= MAX_IMAGE_SIZE,
        "mean": _numbers(meta["mean"], positive=False),
        "std": _numbers(meta["std"], positive=True),
        "target": meta["target"] is None or isinstance(meta["target"], str),
        "protected": meta["protected"] is None or isinstance(meta["protected"], str),
        "config": isinstance(meta["config"], dict),
    }
    for name, ok in checks.items():
        if not ok:
            value = json.dumps(meta[name])
            value = value if len(value) <= 60 else value[:57] + "..."
            raise CheckpointError(MSG_META_BAD.format(path=path, field=name, rule=_RULES[name], value=value))
    if meta["format"] > FORMAT_VERSION:
        raise CheckpointError(MSG_NEWER.format(path=path, found=meta["format"], supported=FORMAT_VERSION))
    return meta


def state_tensors(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """All of state_dict() (BN running stats and num_batches_tracked too) as contiguous CPU tensors.

    A DistributedDataParallel wrapper is looked through. `.contiguous()` also undoes channels_last, which
    safetensors cannot store.
    """
    model = getattr(model, "module", model)
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(path: str | os.PathLike, model: "torch.nn.Module", meta: dict[str, Any]) -> Path:
    """Write `model` and `meta` (JSON-able) to `path` atomically. `meta` must hold at least image_size;
    arch/mean/std/target/protected/config default to resnet18/0.5/0.5/None/None/{}."""
    from safetensors.torch import save_file

    from ..core.config import to_json

    if "image_size" not in meta:
        raise ValueError("checkpoint metadata needs 'image_size'")
    full = {**DEFAULT_META, **json.loads(to_json(meta)), "format": FORMAT_VERSION}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state_tensors(model), str(tmp), metadata={META_KEY: json.dumps(full, sort_keys=True)})
    return path


def check_finite(path: Path, state: dict[str, "torch.Tensor"]) -> None:
    """Refuse a checkpoint with NaN or inf in any float tensor: it would score as a constant predictor."""
    import torch

    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(MSG_NOT_FINITE.format(path=path, name=name))


def load_checkpoint(path: str | os.PathLike, *, device: "str | torch.device" = "cpu") -> tuple["torch.nn.Module", dict[str, Any]]:
    """Build the checkpoint's architecture and load every tensor strictly. Returns (model in eval mode, meta)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import build_model

    path = Path(path)
    meta = read_meta(path)  # refuses anything that is not safetensors before deserialising
    arch = meta.get("arch", "resnet18")
    model = build_model(weights="none", arch=arch)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(MSG_NOT_SAFETENSORS.format(path=path)) from exc
    check_finite(path, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(MSG_MISMATCH.format(path=path, arch=arch, detail=detail)) from None
    model.to(device)
    model.eval()
    return model, meta


def initial_model(weights: str | os.PathLike, *, arch: str = "resnet18") -> "torch.nn.Module":
    """The model `pretrain --weights` starts from: "none" (random), "imagenet", or every weight of an aimfair
    .safetensors checkpoint of the same architecture."""
    from ..core.errors import UsageError
    from .models import MSG_BAD_WEIGHTS, MSG_WEIGHTS_NOT_FOUND, build_model

    if str(weights) in ("none", "imagenet"):
        return build_model(weights=str(weights), arch=arch)
    path = Path(os.path.expanduser(str(weights)))
    if path.suffix.lower() != ".safetensors":
        raise UsageError(MSG_BAD_WEIGHTS.format(weights=weights))
    if not path.is_file():
        raise CheckpointError(MSG_WEIGHTS_NOT_FOUND.format(path=path))
    model, meta = load_checkpoint(path)
    if meta.get("arch") != arch:
        raise CheckpointError(f"{path}: checkpoint is a {meta.get('arch')}, expected {arch}")
    return model
