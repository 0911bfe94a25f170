"""GroupDRO (Sagawa et al., ICLR 2020) with the true training groups (target × protected): an oracle. It reads
the training set's group labels, which AIM-Fair and the other methods do not have; every result row says so.

Per batch: each group's mean loss ℓ_g; the group weights q (uniform at the start) move by exponentiated gradient,
q_g ← q_g · exp(η ℓ_g), normalised; the loss is Σ_g q_g ℓ_g (the released code's update, without its group
adjustment). Under torchrun the group losses of the q update are summed over ranks, so every rank keeps one q.
"""

from __future__ import annotations

from typing import Any, Callable

from ..core.errors import UsageError
from .base import Context, Objective, all_reduce, per_example_bce

STEP = 0.01
STEP_HELP = ("GroupDRO (--method group-dro, eiil): step size η of the group weights (Sagawa et al.'s released code: "
             "0.01).")
MSG_NEEDS_GROUPS = ("--method group-dro is the oracle that trains on group labels: {path} has no protected label in "
                    "{n} of its {total} rows")


def exponentiated_gradient(q: "Any", group_losses: "Any", step: float) -> "Any":
    """q_g · exp(η ℓ_g), normalised to sum to 1."""
    import torch

    q = q * torch.exp(step * group_losses)
    return q / q.sum()


class GroupDROObjective(Objective):
    """`groups(targets, protected, idx)` -> [B] int64 group ids in [0, n_groups)."""

    def __init__(self, n_groups: int, step: float, groups: Callable[..., Any]) -> None:
        self.n_groups, self.step, self.groups = n_groups, step, groups

    def start(self, *, model, optimizer, device) -> None:
        import torch

        super().start(model=model, optimizer=optimizer, device=device)
        self.q = torch.full((self.n_groups,), 1.0 / self.n_groups, dtype=torch.float64, device=device)

    def loss(self, images, logits, targets, protected, idx):
        import torch

        losses = per_example_bce(logits, targets)
        g = self.groups(targets, protected, idx).to(logits.device)
        sums = torch.zeros(self.n_groups, device=logits.device).index_add(0, g, losses)
        counts = torch.zeros(self.n_groups, device=logits.device).index_add(0, g, torch.ones_like(losses))
        group_loss = sums / counts.clamp(min=1)  # an absent group: 0
        both = all_reduce(torch.stack([sums.detach(), counts]).double())
        self.q = exponentiated_gradient(self.q, both[0] / both[1].clamp(min=1), self.step)
        return (group_loss * self.q.to(group_loss.dtype)).sum()

    def state_tensors(self):
        return {"q": self.q}

    def load_state_tensors(self, tensors):
        self.q = tensors["q"].to(self.device)


def true_groups(targets, protected, idx):
    return 2 * targets.long().cpu() + protected.long().cpu()  # cells (0,0), (0,1), (1,0), (1,1)


class GroupDRO:
    name = "group-dro"
    group_labels = "train"
    summary = "GroupDRO (Sagawa et al. 2020) on the true training groups: an oracle that uses training group labels"

    def train(self, ctx: Context) -> tuple[Any, Any]:
        missing = sum(p is None for p in ctx.train.protected)
        if missing:
            raise UsageError(MSG_NEEDS_GROUPS.format(path=ctx.train.path, n=missing, total=len(ctx.train)))
        model = ctx.new_model(True)
        return model, ctx.fit(model, ctx.loader(None), objective=GroupDROObjective(4, ctx.cfg.dro_step, true_groups))

    def cost(self, cfg: Any) -> float:
        return 1.0


METHOD = GroupDRO()
