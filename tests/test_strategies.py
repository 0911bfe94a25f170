"""The strategy registry: every strategy parses, prints back to what it parsed, selects tensors of a real ResNet-18,
and is named in `finetune --help`; bad spellings get one line naming every form."""

import pytest
from typer.testing import CliRunner

from aimfair_cli.cli.app import app
from aimfair_cli.core.errors import UsageError
from aimfair_cli.masking import strategies
from aimfair_cli.masking.maskfile import Mask
from aimfair_cli.training.models import block_of, build_model

NAMES = [n for n, _ in build_model().named_parameters()]


def _mask(k: int = 40) -> Mask:
    """A mask with Δ1/Δ2 scores: Δ1 grows and Δ2 shrinks with the parameter index, so the opposite criterion picks
    the last tensors and the selection the first."""
    scores = {n: {"delta1": float(i), "delta2": float(len(NAMES) - i)} for i, n in enumerate(NAMES)}
    return Mask(selected=NAMES[:k], shapes={n: [1] for n in NAMES}, meta={"k": k, "scores": scores})


@pytest.mark.parametrize("entry", list(strategies.REGISTRY.values()), ids=lambda e: e.name)
def test_every_strategy_parses_round_trips_and_selects(entry):
    parsed = strategies.parse_strategy(entry.spelled)
    assert parsed.kind == entry.name and parsed.entry is entry
    assert strategies.parse_strategy(str(parsed)) == parsed  # what is recorded in a checkpoint parses back
    chosen = strategies.trainable_names(NAMES, parsed, mask=_mask() if entry.needs_mask else None, seed=3)
    assert chosen and set(chosen) <= set(NAMES)
    assert chosen == [n for n in NAMES if n in set(chosen)]  # parameter order
    if not entry.name == "full":
        assert len(chosen) < len(NAMES), entry.name


def test_what_each_strategy_selects():
    def pick(text, **kw):
        return strategies.trainable_names(NAMES, strategies.parse_strategy(text), **kw)

    assert pick("full") == NAMES
    assert {block_of(n) for n in pick("linear")} == {"fc"}
    assert {block_of(n) for n in pick("update:layer2")} == {"layer2"}
    assert "layer2" not in {block_of(n) for n in pick("freeze:layer2")} and len(pick("freeze:layer2")) > 40
    assert len(pick("random:50%")) == round(0.5 * len(NAMES))
    assert pick("random:0.5", seed=1) == pick("random:50%", seed=1) != pick("random:0.5", seed=2)
    assert pick("mask", mask=_mask(10)) == NAMES[:10]
    # the opposite at k = 40 of 62: the 40 largest Δ1 (the last 40) ∩ the 40 smallest Δ2 (the last 40)
    assert pick("opposite", mask=_mask(40)) == NAMES[-40:]


@pytest.mark.parametrize("text", ["half", "random", "random:0", "random:1.5", "update:layer9", "full:1", "freeze"])
def test_bad_spellings_name_every_form(text):
    with pytest.raises(UsageError) as err:
        strategies.parse_strategy(text)
    assert str(err.value) == (f"unknown strategy '{text}' (use mask, full, linear, random:RATIO, update:BLOCK, "
                              "freeze:BLOCK, opposite; blocks: stem, layer1, layer2, layer3, layer4, fc)")


def test_finetune_help_lists_every_strategy():
    result = CliRunner().invoke(app, ["finetune", "--help"], terminal_width=400)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for entry in strategies.REGISTRY.values():
        assert f"{entry.form}: {entry.help.rstrip('.')}" in text, entry.name


def test_opposite_needs_scores():
    bare = Mask(selected=NAMES[:5], shapes={n: [1] for n in NAMES}, meta={})
    with pytest.raises(UsageError, match="holds no Δ1/Δ2 scores"):
        strategies.trainable_names(NAMES, strategies.parse_strategy("opposite"), mask=bare, mask_path="m.safetensors")
