"""CVaR DRO (Levy et al., NeurIPS 2020): minimise the mean loss of the worst α-fraction of each batch.

The exact CVaR of the batch's empirical distribution: the losses sorted from the largest, each counted with
weight 1 until α·B is reached, the boundary example with the fractional rest, divided by α·B. No group labels.
"""

from __future__ import annotations

from typing import Any

from .base import Context, Objective, per_example_bce

ALPHA = 0.1
ALPHA_HELP = ("CVaR DRO (--method cvar-dro): the fraction α of each batch whose losses are minimised (α = 1 is ERM). "
              "0.1 is this tool's default, from the grid Levy et al. 2020 and JTT's comparison tune over; tune it.")


def cvar_loss(losses: "Any", alpha: float) -> "Any":
    """Mean of the largest α·n of `losses` [n], the boundary one weighted by the fractional remainder."""
    import torch

    n = losses.numel()
    mass = alpha * n
    ranked, _ = torch.sort(losses, descending=True)
    weights = torch.clamp(mass - torch.arange(n, device=losses.device, dtype=losses.dtype), 0, 1)  # 1, .., frac, 0
    return (ranked * weights).sum() / mass


class CVaRObjective(Objective):
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def loss(self, images, logits, targets, protected, idx):
        import torch.nn.functional as F

        if self.alpha >= 1:
            # the worst 100 %: the plain mean. ERM's own call, so α = 1 gives ERM's weights bit for bit (a sorted
            # sum, or a per-image loss averaged afterwards, rounds differently)
            return F.binary_cross_entropy_with_logits(logits, targets)
        return cvar_loss(per_example_bce(logits, targets), self.alpha)


class CVaRDRO:
    name = "cvar-dro"
    group_labels = "none"
    summary = "CVaR DRO (Levy et al. 2020): the mean loss of the worst α-fraction of each batch"

    def train(self, ctx: Context) -> tuple[Any, Any]:
        model = ctx.new_model(True)
        return model, ctx.fit(model, ctx.loader(None), objective=CVaRObjective(float(ctx.cfg.cvar_alpha)))

    def cost(self, cfg: Any) -> float:
        return 1.0


METHOD = CVaRDRO()
