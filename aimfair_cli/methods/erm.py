"""ERM: the mean BCE loss over the biased real training set, no group labels (the paper's pretraining)."""

from __future__ import annotations

from typing import Any

from .base import Context


class ERM:
    name = "erm"
    group_labels = "none"
    summary = "empirical risk minimisation: the mean loss (the paper's pretraining)"

    def train(self, ctx: Context) -> tuple[Any, Any]:
        model = ctx.new_model(True)
        return model, ctx.fit(model, ctx.loader(None))

    def cost(self, cfg: Any) -> float:
        return 1.0


METHOD = ERM()
