"""Mask files: one bool tensor per parameter name (shape [1]*ndim, broadcastable to the parameter) in a
`.safetensors` file, plus metadata JSON: k, selected names, total tensor count, Δ1/Δ2 scores, the bias ratio
used, input sizes and each parameter's shape (so a mask for another model is refused by name). `mask_scores` reads
the stored scores back."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import MaskError
from ..core.fsio import atomic_path
from .selection import TensorScore

if TYPE_CHECKING:
    import torch

FORMAT = "aimfair-mask/1"
META_KEY = "aimfair_mask"

MSG_NOT_FOUND = "mask not found: {path}"
MSG_NOT_MASK = "{path}: not an aimfair mask (.safetensors with aimfair_mask metadata)"
MSG_MISSING_IN_MASK = "mask does not fit the model: tensor '{name}' is in the model but not in the mask"
MSG_EXTRA_IN_MASK = "mask does not fit the model: tensor '{name}' is in the mask but not in the model"
MSG_MASK_META = "{path}: mask metadata '{field}' must be {rule}"
MSG_MASK_EMPTY_TENSOR = "{path}: mask tensor '{name}' is empty (a mask holds one flag per tensor)"
MSG_OTHER_MODEL = ("{flag} {mask} was computed on a model with SHA-256 {made_on}…, not on --model {model} ({sha}…): "
                   "compute the mask on the model you {purpose}")
MSG_SHAPE = "mask does not fit the model: tensor '{name}' has shape {model} in the model but {mask} in the mask"


@dataclass
class Mask:
    selected: list[str]
    shapes: dict[str, list[int]]  # every parameter of the model, in parameter order
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.shapes)

    def check_fits(self, model: "torch.nn.Module") -> None:
        """Raise MaskError naming the first tensor where the mask and the model disagree."""
        params = dict(model.named_parameters())
        for name, p in params.items():
            if name not in self.shapes:
                raise MaskError(MSG_MISSING_IN_MASK.format(name=name))
            if list(p.shape) != list(self.shapes[name]):
                raise MaskError(MSG_SHAPE.format(name=name, model=list(p.shape), mask=list(self.shapes[name])))
        for name in self.shapes:
            if name not in params:
                raise MaskError(MSG_EXTRA_IN_MASK.format(name=name))

    def check_made_on(self, model: "torch.nn.Module", model_path: str | os.PathLike, *, flag: str,
                      path: str | os.PathLike, purpose: str) -> None:
        """check_fits, and that the gradients were computed on the file `model_path` (the SHA-256 the mask's
        provenance records, when it records one)."""
        from ..core.provenance import input_sha256, sha256_file

        self.check_fits(model)
        made_on = input_sha256(self.meta, "--model")
        if made_on is None:
            return
        sha = sha256_file(model_path)
        if made_on != sha:
            raise MaskError(MSG_OTHER_MODEL.format(flag=flag, mask=path, made_on=made_on[:12], model=model_path,
                                                   sha=sha[:12], purpose=purpose))


def save_mask(path: str | os.PathLike, mask: Mask) -> Path:
    import torch
    from safetensors.torch import save_file

    chosen = set(mask.selected)
    tensors = {
        name: torch.full([1] * len(shape), name in chosen, dtype=torch.bool) for name, shape in mask.shapes.items()
    }
    meta = {"format": FORMAT, **mask.meta, "selected": mask.selected, "total": mask.total, "shapes": mask.shapes}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """The fields load_mask and finetune read: a wrong type is one line naming the field, never a traceback."""
    def bad(field: str, rule: str) -> MaskError:
        return MaskError(MSG_MASK_META.format(path=path, field=field, rule=rule))

    shapes = meta.get("shapes")
    if not (isinstance(shapes, dict) and shapes and all(
            isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
            for s in shapes.values())):
        raise bad("shapes", "a mapping of tensor names to shapes (lists of positive whole numbers)")
    selected = meta.get("selected", [])
    if not (isinstance(selected, list) and all(isinstance(n, str) for n in selected)):
        raise bad("selected", "a list of tensor names")
    scores = meta.get("scores", {})
    if not (isinstance(scores, dict) and all(
            isinstance(v, dict) and all(_finite(v.get(d)) for d in ("delta1", "delta2")) for v in scores.values())):
        raise bad("scores", "a mapping of tensor names to finite delta1 and delta2 numbers")
    sizes = meta.get("sizes", {})
    if not (isinstance(sizes, dict) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                            for v in sizes.values())):
        raise bad("sizes", "a mapping of set names to positive whole numbers")


def load_mask(path: str | os.PathLike) -> Mask:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MaskError(MSG_NOT_FOUND.format(path=path))
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
            if raw is None:
                raise MaskError(MSG_NOT_MASK.format(path=path))
            meta = json.loads(raw)
            flags = {}
            for name in fh.keys():
                flat = fh.get_tensor(name).flatten()
                if flat.numel() == 0:
                    raise MaskError(MSG_MASK_EMPTY_TENSOR.format(path=path, name=name))
                flags[name] = bool(flat[0])
    except (SafetensorError, OSError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        raise MaskError(MSG_NOT_MASK.format(path=path)) from None
    if not isinstance(meta, dict):
        raise MaskError(MSG_NOT_MASK.format(path=path))
    _check_meta(path, meta)
    shapes = {name: list(shape) for name, shape in meta.pop("shapes").items()}
    meta.pop("total", None)
    meta.pop("format", None)
    selected = [n for n in shapes if flags.get(n)]
    if selected != meta.get("selected", selected):
        raise MaskError(f"{path}: mask tensors disagree with the selected names in its metadata")
    meta.pop("selected", None)
    return Mask(selected=selected, shapes=shapes, meta=meta)


def mask_scores(mask: Mask) -> dict[str, TensorScore]:
    """The Δ1/Δ2 scores a mask file stores, in parameter order."""
    return {n: TensorScore(delta1=float(v["delta1"]), delta2=float(v["delta2"]))
            for n, v in mask.meta.get("scores", {}).items()}
