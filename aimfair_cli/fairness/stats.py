"""Student t quantiles and mean confidence intervals, without scipy (not a dependency of aimfair).

The CDF for an integer number of degrees of freedom ν has a closed form as a finite trigonometric sum
(Abramowitz & Stegun 26.7.3 and 26.7.4): with θ = atan(|t| / √ν), A(t | ν) = P(|T| ≤ |t|) is

  ν = 1:      2θ/π
  ν odd ≥ 3:  (2/π) (θ + sinθ cosθ (1 + 2/3 cos²θ + (2·4)/(3·5) cos⁴θ + … up to cos^(ν−3)θ))
  ν even:     sinθ (1 + 1/2 cos²θ + (1·3)/(2·4) cos⁴θ + … up to cos^(ν−2)θ)

and F(t) = (1 + sign(t) A) / 2. The quantile inverts it by bisection (F is monotone, so this cannot miss).
The sum has about ν/2 terms, so above `EXACT_MAX_DF` degrees of freedom the quantile comes from the
Cornish–Fisher expansion around the normal quantile (A&S 26.7.5, four terms; its error there is below 1e-12,
far under anything a seed count can resolve).
"""

from __future__ import annotations

import math
from typing import Sequence

EXACT_MAX_DF = 1000

MSG_BAD_DF = "degrees of freedom must be a positive integer; got {df!r}"
MSG_BAD_P = "probability must be strictly between 0 and 1; got {p!r}"


def _check_df(df: int) -> None:
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(MSG_BAD_DF.format(df=df))


def _two_sided(t: float, df: int) -> float:
    """A(t | df) = P(|T| <= |t|) by the finite sums above."""
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = 1.0
            for k in range(1, (df - 3) // 2 + 1):  # coefficient grows by (2k) / (2k + 1) per power of cos²θ
                term *= c2 * (2 * k) / (2 * k + 1)
                total += term
            total *= s * math.cos(theta)
        return 2 / math.pi * (theta + total)
    total, term = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):  # coefficient grows by (2k − 1) / (2k) per power of cos²θ
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with `df` (a positive integer) degrees of freedom."""
    _check_df(df)
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    a = _two_sided(t, df)
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


def _cornish_fisher(p: float, df: int) -> float:
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p (e.g. p = 0.975, df = 2 -> 4.3027)."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(MSG_BAD_P.format(p=p))
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df > EXACT_MAX_DF:
        return _cornish_fisher(p, df)
    target = 2 * p - 1  # A(t) for the upper tail
    lo, hi = 0.0, 1.0
    while _two_sided(hi, df) < target:
        lo, hi = hi, 2 * hi
    for _ in range(200):  # halves the bracket each time; stops once it is as narrow as floats allow
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _two_sided(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    """Mean of `values` and its two-sided Student t interval (n − 1 degrees of freedom, sample std ddof=1).
    With one value there is no interval: None, not a zero-width one."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, (mean - half, mean + half)
