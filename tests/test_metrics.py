"""Fairness metrics against numbers worked out by hand."""

import math
import random

import pytest

from aimfair_cli.core.errors import DataError
from aimfair_cli.fairness.metrics import GroupMetrics, MSG_EMPTY_CELL, MSG_NO_PROTECTED, aggregate, group_metrics

# (y, s): (n, correct) — every cell has a different size and accuracy.
HAND = {(0, 0): (4, 3), (0, 1): (5, 2), (1, 0): (2, 1), (1, 1): (10, 9)}


def _arrays(cells, seed=0):
    rows = []
    for (y, s), (n, correct) in cells.items():
        rows += [(y, s, y)] * correct + [(y, s, 1 - y)] * (n - correct)
    random.Random(seed).shuffle(rows)
    ys, ss, ps = zip(*rows)
    return list(ys), list(ss), list(ps)


def test_headline_numbers_by_hand():
    m = group_metrics(*_arrays(HAND))
    # cell accuracies: (0,0) 3/4, (0,1) 2/5, (1,0) 1/2, (1,1) 9/10
    assert m.acc == pytest.approx(15 / 21)
    assert m.wst == pytest.approx(0.4)
    # TPR_s0 = 0.5, TPR_s1 = 0.9 -> 0.4;  FPR_s0 = 0.25, FPR_s1 = 0.6 -> 0.35
    assert m.eo == pytest.approx((0.4 + 0.35) / 2)
    assert m.eo_worst == pytest.approx(0.4)
    # population std of (0.75, 0.4, 0.5, 0.9): mean 0.6375, variance 0.156875 / 4
    assert m.std == pytest.approx(math.sqrt(0.156875 / 4))


def test_eo_forms_differ_when_fpr_gap_dominates():
    cells = {(0, 0): (10, 10), (0, 1): (10, 4), (1, 0): (10, 9), (1, 1): (10, 8)}
    m = group_metrics(*_arrays(cells))
    # dTPR = 0.1, dFPR = 0.6
    assert m.eo == pytest.approx(0.35)
    assert m.eo_worst == pytest.approx(0.6)


def test_to_dict_layout():
    d = group_metrics(*_arrays(HAND)).to_dict()
    assert list(d) == ["acc", "wst", "eo", "eo_worst", "std", "positive_rate", "degenerate", "cells"]
    assert d["degenerate"] is False
    assert d["cells"] == {
        "0,0": {"n": 4, "correct": 3, "acc": 0.75},
        "0,1": {"n": 5, "correct": 2, "acc": 0.4},
        "1,0": {"n": 2, "correct": 1, "acc": 0.5},
        "1,1": {"n": 10, "correct": 9, "acc": 0.9},
    }
    back = GroupMetrics.from_dict(d)  # what `eval --out` files are read back with
    assert back == group_metrics(*_arrays(HAND)) and back.to_dict() == d


def test_empty_cell_is_an_error():
    ys, ss, ps = _arrays({(0, 0): (3, 3), (0, 1): (2, 1), (1, 1): (4, 4)})
    with pytest.raises(DataError) as e:
        group_metrics(ys, ss, ps)
    assert str(e.value) == MSG_EMPTY_CELL.format(y=1, s=0)


@pytest.mark.parametrize("missing", [None, -1])
def test_missing_protected_is_an_error(missing):
    ys, ss, ps = _arrays(HAND)
    ss[3] = missing
    with pytest.raises(DataError) as e:
        group_metrics(ys, ss, ps)
    assert str(e.value) == MSG_NO_PROTECTED.format(n=1, total=21)


def test_labels_must_be_binary():
    ys, ss, ps = _arrays(HAND)
    ys[0] = 2
    with pytest.raises(DataError, match="targets must be 0 or 1; found 2"):
        group_metrics(ys, ss, ps)


def test_aggregate_mean_sample_std_and_wst_both_ways():
    a = group_metrics(*_arrays({(0, 0): (10, 9), (0, 1): (10, 5), (1, 0): (10, 8), (1, 1): (10, 9)}))
    b = group_metrics(*_arrays({(0, 0): (10, 9), (0, 1): (10, 8), (1, 0): (10, 6), (1, 1): (10, 9)}))
    agg = aggregate([a, b])
    assert agg["n_runs"] == 2 and agg["std_kind"] == "sample"
    assert agg["acc"]["mean"] == pytest.approx((31 / 40 + 32 / 40) / 2)
    assert agg["acc"]["std"] == pytest.approx(math.sqrt(2 * (0.5 / 40) ** 2))  # ddof=1 over two runs
    # per-run WST 0.5 and 0.6; mean cells (0.9, 0.65, 0.7, 0.9) -> min 0.65
    assert agg["wst_mean_of_runs"]["mean"] == pytest.approx(0.55)
    assert agg["wst_mean_of_runs"]["std"] == pytest.approx(math.sqrt(0.005))
    assert agg["wst_of_mean_cells"] == pytest.approx(0.65)
    assert agg["cells"]["0,1"] == {"n": 10, "acc": pytest.approx(0.65), "acc_std": pytest.approx(math.sqrt(0.045))}
    assert set(agg) >= {"eo", "eo_worst", "std"}


def test_aggregate_of_one_run_has_zero_spread():
    m = group_metrics(*_arrays(HAND))
    agg = aggregate([m])
    assert agg["eo"] == {"mean": pytest.approx(m.eo), "std": 0.0}
    assert agg["wst_of_mean_cells"] == pytest.approx(m.wst)


def _cells(accs, n=10000):
    """GroupMetrics with n images in every cell and the given accuracies (in %, two decimals) for cells
    (0,0), (0,1), (1,0), (1,1)."""
    from aimfair_cli.fairness.metrics import CELLS, GroupMetrics

    return GroupMetrics(cells={c: (n, round(a * n / 100)) for c, a in zip(CELLS, accs)})


def test_std_of_mean_cells_is_the_papers_tab3_number():
    # Two seeds whose cell accuracies average to the paper's Tab. 3 cells 88.16 / 91.40 / 90.25 / 84.20.
    a = _cells([90.16, 89.40, 92.25, 82.20])
    b = _cells([86.16, 93.40, 88.25, 86.20])
    agg = aggregate([a, b])
    # by hand: mean 88.5025; deviations -0.3425, 2.8975, 1.7475, -4.3025;
    # squares 0.11730625 + 8.39550625 + 3.05375625 + 18.51150625 = 30.078075; /4 = 7.51951875; sqrt = 2.74217...
    assert agg["std_of_mean_cells"] == pytest.approx(math.sqrt(30.078075 / 4) / 100)
    assert f"{100 * agg['std_of_mean_cells']:.2f}" == "2.74"
    # the other form, the mean of the per-seed STDs, is a different number here (each seed has a wider spread)
    assert agg["std"]["mean"] == pytest.approx((a.std + b.std) / 2)
    assert abs(agg["std"]["mean"] - agg["std_of_mean_cells"]) > 0.003
    assert agg["wst_of_mean_cells"] == pytest.approx(0.8420)


# Three seeds of a strategy A and a reference B; 100 images per cell, so ACC is the mean of the cell accuracies.
A_RUNS = [[90, 80, 70, 60], [92, 78, 75, 61], [88, 85, 72, 63]]
B_RUNS = [[89, 79, 70, 58], [90, 80, 70, 60], [85, 80, 70, 61]]


def test_paired_ci_by_hand_on_three_runs():
    from aimfair_cli.fairness.metrics import paired

    a = [_cells(c, n=100) for c in A_RUNS]
    b = [_cells(c, n=100) for c in B_RUNS]
    p = paired(a, b)
    assert list(p) == ["acc", "wst", "eo", "std"]
    t = 4.303  # Student t, 97.5 % quantile, 2 degrees of freedom
    # ACC (fractions): A 0.75, 0.765, 0.77; B 0.74, 0.75, 0.74 -> diffs 0.010, 0.015, 0.030
    d = [0.010, 0.015, 0.030]
    mean = sum(d) / 3  # 0.018333...
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)  # sample std, ddof=1: 0.0104083
    half = t * sd / math.sqrt(3)
    assert p["acc"]["mean_diff"] == pytest.approx(mean)
    assert p["acc"]["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-5)  # 4.303 has 4 digits
    assert p["acc"]["wins"] == 3 and p["acc"]["n"] == 3
    # WST: A 0.60, 0.61, 0.63; B 0.58, 0.60, 0.61 -> diffs 0.02, 0.01, 0.02
    d = [0.02, 0.01, 0.02]
    mean, sd = 0.05 / 3, math.sqrt(((0.02 - 0.05 / 3) ** 2 * 2 + (0.01 - 0.05 / 3) ** 2) / 2)
    assert p["wst"]["mean_diff"] == pytest.approx(mean)
    assert p["wst"]["ci95"] == pytest.approx([mean - t * sd / math.sqrt(3), mean + t * sd / math.sqrt(3)], abs=1e-5)
    # EO = (|acc(1,1) - acc(1,0)| + |acc(0,1) - acc(0,0)|) / 2
    # A: (0.10 + 0.10)/2 = 0.10, (0.14 + 0.14)/2 = 0.14, (0.09 + 0.03)/2 = 0.06
    # B: (0.12 + 0.10)/2 = 0.11, (0.10 + 0.10)/2 = 0.10, (0.09 + 0.05)/2 = 0.07 -> diffs -0.01, +0.04, -0.01
    assert p["eo"]["mean_diff"] == pytest.approx(0.02 / 3)
    assert p["eo"]["wins"] == 2  # lower EO wins: seeds 0 and 2
    d = [-0.01, 0.04, -0.01]
    sd = math.sqrt(sum((x - 0.02 / 3) ** 2 for x in d) / 2)
    assert p["eo"]["ci95"] == pytest.approx([0.02 / 3 - t * sd / math.sqrt(3), 0.02 / 3 + t * sd / math.sqrt(3)],
                                            abs=1e-5)
    # STD: lower wins; A's cells spread more on every seed here
    assert p["std"]["wins"] == sum(x.std < y.std for x, y in zip(a, b))
    assert p["std"]["mean_diff"] == pytest.approx(sum(x.std - y.std for x, y in zip(a, b)) / 3)


def test_paired_tie_is_not_a_win_and_interval_can_exclude_zero():
    from aimfair_cli.fairness.metrics import excludes_zero, paired

    a = [_cells(c, n=100) for c in A_RUNS]
    p = paired(a, a)
    assert all(p[k]["wins"] == 0 and p[k]["mean_diff"] == 0 for k in p)
    assert not excludes_zero(p["acc"])  # [0, 0] touches 0
    b = [_cells(c, n=100) for c in B_RUNS]
    assert excludes_zero(paired(a, b)["wst"])  # diffs 0.02, 0.01, 0.02: interval [0.0023, 0.0310]
    assert not excludes_zero(paired(a, b)["eo"])


def test_paired_one_run_has_no_interval():
    from aimfair_cli.fairness.metrics import excludes_zero, format_paired, paired

    p = paired([_cells(A_RUNS[0], n=100)], [_cells(B_RUNS[0], n=100)])
    assert p["acc"] == {"mean_diff": pytest.approx(0.01), "ci95": None, "wins": 1, "n": 1}
    assert all(p[k]["ci95"] is None for k in p)
    assert not excludes_zero(p["acc"])
    assert format_paired(p["acc"]) == {"diff": "+1.00", "ci95": "—", "wins": "1/1"}


def test_paired_needs_as_many_runs_on_both_sides():
    from aimfair_cli.fairness.metrics import MSG_PAIRED_COUNT, paired

    with pytest.raises(DataError) as e:
        paired([_cells(c, n=100) for c in A_RUNS], [_cells(B_RUNS[0], n=100)])
    assert str(e.value) == MSG_PAIRED_COUNT.format(n=3, m=1)
