"""Just Train Twice (Liu et al., ICML 2021): train ERM for T epochs, collect the training images it gets wrong (the
error set), then train again from the start on the training set with the error set upsampled λ times.

Upsampling, as JTT's released code does it: an epoch of the second training is a shuffle of every training image
once plus λ − 1 more copies of each error-set image. With λ = 1 (or no error) the second training reads ERM's
own epochs from ERM's start: ERM's weights, bit for bit.
No group labels (the paper tunes T and λ on worst-group validation accuracy; that is `--select`).
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import Context

EPOCHS = 1
UPWEIGHT = 50
EPOCHS_HELP = "JTT (--method jtt): epochs T of the identification model (JTT paper, CelebA: T = 1)."
UPWEIGHT_HELP = "JTT (--method jtt): λ, how many times each error-set image is seen per epoch (JTT paper, CelebA: 50)."


def error_set(preds: Any) -> list[int]:
    """Row indices of the training images the identification model classifies wrongly."""
    return [int(i) for i in preds.indices[preds.preds != preds.targets]]


def upsampled_pool(n: int, errors: Sequence[int], upweight: int) -> list[int]:
    """Every row once, then each error-set row λ − 1 more times: what a shuffled epoch draws from."""
    return list(range(n)) + [i for i in errors for _ in range(upweight - 1)]


class JTT:
    name = "jtt"
    group_labels = "none"
    summary = "Just Train Twice (Liu et al. 2021): ERM for T epochs, then retrain with its error set upsampled λ times"

    def train(self, ctx: Context) -> tuple[Any, Any]:
        cfg = ctx.cfg
        identify = ctx.new_model(True)
        ctx.fit(identify, ctx.loader(None), stage="identify", epochs=cfg.jtt_epochs, select_val=False)
        errors = error_set(ctx.predict_train(identify))
        ctx.notes["jtt_error_set"] = len(errors)
        model = ctx.new_model(True)  # the same start as ERM's
        upsample = errors and cfg.jtt_upweight > 1  # else nothing is upsampled: ERM's own epochs
        pool = upsampled_pool(len(ctx.train), errors, cfg.jtt_upweight) if upsample else None
        return model, ctx.fit(model, ctx.loader(pool))

    def cost(self, cfg: Any) -> float:
        # the identification epochs plus longer epochs: each error-set image λ times. The error set is unknown
        # before it is found; 30 % of the images, as the offline benchmark's models err after a short first
        # training (46 % in `demo --quick`), is the planning guess (a CelebA model with ImageNet weights errs less)
        return 1.0 + cfg.jtt_epochs / max(cfg.epochs, 1) + 0.3 * (cfg.jtt_upweight - 1)


METHOD = JTT()
