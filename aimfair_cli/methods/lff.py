"""Learning from Failure (Nam et al., NeurIPS 2020): two models trained together on each batch.

- The biased model learns with the generalized cross-entropy GCE(p, y) = (1 − p_y^q) / q, whose gradient is the
  cross-entropy's times p_y^q: it leans on the easy (bias-aligned) images.
- The debiased model (the one saved) learns with each image's cross-entropy weighted by its relative difficulty
  W = ℓ_B / (ℓ_B + ℓ_D), where ℓ_B, ℓ_D are exponential moving averages (factor `--lff-ema`) of the two models'
  losses on that image, each divided by its class's largest average (the released code's rule).
Both use the run's optimizer recipe (SGD, same learning rate and schedule). No group labels. Under torchrun the
biased model is wrapped in DDP too, and the moving averages are merged over ranks after every batch.
"""

from __future__ import annotations

from typing import Any

from .base import Context, Objective, all_reduce, per_example_bce

Q = 0.7
EMA = 0.7
Q_HELP = "LfF (--method lff): q of the biased model's generalized cross-entropy (LfF paper and code: 0.7)."
EMA_HELP = "LfF (--method lff): factor of the per-image loss moving averages (LfF's released code: 0.7)."


def gce_loss(logits: Any, targets: Any, q: float) -> Any:
    """[B] generalized cross-entropy (1 − p_y^q) / q of one logit, p_y the probability of the true class."""
    import torch

    p_true = torch.sigmoid((2 * targets - 1) * logits)
    return (1 - p_true ** q) / q


def ema_update(ema: Any, seen: Any, idx: Any, values: Any, factor: float) -> None:
    """In place at `idx`: an image's first loss is taken as is, later ones as factor·old + (1 − factor)·new."""
    keep = factor * seen[idx]
    ema[idx] = keep * ema[idx] + (1 - keep) * values
    seen[idx] = 1


def class_max(ema: Any, labels: Any) -> Any:
    """[2] the largest average of each class (the images not yet seen count as 0)."""
    import torch

    return torch.zeros(2, dtype=ema.dtype, device=ema.device).scatter_reduce(0, labels, ema, "amax",
                                                                              include_self=False)


def relative_difficulty(loss_b: Any, loss_d: Any, max_b: Any, max_d: Any) -> Any:
    """W = ℓ_B / (ℓ_B + ℓ_D) with each average divided by its class's largest one."""
    b, d = loss_b / max_b, loss_d / max_d
    return b / (b + d + 1e-8)


class LfFObjective(Objective):
    def __init__(self, biased: Any, labels: Any, q: float, ema: float) -> None:
        self.biased, self.labels, self.q, self.factor = biased, labels, q, ema

    def start(self, *, model, optimizer, device) -> None:
        import torch

        from ..core import dist

        super().start(model=model, optimizer=optimizer, device=device)
        self.biased.to(device).train()
        self.net = self.biased
        if dist.is_distributed():
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.biased, device_ids=[device.index] if device.type == "cuda" else None)
        group = optimizer.param_groups[0]
        self.main = optimizer
        self.opt = torch.optim.SGD(self.biased.parameters(), lr=group["lr"], momentum=group["momentum"],
                                   weight_decay=group["weight_decay"])
        n = len(self.labels)
        self.labels = self.labels.to(device)
        self.ema = torch.zeros(2, n, dtype=torch.float64, device=device)  # [biased, debiased] x images
        self.seen = torch.zeros(n, dtype=torch.float64, device=device)

    def _averages(self, idx: Any, loss_b: Any, loss_d: Any) -> None:
        """Update both averages at this batch's images; under torchrun with every rank's batch."""
        import torch

        n = self.seen.numel()
        idx = idx.to(self.device)
        values = torch.zeros(3, n, dtype=torch.float64, device=self.device)
        values[0, idx], values[1, idx], values[2, idx] = loss_b.double(), loss_d.double(), 1.0
        values = all_reduce(values)
        at = (values[2] > 0).nonzero().squeeze(1)
        mean = values[:2, at] / values[2, at]  # a padded duplicate under torchrun counts once
        for k in (0, 1):
            ema_update(self.ema[k], self.seen.clone(), at, mean[k], self.factor)
        self.seen[at] = 1

    def loss(self, images, logits, targets, protected, idx):
        import torch

        with torch.autocast(self.device.type, enabled=False):
            z_b = self.net(images.float()).squeeze(1).float()  # [B]
        loss_d = per_example_bce(logits, targets)
        self._averages(idx, per_example_bce(z_b.detach(), targets), loss_d.detach())
        at = idx.to(self.device)
        y = self.labels[at]
        max_b, max_d = (class_max(self.ema[k], self.labels).clamp(min=1e-12)[y] for k in (0, 1))
        weight = relative_difficulty(self.ema[0, at], self.ema[1, at], max_b, max_d).to(loss_d.dtype)
        for g in self.opt.param_groups:
            g["lr"] = self.main.param_groups[0]["lr"]  # the run's schedule
        self.opt.zero_grad(set_to_none=True)
        gce_loss(z_b, targets, self.q).mean().backward()
        self.opt.step()
        return (loss_d * weight).mean()

    def state_tensors(self):
        tensors = {f"biased.{k}": v for k, v in self.biased.state_dict().items()}
        for i, p in enumerate(self.biased.parameters()):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{i}"] = buf
        return {**tensors, "ema": self.ema, "seen": self.seen}

    def load_state_tensors(self, tensors):
        self.biased.load_state_dict({k[len("biased."):]: v for k, v in tensors.items() if k.startswith("biased.")})
        for i, p in enumerate(self.biased.parameters()):
            if f"momentum.{i}" in tensors:
                self.opt.state[p]["momentum_buffer"] = tensors[f"momentum.{i}"].to(self.device)
        self.ema.copy_(tensors["ema"])
        self.seen.copy_(tensors["seen"])


class LfF:
    name = "lff"
    group_labels = "none"
    summary = ("Learning from Failure (Nam et al. 2020): a GCE-trained biased model and a debiased model weighted by "
               "relative difficulty, trained together")

    def train(self, ctx: Context) -> tuple[Any, Any]:
        import torch

        model = ctx.new_model(True)
        biased = ctx.new_model(False)  # its own random start (the same ImageNet start with --weights imagenet)
        labels = torch.tensor(ctx.train.targets, dtype=torch.int64)
        objective = LfFObjective(biased, labels, ctx.cfg.lff_q, ctx.cfg.lff_ema)
        return model, ctx.fit(model, ctx.loader(None), objective=objective)

    def cost(self, cfg: Any) -> float:
        return 2.0


METHOD = LfF()
