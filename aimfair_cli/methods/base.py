"""What a training method sees (`Context`) and what it is (`Method`); the pieces several methods share.

`aimfair pretrain --method NAME` builds one Context and calls `METHODS[NAME].train(ctx)`, which returns the model
to save and the FitResult of its final training. A method trains through `ctx.fit`, the shared loop
(`training.fit`) with the run's recipe, resumable state and model selection bound; a method that changes the loss
passes an `Objective`, one that trains a reference model first names it as a `stage` (its own resumable state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..core.manifest import Manifest
    from ..training.loop import FitResult, Predictions


@dataclass
class Context:
    """A pretraining run, as its method needs it (built by `stages/pretrain.py`)."""

    cfg: Any  # PretrainConfig: the method's hyper-parameters are its options
    train: "Manifest"
    val: "Manifest"
    device: "torch.device"
    new_model: Callable[[bool], "nn.Module"]  # (reseed) -> the initial model; reseed=True gives ERM's exact start
    loader: Callable[[Sequence[int] | None], Any]  # (pool) -> the shuffled, augmented training loader
    predict_train: Callable[["nn.Module"], "Predictions"]  # scores on every training image, no augmentation
    embed_val: Callable[["nn.Module"], "Predictions"]  # scores and last-layer inputs (features) on every val image
    fit: Callable[..., "FitResult"]  # (model, loader, *, stage=None, epochs=None, objective=None, select_val=True)
    notes: dict[str, Any] = field(default_factory=dict)  # what the method found (error-set size, ...): the checkpoint


class Method(Protocol):
    name: str
    group_labels: str  # "none", "val" or "train": which group labels it reads (validation or training images)
    summary: str  # one line for --help and docs/methods.md

    def train(self, ctx: Context) -> tuple["nn.Module", "FitResult"]: ...

    def cost(self, cfg: Any) -> float: ...  # training passes relative to ERM, for the studies' estimate


class Objective:
    """A loss in place of ERM's mean BCE (`training.train_one_epoch`). Subclasses override `loss`; those with
    state override `start`, `state_tensors` and `load_state_tensors` so `--resume` carries it."""

    def start(self, *, model: "nn.Module", optimizer: Any, device: "torch.device") -> None:
        self.device = device

    def loss(self, images, logits, targets, protected, idx) -> "torch.Tensor":  # logits, targets: [B] float
        raise NotImplementedError

    def state_tensors(self) -> dict[str, "torch.Tensor"]:
        return {}

    def load_state_tensors(self, tensors: dict[str, "torch.Tensor"]) -> None:
        pass


def per_example_bce(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """[B] BCE-with-logits losses, one per image."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def all_reduce(tensor: "torch.Tensor") -> "torch.Tensor":
    """Sum over ranks under torchrun (so every rank keeps the same method state), unchanged otherwise."""
    from ..core import dist

    if dist.is_distributed():
        dist.all_reduce_sum(tensor)
    return tensor
