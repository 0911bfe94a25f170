"""Bias ratios and per-cell quotas for biased subsets.

Cells are (target, protected) = (0,0), (0,1), (1,0), (1,1). For bias b (minority/majority, e.g. 1/9) the
quotas of n images are [b/(b+1)/2, 1/(b+1)/2, 1/(b+1)/2, b/(b+1)/2] * n: the bias runs "target 1 with
protected 0" and "target 0 with protected 1" (CelebA: smiling women, non-smiling men are the majority).
"""

from __future__ import annotations

import re
from fractions import Fraction

from ..core.errors import UsageError

CELLS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))

MSG_BAD_BIAS = (
    "cannot parse bias '{value}' (use minority:majority like 1:9 or 1/9, or the minority share like 0.1)"
)


BIAS_HELP = "Minority:majority ratio of the train cells: 1:9, 1/9, or the minority share 0.1."


def parse_bias(value: str | float) -> Fraction:
    """The ratio b = minority/majority, in (0, 1].

    '1:9' and '1/9' are minority:majority; a single number is the minority share, so '0.1' (10 % minority)
    is also 1/9.
    """
    text = str(value).strip()
    try:
        m = re.fullmatch(r"([0-9.]+)\s*[:/]\s*([0-9.]+)", text)
        if m:
            b = Fraction(m.group(1)) / Fraction(m.group(2))
        else:
            share = Fraction(text).limit_denominator(10_000)
            if not (0 < share <= Fraction(1, 2)):
                raise ValueError
            b = share / (1 - share)
    except (ValueError, ZeroDivisionError):
        raise UsageError(MSG_BAD_BIAS.format(value=value)) from None
    if not (0 < b <= 1):
        raise UsageError(MSG_BAD_BIAS.format(value=value))
    return b


def cell_quotas(n: int, bias: Fraction) -> dict[tuple[int, int], int]:
    """Exact per-cell counts summing to n: n=20000, b=1/9 -> 1000/9000/9000/1000."""
    if n <= 0:
        raise UsageError(f"n must be positive, got {n}")
    minority = n * bias / (bias + 1) / 2
    lo = int(minority)  # floor; the remainder goes to the majority cells so the total is exactly n
    hi_total = n - 2 * lo
    hi_a, hi_b = hi_total - hi_total // 2, hi_total // 2
    return {(0, 0): lo, (0, 1): hi_a, (1, 0): hi_b, (1, 1): lo}
