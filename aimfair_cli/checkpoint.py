"""Model checkpoints: safetensors only, with a JSON blob of metadata under the key "aimfair".

Why safetensors: loading a pickle (.pt/.pth) can run arbitrary code. A file is accepted only if its first
bytes form a safetensors header (8-byte little-endian length, then a JSON object); anything else is refused
before any deserialiser sees it.

Metadata (DESIGN.md): format version, arch, image_size, mean, std, target, protected, config, plus whatever
the caller adds (best_val_acc, best_epoch, stage, ...).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError
from .fsio import atomic_path

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
    except (UnicodeDecodeError, json.JSONDecodeError):
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
    except json.JSONDecodeError:
        raise CheckpointError(MSG_BAD_META.format(path=path)) from None
    if not isinstance(meta, dict):
        raise CheckpointError(MSG_BAD_META.format(path=path))
    if int(meta.get("format", 0)) > FORMAT_VERSION:
        raise CheckpointError(MSG_NEWER.format(path=path, found=meta.get("format"), supported=FORMAT_VERSION))
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

    from .config import to_json

    if "image_size" not in meta:
        raise ValueError("checkpoint metadata needs 'image_size'")
    full = {**DEFAULT_META, **json.loads(to_json(meta)), "format": FORMAT_VERSION}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state_tensors(model), str(tmp), metadata={META_KEY: json.dumps(full, sort_keys=True)})
    return path


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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(MSG_MISMATCH.format(path=path, arch=arch, detail=detail)) from None
    model.to(device)
    model.eval()
    return model, meta
