"""Student t quantiles (no scipy) against published table values, and the mean interval by hand."""

import math

import pytest

from aimfair_cli.fairness.stats import EXACT_MAX_DF, mean_ci, t_cdf, t_quantile

# Two-sided 95 % critical values t(0.975, df), as printed in standard t tables (6 decimals).
T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 9: 2.262157, 10: 2.228139,
        30: 2.042272, 100: 1.983972, 1000: 1.962339}


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("p,df,expected", [(0.95, 1, 6.313752), (0.995, 2, 9.924843), (0.9, 4, 1.533206),
                                           (0.99, 20, 2.527977), (0.025, 2, -4.302653)])
def test_other_quantiles(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6)


def test_cdf_closed_forms_and_inverse():
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)))
    for df in (1, 2, 3, 7, 8, 50, 999):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


def test_large_df_approaches_the_normal_and_joins_smoothly():
    exact = t_quantile(0.975, EXACT_MAX_DF)
    approx = t_quantile(0.975, EXACT_MAX_DF + 1)
    assert 0 < exact - approx < 1e-5  # the quantile keeps decreasing across the switch to the expansion
    assert t_quantile(0.975, 10**7) == pytest.approx(1.959964, abs=1e-6)
    previous = math.inf
    for df in range(1, 60):
        q = t_quantile(0.975, df)
        assert q < previous
        previous = q


def test_bad_arguments():
    for df in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            t_quantile(0.975, df)
    for p in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            t_quantile(p, 3)


def test_mean_ci_by_hand_and_none_for_one_value():
    mean, ci = mean_ci([1.0, 2.0, 6.0])
    # mean 3, sample std sqrt(((-2)^2 + (-1)^2 + 3^2) / 2) = sqrt(7), half-width 4.302653 sqrt(7) / sqrt(3)
    half = 4.302653 * math.sqrt(7) / math.sqrt(3)
    assert mean == 3.0 and ci == pytest.approx((3 - half, 3 + half), abs=1e-5)
    assert mean_ci([0.25]) == (0.25, None)
