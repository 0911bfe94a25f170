"""Deep Feature Reweighting (Kirichenko et al., ICLR 2023), the variant that reads validation group labels
(DFR^Val_Tr): ERM on the training set, then only the last layer is retrained, group-balanced, on the validation set.

1. ERM, exactly `--method erm`: the same start, epochs and model selection.
2. Every validation image's input to the last layer (ResNet-18: 512 features, no augmentation), standardised.
3. The L1 strength C is chosen from DFR's grid by worst-group accuracy: each C is fitted on group-balanced draws
   from one half of the validation set (split within each cell) and scored on the other half.
4. The last layer becomes the mean of `--dfr-retrains` L1-penalised logistic regressions with that C, each on a
   group-balanced draw from the whole validation set, folded back through the standardisation.

A group-balanced draw keeps, from each (target, protected) cell, as many images as the smallest cell has. Every
tensor but the last layer is ERM's, bit for bit. The objective is scikit-learn's C·Σ loss + ‖w‖₁ (DFR's released
code uses its liblinear solver), divided by C·n and solved by accelerated proximal gradient; unlike liblinear, the
intercept is not penalised.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import UsageError
from .base import Context

C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)  # DFR's released code, L1
RETRAINS = 10
RETRAINS_HELP = ("DFR (--method dfr): group-balanced draws averaged for the last layer, and per candidate C when it is "
                 "chosen (DFR's released code averages several; 10 is this tool's choice).")
MSG_NEEDS_GROUPS = ("--method dfr retrains the last layer on group-balanced validation images: {path} has no "
                    "protected label in {n} of its {total} rows")
MSG_NEEDS_CELLS = ("--method dfr needs at least 2 validation images in every (target, protected) cell (one per half "
                   "to choose C); {path} has {n} of target={y}, protected={s}")
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))


def check_val(val: Any) -> None:
    """Before training: every validation row has a protected label and every cell can be split in two."""
    missing = sum(p is None for p in val.protected)
    if missing:
        raise UsageError(MSG_NEEDS_GROUPS.format(path=val.path, n=missing, total=len(val)))
    pairs = list(zip(val.targets, val.protected))
    for y, s in CELLS:
        n = pairs.count((y, s))
        if n < 2:
            raise UsageError(MSG_NEEDS_CELLS.format(path=val.path, n=n, y=y, s=s))


def cell_of(targets: Any, protected: Any) -> Any:
    return 2 * targets + protected  # cells 0..3 as CELLS


def balanced_draw(cells: Any, rng: Any) -> Any:
    """Indices into `cells`: from each cell, without replacement, as many as the smallest cell has (sorted)."""
    import numpy as np

    members = [np.flatnonzero(cells == c) for c in range(len(CELLS))]
    n = min(len(m) for m in members)
    return np.sort(np.concatenate([rng.choice(m, size=n, replace=False) for m in members]))


def halves(cells: Any, rng: Any) -> tuple[Any, Any]:
    """A split of the rows in two, within each cell (the first half takes the larger share of an odd cell)."""
    import numpy as np

    first, second = [], []
    for c in range(len(CELLS)):
        m = rng.permutation(np.flatnonzero(cells == c))
        cut = (len(m) + 1) // 2
        first.append(m[:cut])
        second.append(m[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def soft_threshold(v: Any, t: float) -> Any:
    import torch

    return torch.sign(v) * torch.clamp(v.abs() - t, min=0)


def l1_logistic(x: Any, y: Any, c: float, *, tol: float = 1e-8, max_iter: int = 20000) -> tuple[Any, Any]:
    """(w [D], b) minimising mean BCE(x·w + b, y) + ‖w‖₁ / (c·n), in float64, by FISTA with the fixed step 1/L
    (L = ‖[x 1]‖₂² / 4n bounds the loss's curvature); stops when no coordinate moves more than `tol`."""
    import torch

    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    step = 4.0 * n / float(torch.linalg.matrix_norm(xb, ord=2)) ** 2
    shrink = step / (c * n)
    theta = torch.zeros(d + 1, dtype=torch.float64)
    z, t = theta.clone(), 1.0
    for _ in range(max_iter):
        new = z - step * (xb.T @ (torch.sigmoid(xb @ z) - y)) / n
        new[:d] = soft_threshold(new[:d], shrink)
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        moved = float((new - theta).abs().max())
        z = new + ((t - 1.0) / t_next) * (new - theta)
        theta, t = new, t_next
        if moved < tol:
            break
    return theta[:d], theta[d]


def averaged_fit(x: Any, y: Any, cells: Any, c: float, draws: int, rng: Any) -> tuple[Any, Any]:
    """The mean (w, b) of `draws` fits, each on a group-balanced draw of the rows."""
    fits = [l1_logistic(x[rows], y[rows], c) for rows in (balanced_draw(cells, rng) for _ in range(draws))]
    return sum(w for w, _ in fits) / draws, sum(b for _, b in fits) / draws


def worst_group(x: Any, y: Any, protected: Any, w: Any, b: Any) -> float:
    from ..fairness.metrics import group_metrics

    preds = ((x @ w + b) > 0).long()
    return group_metrics(y.long().tolist(), protected.tolist(), preds.tolist()).wst


def choose_c(x: Any, y: Any, protected: Any, cells: Any, draws: int, rng: Any) -> tuple[float, dict[float, float]]:
    """The grid's C with the best worst-group accuracy on the second half, fitted on the first (ties: the first)."""
    fit_rows, score_rows = halves(cells, rng)
    scores = {}
    for c in C_GRID:
        w, b = averaged_fit(x[fit_rows], y[fit_rows], cells[fit_rows], c, draws, rng)
        scores[c] = worst_group(x[score_rows], y[score_rows], protected[score_rows], w, b)
    return max(C_GRID, key=lambda c: scores[c]), scores


def retrain_last_layer(model: Any, preds: Any, *, draws: int, seed: int) -> dict[str, Any]:
    """Replaces `model.fc` by DFR's last layer fitted on `preds` (validation Predictions with features); returns
    what it found (the checkpoint's method notes)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    feats = torch.as_tensor(preds.features, dtype=torch.float64)
    mean, sd = feats.mean(0), feats.std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))  # a feature that never varies stays at weight 0
    x = (feats - mean) / sd
    y, protected = torch.as_tensor(preds.targets), torch.as_tensor(preds.protected)
    cells = cell_of(np.asarray(preds.targets), np.asarray(preds.protected))
    c, scores = choose_c(x, y, protected, cells, draws, rng)
    w, b = averaged_fit(x, y, cells, c, draws, rng)
    with torch.no_grad():
        model.fc.weight.copy_((w / sd).reshape(model.fc.weight.shape).to(model.fc.weight.dtype))
        model.fc.bias.copy_((b - (w * mean / sd).sum()).reshape(model.fc.bias.shape).to(model.fc.bias.dtype))
    return {"dfr_c": c, "dfr_half_wst": {str(k): round(v, 4) for k, v in scores.items()},
            "dfr_draw_size": len(CELLS) * int(np.bincount(cells, minlength=len(CELLS)).min()),
            "dfr_nonzero_weights": int((w != 0).sum())}


class DFR:
    name = "dfr"
    group_labels = "val"
    summary = ("Deep Feature Reweighting (Kirichenko et al. 2023): ERM, then the last layer retrained on group-balanced "
               "validation images (reads validation group labels)")

    def train(self, ctx: Context) -> tuple[Any, Any]:
        check_val(ctx.val)
        model = ctx.new_model(True)  # ERM's start, ERM's training
        result = ctx.fit(model, ctx.loader(None))
        ctx.notes.update(retrain_last_layer(model, ctx.embed_val(model), draws=ctx.cfg.dfr_retrains,
                                            seed=ctx.cfg.seed))
        return model, result

    def cost(self, cfg: Any) -> float:
        return 1.0  # the last-layer fits take seconds


METHOD = DFR()
