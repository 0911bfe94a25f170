"""Selective Mask Generation (paper §3.2): score each parameter tensor, keep K1 ∩ K2.

Given the mean loss gradients g_R, g_S1, g_S2 over the real-biased, synthetic-biased and synthetic-balanced
sets, per parameter tensor j:

    Δ1_j = mean |g_R,j − g_S1,j|    domain sensitivity  (ascending rank: smallest first)
    Δ2_j = mean |g_S1,j − g_S2,j|   fairness sensitivity (descending rank: largest first)

K1 = the k tensors with the smallest Δ1, K2 = the k with the largest Δ2, mask = K1 ∩ K2 (Eq. 4–7). k counts
tensors. Ties are broken by the model's parameter order, so the selection is deterministic.
The `cosine` score (paper Tab. 4) ranks by 1 − cos(g_a, g_b) instead of the mean absolute difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from .errors import UsageError

if TYPE_CHECKING:
    import torch

SCORES = ("absdiff", "cosine")

MSG_BAD_TOPK = "--topk must be a positive tensor count or a percentage like 88%, got '{value}'"
MSG_TOPK_TOO_LARGE = "--topk {k} is more than the model's {total} parameter tensors"


@dataclass(frozen=True)
class TensorScore:
    delta1: float  # domain sensitivity (real-biased vs synthetic-biased)
    delta2: float  # fairness sensitivity (synthetic-biased vs synthetic-balanced)


def parse_topk(value: str | int, total: int) -> int:
    """'55' -> 55 tensors; '88%' -> round(0.88 * total) tensors (at least 1)."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    try:
        if m:
            pct = float(m.group(1))
            if not 0 < pct <= 100:
                raise ValueError
            return max(1, round(pct / 100 * total))
        k = int(text)
    except ValueError:
        raise UsageError(MSG_BAD_TOPK.format(value=value)) from None
    if k <= 0:
        raise UsageError(MSG_BAD_TOPK.format(value=value))
    if k > total:
        raise UsageError(MSG_TOPK_TOO_LARGE.format(k=k, total=total))
    return k


def _distance(a: "torch.Tensor", b: "torch.Tensor", score: str) -> float:
    import torch

    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    if score == "absdiff":
        return float((a - b).abs().mean())
    # 1 - cosine similarity: 0 when the gradients point the same way, 2 when opposite. A zero gradient has no
    # direction; treat it as orthogonal (distance 1) rather than dividing by zero.
    denom = a.norm() * b.norm()
    if denom == 0:
        return 1.0
    return float(1.0 - torch.dot(a, b) / denom)


def score_tensors(
    g_real: Mapping[str, "torch.Tensor"],
    g_biased: Mapping[str, "torch.Tensor"],
    g_balanced: Mapping[str, "torch.Tensor"],
    *,
    score: str = "absdiff",
) -> dict[str, TensorScore]:
    """Δ1 and Δ2 for every tensor, in the order of `g_real` (the model's parameter order)."""
    if score not in SCORES:
        raise UsageError(f"unknown score '{score}' (known: {', '.join(SCORES)})")
    out = {}
    for name, gr in g_real.items():
        out[name] = TensorScore(
            delta1=_distance(gr, g_biased[name], score),
            delta2=_distance(g_biased[name], g_balanced[name], score),
        )
    return out


def select(scores: Mapping[str, TensorScore], k: int) -> list[str]:
    """Names in K1 ∩ K2, in parameter order. k ≥ tensor count selects every tensor."""
    if k <= 0:
        raise UsageError(MSG_BAD_TOPK.format(value=k))
    names: Sequence[str] = list(scores)
    order = {n: i for i, n in enumerate(names)}
    k = min(k, len(names))
    # sorted() is stable, and the secondary key makes the parameter order break ties explicitly.
    k1 = set(sorted(names, key=lambda n: (scores[n].delta1, order[n]))[:k])
    k2 = set(sorted(names, key=lambda n: (-scores[n].delta2, order[n]))[:k])
    return [n for n in names if n in k1 and n in k2]

