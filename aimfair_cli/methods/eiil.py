"""Environment Inference for Invariant Learning (Creager et al., ICML 2021), with GroupDRO on the inferred groups.

1. A reference model: ERM for a few epochs (`--eiil-ref-epochs`), kept at its last epoch.
2. Environment inference: a soft assignment q_i ∈ (0, 1) of every training image to environment 1 (else 2),
   found by Adam on the logits of q, *maximising* the IRM penalty of the fixed reference model,
   Σ_e (∂/∂w R_e(w·z))² at w = 1 with R_1 = mean_i q_i ℓ_i, R_2 = mean_i (1 − q_i) ℓ_i (the released code's
   objective). For BCE, ∂/∂w ℓ(w z_i, y_i) at w = 1 is (σ(z_i) − y_i) z_i, so the penalty needs the logits only.
   Then environment = q_i > 1/2.
3. GroupDRO (`group_dro.py`) on the groups environment × target class (this tool's choice: the inferred
   environment stands where the protected attribute stands in GroupDRO's (target, protected) groups).
No group labels.
"""

from __future__ import annotations

from typing import Any

from .base import Context
from .group_dro import GroupDROObjective

REF_EPOCHS = 1
STEPS = 10000
LR = 0.001
REF_EPOCHS_HELP = ("EIIL (--method eiil): epochs of the ERM reference model (the paper leaves it to the user; 1 here, "
                   "as JTT's T on CelebA).")
STEPS_HELP = "EIIL (--method eiil): Adam steps of the environment inference (EIIL's released code: 10000)."
LR_HELP = "EIIL (--method eiil): learning rate of the environment inference (EIIL's released code: 0.001)."


def penalty_gradients(logits: Any, targets: Any) -> Any:
    """∂/∂w BCE(w·z_i, y_i) at w = 1, per image: (σ(z_i) − y_i) z_i."""
    import torch

    return (torch.sigmoid(logits) - targets) * logits


def infer_environments(logits: Any, targets: Any, *, steps: int, lr: float, seed: int) -> Any:
    """[N] int64 environment (0 or 1) of each image from the reference model's logits and the labels."""
    import torch

    a = penalty_gradients(logits.double(), targets.double())
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(a.numel(), generator=g, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        q = torch.sigmoid(w)
        penalty = (a * q).mean() ** 2 + (a * (1 - q)).mean() ** 2
        opt.zero_grad()
        (-penalty).backward()  # maximise
        opt.step()
    return (torch.sigmoid(w) > 0.5).long().detach()


class EIIL:
    name = "eiil"
    group_labels = "none"
    summary = ("EIIL (Creager et al. 2021): infer two environments from an ERM reference model by maximising the IRM "
               "penalty, then GroupDRO on environment × class")

    def train(self, ctx: Context) -> tuple[Any, Any]:
        import torch

        cfg = ctx.cfg
        reference = ctx.new_model(True)
        ctx.fit(reference, ctx.loader(None), stage="reference", epochs=cfg.eiil_ref_epochs, select_val=False)
        preds = ctx.predict_train(reference)
        scores = torch.from_numpy(preds.scores).double().clamp(1e-7, 1 - 1e-7)
        env = infer_environments(torch.logit(scores), torch.from_numpy(preds.targets),
                                 steps=cfg.eiil_steps, lr=cfg.eiil_lr, seed=cfg.seed)
        table = torch.zeros(len(ctx.train), dtype=torch.int64)
        table[torch.from_numpy(preds.indices)] = 2 * env + torch.from_numpy(preds.targets)
        ctx.notes["eiil_environment_sizes"] = [int((env == 0).sum()), int((env == 1).sum())]
        model = ctx.new_model(True)
        groups = lambda targets, protected, idx: table[idx.cpu()]  # noqa: E731
        return model, ctx.fit(model, ctx.loader(None), objective=GroupDROObjective(4, cfg.dro_step, groups))

    def cost(self, cfg: Any) -> float:
        return 1.0 + cfg.eiil_ref_epochs / max(cfg.epochs, 1)


METHOD = EIIL()
