"""Selective Mask Generation on hand-made gradients: Δ1/Δ2, K1 ∩ K2, ties, k bounds, and the mask file."""

import pytest
import torch

from aimfair_cli.core.errors import MaskError, UsageError
from aimfair_cli.masking.maskfile import Mask, load_mask, save_mask
from aimfair_cli.masking.selection import TensorScore, parse_topk, score_tensors, select


def grads(values):
    return {name: torch.tensor(v, dtype=torch.float32) for name, v in values.items()}


def test_deltas_are_mean_absolute_differences():
    g_r = grads({"a": [1.0, 2.0], "b": [0.0, 0.0, 0.0]})
    g_s1 = grads({"a": [0.0, 4.0], "b": [3.0, 0.0, 0.0]})
    g_s2 = grads({"a": [0.0, 0.0], "b": [3.0, 0.0, 6.0]})
    s = score_tensors(g_r, g_s1, g_s2)
    assert s["a"].delta1 == pytest.approx((1 + 2) / 2)
    assert s["a"].delta2 == pytest.approx((0 + 4) / 2)
    assert s["b"].delta1 == pytest.approx(3 / 3)
    assert s["b"].delta2 == pytest.approx(6 / 3)
    assert list(s) == ["a", "b"]


def test_cosine_score_ranks_by_direction_not_magnitude():
    g_r = grads({"a": [1.0, 0.0], "b": [1.0, 0.0]})
    g_s1 = grads({"a": [100.0, 0.0], "b": [0.0, 1.0]})
    g_s2 = grads({"a": [-1.0, 0.0], "b": [0.0, 1.0]})
    s = score_tensors(g_r, g_s1, g_s2, score="cosine")
    assert s["a"].delta1 == pytest.approx(0.0)  # same direction despite 100x magnitude
    assert s["b"].delta1 == pytest.approx(1.0)  # orthogonal
    assert s["a"].delta2 == pytest.approx(2.0)  # opposite
    assert s["b"].delta2 == pytest.approx(0.0)


def test_selection_is_k_smallest_delta1_intersect_k_largest_delta2():
    scores = {
        "t0": TensorScore(0.1, 0.9),  # low domain, high fairness -> in both
        "t1": TensorScore(0.2, 0.1),  # low domain only
        "t2": TensorScore(0.9, 0.8),  # high fairness only
        "t3": TensorScore(0.3, 0.7),  # K1 (3rd smallest) and K2 (3rd largest)
        "t4": TensorScore(0.8, 0.2),
    }
    assert select(scores, 3) == ["t0", "t3"]
    assert select(scores, 1) == ["t0"]
    assert select(scores, 2) == ["t0"]  # K1={t0,t1}, K2={t0,t2}


def test_ties_break_by_parameter_order():
    scores = {f"t{i}": TensorScore(0.5, 0.5) for i in range(6)}
    # All tied: K1 and K2 are both the first k in parameter order.
    assert select(scores, 2) == ["t0", "t1"]
    assert select(dict(reversed(list(scores.items()))), 2) == ["t5", "t4"]


def test_k_at_least_total_selects_everything():
    scores = {f"t{i}": TensorScore(i, -i) for i in range(4)}
    assert select(scores, 4) == list(scores)
    assert select(scores, 100) == list(scores)


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "0%", "101%", "", "5.5"])
def test_bad_topk_is_a_clear_error(bad):
    with pytest.raises(UsageError, match="--topk must be a positive tensor count or a percentage"):
        parse_topk(bad, 62)


def test_topk_accepts_counts_and_percentages():
    assert parse_topk("55", 62) == 55
    assert parse_topk(40, 62) == 40
    assert parse_topk("88%", 62) == 55
    assert parse_topk("1%", 62) == 1
    with pytest.raises(UsageError):
        select({"a": TensorScore(0, 0)}, 0)


def _mask_for(model, selected, **meta):
    return Mask(selected=selected, shapes={n: list(p.shape) for n, p in model.named_parameters()}, meta=meta)


def test_mask_file_round_trips(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 1))
    mask = _mask_for(model, ["0.weight", "2.bias"], k=3, scores={"0.weight": {"delta1": 0.1, "delta2": 0.2}})
    path = save_mask(tmp_path / "m.safetensors", mask)
    back = load_mask(path)
    assert back.selected == ["0.weight", "2.bias"]
    assert back.total == 6
    assert back.meta["k"] == 3
    assert back.meta["scores"]["0.weight"]["delta2"] == 0.2
    back.check_fits(model)
    from safetensors.torch import load_file

    flags = load_file(str(path))
    assert flags["0.weight"].dtype == torch.bool and flags["0.weight"].shape == (1, 1, 1, 1)
    assert bool(flags["2.bias"]) and not bool(flags["1.weight"])
    # broadcastable to the parameter
    assert (flags["0.weight"] * torch.ones_like(model[0].weight)).shape == model[0].weight.shape


def test_mask_for_a_different_model_names_the_first_mismatched_tensor(tmp_path):
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 1))
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 1))
    path = save_mask(tmp_path / "m.safetensors", _mask_for(small, ["0.weight"]))
    with pytest.raises(MaskError) as err:
        load_mask(path).check_fits(other)
    assert str(err.value) == (
        "mask does not fit the model: tensor '0.weight' has shape [8, 3, 3, 3] in the model but [4, 3, 3, 3] in the mask"
    )
    bigger = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 1), torch.nn.Linear(1, 1))
    with pytest.raises(MaskError, match="tensor '2.weight' is in the model but not in the mask"):
        load_mask(path).check_fits(bigger)


def test_a_file_that_is_not_a_mask_is_refused(tmp_path):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(MaskError, match="not an aimfair mask"):
        load_mask(bad)
    with pytest.raises(MaskError, match="mask not found"):
        load_mask(tmp_path / "missing.safetensors")


def test_opposite_is_k_largest_delta1_intersect_k_smallest_delta2_and_cutoffs():
    scores = {
        "a": TensorScore(0.1, 0.9),  # domain-insensitive, bias-sensitive: AIM-Fair's kind
        "b": TensorScore(0.9, 0.1),  # the opposite kind
        "c": TensorScore(0.8, 0.2),  # the opposite kind
        "d": TensorScore(0.2, 0.8),  # AIM-Fair's kind
        "e": TensorScore(0.5, 0.5),
    }
    from aimfair_cli.masking.selection import cutoffs, select_opposite

    assert select(scores, 2) == ["a", "d"]
    assert select_opposite(scores, 2) == ["b", "c"]  # k largest Δ1 {b, c} ∩ k smallest Δ2 {b, c}
    assert select_opposite(scores, 3) == ["b", "c", "e"]
    assert cutoffs(scores, 2) == (0.2, 0.8)  # Δ1 of the 2nd smallest, Δ2 of the 2nd largest
    assert select_opposite(scores, 5) == list(scores)
