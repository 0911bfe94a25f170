"""The report's Pillow figures: round tick values, interval bars that stay inside a metric's range."""

import math

import pytest
from PIL import Image

from aimfair_cli.fairness.plots import _span, interval_ends, interval_lines, interval_scatter, nice_ticks


@pytest.mark.parametrize("lo,hi", [(-6.42, 5.1), (0.464, 0.81), (44.3, 81.2), (0.0, 100.0), (-0.3, 0.2),
                                   (1e-4, 3e-4), (12.0, 12.5), (-250.0, 9000.0)])
def test_ticks_are_round_and_inside_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 7
    assert all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
    step = ticks[1] - ticks[0]
    assert all(math.isclose(b - a, step, rel_tol=1e-6) for a, b in zip(ticks, ticks[1:]))
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5))
    assert all(math.isclose(t / step, round(t / step), abs_tol=1e-6) for t in ticks)  # multiples of the step
    if lo < 0 < hi:
        assert 0.0 in ticks and "-0" not in {f"{t:g}" for t in ticks}


def test_intervals_stop_at_the_limits():
    assert interval_ends(2.0, 5.0, (0.0, 100.0)) == (0.0, 7.0)
    assert interval_ends(98.0, 5.0, (0.0, 100.0)) == (93.0, 100.0)
    assert interval_ends(2.0, 5.0, None) == (-3.0, 7.0)
    lo, _ = _span([(2.0, 5.0), (30.0, 1.0)], (0.0, 100.0))
    assert -3.0 < lo < 0.0  # only the padding reaches below 0, not the interval
    assert _span([(2.0, 5.0), (30.0, 1.0)])[0] < -3.0


def test_figures_with_intervals_past_zero_render(tmp_path):
    points = {"a": (3.5, 6.0, 75.0, 1.0), "b": (33.0, 0.5, 78.5, 0.8)}
    out = interval_scatter(tmp_path / "f.png", [{"title": "t", "xlabel": "EO %", "ylabel": "ACC %", "points": points}],
                           limits=(0.0, 100.0))
    lines = interval_lines(tmp_path / "k.png", title="t", x=[40, 50], series={"EO": [(2.0, 4.0), (3.0, 1.0)]},
                           xlabel="k", limits=(0.0, 100.0))
    for path in (out, lines):
        with Image.open(path) as img:
            assert img.size[0] > 100 and img.getbbox() is not None
