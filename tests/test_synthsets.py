"""The synthetic-biased and synthetic-balanced sets drawn from one pool (DESIGN.md sizes)."""

from collections import Counter
from fractions import Fraction

import pytest

from aimfair_cli.core.errors import DataError
from aimfair_cli.masking.synthsets import biased_quotas, build_synthetic_sets, draw_balanced, largest_biased


def pool(per_cell):
    return [
        {"file_name": f"{t}{p}/{i}.png", "target": t, "protected": p, "group": f"g{t}{p}"}
        for t in (0, 1) for p in (0, 1) for i in range(per_cell)
    ]


def cells(rows):
    return Counter((r["target"], r["protected"]) for r in rows)


def test_official_sizes():
    q = biased_quotas(20000, Fraction(1, 9))
    assert q == {(0, 0): 1000, (0, 1): 9000, (1, 0): 9000, (1, 1): 1000}


def test_sets_follow_the_bias_and_balance():
    sets = build_synthetic_sets(pool(100), n=200, bias=Fraction(1, 9), seed=3)
    assert cells(sets.biased) == {(0, 0): 10, (0, 1): 90, (1, 0): 90, (1, 1): 10}
    assert cells(sets.balanced) == {(0, 0): 50, (0, 1): 50, (1, 0): 50, (1, 1): 50}
    assert len({r["file_name"] for r in sets.biased}) == 200  # no image twice within a set


def test_direction_can_be_flipped():
    sets = build_synthetic_sets(pool(100), n=200, bias=Fraction(1, 9), minority={0: 1, 1: 0})
    assert cells(sets.biased) == {(0, 0): 90, (0, 1): 10, (1, 0): 10, (1, 1): 90}


def test_same_seed_same_draw_and_finetune_draws_the_masks_balanced_set():
    a = build_synthetic_sets(pool(100), n=200, bias=Fraction(1, 9), seed=1)
    b = build_synthetic_sets(pool(100), n=200, bias=Fraction(1, 9), seed=1)
    c = build_synthetic_sets(pool(100), n=200, bias=Fraction(1, 9), seed=2)
    assert a.biased == b.biased and a.balanced == b.balanced
    assert a.balanced != c.balanced
    assert draw_balanced(pool(100), n=200, seed=1) == a.balanced


def test_default_balanced_uses_the_smallest_group():
    rows = pool(30) + [{"file_name": f"x{i}", "target": 1, "protected": 1} for i in range(20)]
    assert cells(draw_balanced(rows)) == {(0, 0): 30, (0, 1): 30, (1, 0): 30, (1, 1): 30}


def test_too_few_images_says_how_many_are_needed():
    with pytest.raises(DataError) as err:
        build_synthetic_sets(pool(50), n=200, bias=Fraction(1, 9))
    assert str(err.value) == (
        "synthetic group g01 (target=0, protected=1) has 50 images; the biased set needs 90"
        " (generate more with `aimfair synth` or lower --n-synth)"
    )


def test_largest_biased_set_the_pool_holds():
    rows = pool(40)  # 40 per cell: 1:9 fits 88 images (4/40/40/4), not 89 (4/41/40/4)
    assert largest_biased(rows, n=80, bias=Fraction(1, 9)) == 80
    assert largest_biased(rows, n=200, bias=Fraction(1, 9)) == 88
    assert cells(build_synthetic_sets(rows, n=80, bias=Fraction(1, 9), n_biased=88).biased) == \
        {(0, 0): 4, (0, 1): 40, (1, 0): 40, (1, 1): 4}
    with pytest.raises(DataError):
        build_synthetic_sets(rows, n=80, bias=Fraction(1, 9), n_biased=89)
    assert largest_biased(pool(1), n=200, bias=Fraction(1, 9)) == 0  # not even four images fit
