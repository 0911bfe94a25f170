"""Fairness metrics against numbers worked out by hand."""

import math
import random

import pytest

from aimfair_cli.errors import DataError
from aimfair_cli.metrics import MSG_EMPTY_CELL, MSG_NO_PROTECTED, aggregate, group_metrics

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
        "0,0": {"n": 4, "acc": 0.75},
        "0,1": {"n": 5, "acc": 0.4},
        "1,0": {"n": 2, "acc": 0.5},
        "1,1": {"n": 10, "acc": 0.9},
    }


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
