"""The two synthetic sets of Selective Mask Generation, drawn from one generated pool.

- biased (S1): as many images as the real training set, its cells following the bias ratio and direction of
  the real data (official: N_R = 20000 -> 1000/9000/9000/1000 for cells (0,0)/(0,1)/(1,0)/(1,1));
- balanced (S2): N_S = N_R / G images per group (G = 4), i.e. as many synthetic as real images in total.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping

from ..core.errors import DataError
from ..fairness.cells import CELLS, cell_quotas
from ..training.images import row_key

# For each target value, the protected value of its minority cell. The CelebA direction: smiling men and
# non-smiling women are rare, i.e. cells (0,0) and (1,1) are the minority (see fairness/cells.py).
DEFAULT_MINORITY: dict[int, int] = {0: 0, 1: 1}

MSG_TOO_FEW = (
    "synthetic group {group} (target={y}, protected={s}) has {have} images; the {which} set needs {need}"
    " (generate more with `aimfair synth` or lower --n-synth)"
)


MSG_MISSING_CELL = ("the synthetic manifest has no image with target={y}, protected={s} (a group is missing); the "
                    "synthetic sets need all four groups (generate it with `aimfair synth`)")


def biased_quotas(n: int, bias: Fraction, minority: Mapping[int, int] = DEFAULT_MINORITY) -> dict[tuple[int, int], int]:
    """Exact per-cell counts for n images with ratio `bias`; `minority[y]` is the rare protected value for y."""
    base = cell_quotas(n, bias)  # minority cells (0,0),(1,1) in the CelebA direction
    lo, hi0, hi1 = base[(0, 0)], base[(0, 1)], base[(1, 0)]
    out = {}
    for y, hi in ((0, hi0), (1, hi1)):
        out[(y, minority[y])] = lo
        out[(y, 1 - minority[y])] = hi
    return out


def balanced_quotas(n: int) -> dict[tuple[int, int], int]:
    """n // 4 images per group."""
    return {c: n // len(CELLS) for c in CELLS}


@dataclass
class SyntheticSets:
    biased: list[dict[str, Any]]
    balanced: list[dict[str, Any]]
    biased_quotas: dict[tuple[int, int], int]
    balanced_quotas: dict[tuple[int, int], int]


def _pools(rows: list[dict[str, Any]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Rows per cell, each cell sorted by file name: a draw depends on the seed and the rows, not on the
    order of the manifest's lines."""
    pools: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in CELLS}
    for r in rows:
        pools[(r["target"], r["protected"])].append(r)
    for (y, s), pool in pools.items():
        if not pool:
            raise DataError(MSG_MISSING_CELL.format(y=y, s=s))
        pool.sort(key=row_key)
    return pools


def _draw(pools, quotas, rng: random.Random, which: str) -> list[dict[str, Any]]:
    out = []
    for cell in CELLS:
        pool, need = pools[cell], quotas[cell]
        if need > len(pool):
            group = pool[0].get("group", "?") if pool else "?"
            raise DataError(MSG_TOO_FEW.format(group=group, y=cell[0], s=cell[1], have=len(pool), which=which, need=need))
        order = list(range(len(pool)))
        rng.shuffle(order)
        out.extend(pool[i] for i in sorted(order[:need]))
    return out


def build_synthetic_sets(
    rows: list[dict[str, Any]],
    *,
    n: int,
    bias: Fraction,
    minority: Mapping[int, int] = DEFAULT_MINORITY,
    seed: int = 0,
    n_biased: int | None = None,
) -> SyntheticSets:
    """Draw S1 (n_biased images, default n, biased) and S2 (n/4 per group) from the same pool of synthetic rows."""
    pools = _pools(rows)
    bq = biased_quotas(n if n_biased is None else n_biased, bias, minority)
    biased = _draw(pools, bq, random.Random(f"{seed}:biased"), "biased")
    return SyntheticSets(biased=biased, balanced=draw_balanced(rows, n=n, seed=seed), biased_quotas=bq,
                         balanced_quotas=balanced_quotas(n))


def largest_biased(rows: list[dict[str, Any]], *, n: int, bias: Fraction,
                   minority: Mapping[int, int] = DEFAULT_MINORITY) -> int:
    """The largest size <= n whose biased quotas the pool's cells hold, by bisection (the quotas grow with the
    size but for rounding), or 0 when not even 4 images fit."""
    have = {c: len(p) for c, p in _pools(rows).items()}

    def fits(m: int) -> bool:
        return all(q <= have[c] for c, q in biased_quotas(m, bias, minority).items())

    lo, hi = 0, n  # fits(lo) is assumed, fits(hi) is tested first; quotas grow with the size
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo if lo >= len(CELLS) else 0


def draw_balanced(rows: list[dict[str, Any]], *, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """S2: n/4 images per group (default: as many as the smallest group holds). Fine-tuning with the same
    seed and n draws the same images as the mask's balanced set."""
    pools = _pools(rows)
    if n is None:
        n = min(len(p) for p in pools.values()) * len(CELLS)
    return _draw(pools, balanced_quotas(n), random.Random(f"{seed}:balanced"), "balanced")
