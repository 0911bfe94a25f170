"""Selective Mask Generation (paper §3.2): score each parameter tensor, keep K1 ∩ K2.

Given the mean loss gradients g_R, g_S1, g_S2 over the real-biased, synthetic-biased and synthetic-balanced
sets, per parameter tensor j:

    Δ1_j = mean |g_R,j − g_S1,j|    domain sensitivity  (ascending rank: smallest first)
    Δ2_j = mean |g_S1,j − g_S2,j|   fairness sensitivity (descending rank: largest first)

K1 = the k tensors with the smallest Δ1, K2 = the k with the largest Δ2, mask = K1 ∩ K2 (Eq. 4–7). k counts
tensors. Ties are broken by the model's parameter order, so the selection is deterministic.
`select_opposite` is a control the paper lacks: the k tensors with the *largest* Δ1 ∩ the k with the
*smallest* Δ2, at the same k — whether the gradient ranking matters beyond how many tensors are updated.
The `cosine` score (paper Tab. 4) ranks by 1 − cos(g_a, g_b) instead of the mean absolute difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from ..core.errors import UsageError

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


def top_k(scores: Mapping[str, TensorScore], k: int, *, opposite: bool = False) -> tuple[list[str], list[str]]:
    """(K1, K2), each in rank order. K1: the k smallest Δ1, K2: the k largest Δ2; with opposite=True the k
    largest Δ1 and the k smallest Δ2. Ties go to the earlier parameter either way."""
    if k <= 0:
        raise UsageError(MSG_BAD_TOPK.format(value=k))
    names: Sequence[str] = list(scores)
    order = {n: i for i, n in enumerate(names)}
    k = min(k, len(names))
    sign = -1 if opposite else 1
    # sorted() is stable, and the secondary key makes the parameter order break ties explicitly.
    k1 = sorted(names, key=lambda n: (sign * scores[n].delta1, order[n]))[:k]
    k2 = sorted(names, key=lambda n: (-sign * scores[n].delta2, order[n]))[:k]
    return k1, k2


def select(scores: Mapping[str, TensorScore], k: int) -> list[str]:
    """Names in K1 ∩ K2, in parameter order. k ≥ tensor count selects every tensor."""
    k1, k2 = map(set, top_k(scores, k))
    return [n for n in scores if n in k1 and n in k2]


def select_opposite(scores: Mapping[str, TensorScore], k: int) -> list[str]:
    """The opposite criterion at the same k: the k tensors most sensitive to the domain gap (largest Δ1) ∩ the
    k least sensitive to the bias (smallest Δ2), in parameter order."""
    k1, k2 = map(set, top_k(scores, k, opposite=True))
    return [n for n in scores if n in k1 and n in k2]


def cutoffs(scores: Mapping[str, TensorScore], k: int) -> tuple[float, float]:
    """(Δ1 of the k-th smallest, Δ2 of the k-th largest): a tensor is in K1 when its Δ1 is at most the first,
    in K2 when its Δ2 is at least the second (up to ties at the cut-off)."""
    k1, k2 = top_k(scores, k)
    return scores[k1[-1]].delta1, scores[k2[-1]].delta2

