"""Fine-tuning strategies: which parameter tensors receive updates (all others stay bit-identical).

A strategy is a tensor selection, nothing else (the Tab. 3 study, whose CLI name is `strategies`, compares ways to
train). One registry, read by `aimfair finetune` (parsing, `--help`, errors), by the studies and by the report. A
strategy is written `NAME` or `NAME:ARG`; each entry is a name, the form of its argument (how it is parsed) and a
selection function. Adding a baseline is one `register(...)` call below.

    mask       AIM-Fair, Eq. 8: the tensors selected by `aimfair mask` (what `finetune --mask FILE` runs);
    full       every tensor (full fine-tuning);
    linear     the fc layer only (linear probing);
    random:R   a random R fraction of the tensors (seeded; the names are recorded in the checkpoint);
    update:B   one block only (sub-tuning; B in stem, layer1..layer4, fc);
    freeze:B   every block but one;
    opposite   a control the paper lacks, with --mask: the mask's opposite criterion at the same k (the k tensors
               most sensitive to the domain gap ∩ the k least sensitive to the bias).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UsageError
from ..training.models import PARAM_BLOCKS, block_of

MSG_MASK_WITHOUT_SCORES = "{path}: the mask holds no Δ1/Δ2 scores, so its opposite cannot be computed"


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy: its registry name and its argument in canonical form ("0.5", "layer3" or None)."""

    kind: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"

    @property
    def entry(self) -> "Entry":
        return REGISTRY[self.kind]


@dataclass(frozen=True)
class Selection:
    """What a selection function may look at: the model's parameter names (in order), the mask (when the strategy
    reads one), the mask's path (for messages) and the seed."""

    names: list[str]
    mask: Any = None
    mask_path: Path | None = None
    seed: int = 0


@dataclass(frozen=True)
class Entry:
    name: str
    form: str  # how it is written: "full", "random:RATIO", "update:BLOCK"
    help: str
    select: Callable[[Strategy, Selection], set[str]]
    parse_arg: Callable[[str], str] | None = None  # None: takes no argument; else ARG text -> canonical, or ValueError
    needs_mask: bool = False
    example: str = ""  # one valid spelling (tests, --help)

    @property
    def spelled(self) -> str:
        return self.example or self.name


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    REGISTRY[entry.name] = entry
    return entry


def _ratio(text: str) -> str:
    m = re.fullmatch(r"(\d*\.?\d+)(%?)", text)
    if not m:
        raise ValueError
    ratio = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 < ratio <= 1:
        raise ValueError
    return f"{ratio:g}"


def _block(text: str) -> str:
    if text not in PARAM_BLOCKS:
        raise ValueError
    return text


def _opposite(strategy: Strategy, sel: Selection) -> set[str]:
    from .maskfile import mask_scores
    from .selection import select_opposite

    scores = mask_scores(sel.mask)
    if not scores or "k" not in sel.mask.meta:
        raise UsageError(MSG_MASK_WITHOUT_SCORES.format(path=sel.mask_path))
    return set(select_opposite(scores, int(sel.mask.meta["k"])))


def _random(strategy: Strategy, sel: Selection) -> set[str]:
    count = max(1, round(float(strategy.arg) * len(sel.names)))
    return set(random.Random(f"{sel.seed}:random-tensors").sample(sel.names, count))


register(Entry("mask", "mask", "AIM-Fair: the tensors of --mask FILE (the default when --mask is given).",
               lambda s, sel: set(sel.mask.selected), needs_mask=True))
register(Entry("full", "full", "every tensor (full fine-tuning).", lambda s, sel: set(sel.names)))
register(Entry("linear", "linear", "the fc layer only (linear probing).",
               lambda s, sel: {n for n in sel.names if block_of(n) == "fc"}))
register(Entry("random", "random:RATIO", "a seeded random share of the tensors, RATIO in (0, 1] or a percentage.",
               _random, parse_arg=_ratio, example="random:0.5"))
register(Entry("update", "update:BLOCK", "one block only (BLOCK: stem, layer1..layer4, fc).",
               lambda s, sel: {n for n in sel.names if block_of(n) == s.arg}, parse_arg=_block, example="update:layer4"))
register(Entry("freeze", "freeze:BLOCK", "every block but BLOCK.",
               lambda s, sel: {n for n in sel.names if block_of(n) != s.arg}, parse_arg=_block, example="freeze:fc"))
register(Entry("opposite", "opposite", "with --mask: the k tensors most sensitive to the domain gap ∩ the k least "
               "sensitive to the bias, at the mask's k (a control the paper lacks).", _opposite, needs_mask=True))


def forms() -> str:
    """"mask, full, linear, random:RATIO, ..." — every strategy as it is written."""
    return ", ".join(e.form for e in REGISTRY.values())


def help_text() -> str:
    """One line per strategy, for `finetune --help`."""
    return "; ".join(f"{e.form}: {e.help.rstrip('.')}" for e in REGISTRY.values()) + "."


def parse_strategy(text: str) -> Strategy:
    """'random:50%' -> Strategy('random', '0.5'); a one-line UsageError naming every form otherwise."""
    text = text.strip().lower()
    name, sep, arg = text.partition(":")
    entry = REGISTRY.get(name)
    try:
        if entry is None or bool(sep) != (entry.parse_arg is not None):
            raise ValueError
        return Strategy(name, entry.parse_arg(arg) if entry.parse_arg else None)
    except ValueError:
        raise UsageError(f"unknown strategy '{text}' (use {forms()}; blocks: {', '.join(PARAM_BLOCKS)})") from None


def trainable_names(names: list[str], strategy: Strategy, *, mask: Any = None, mask_path: Path | None = None,
                    seed: int = 0) -> list[str]:
    """The parameter names that receive updates, in parameter order."""
    chosen = strategy.entry.select(strategy, Selection(names=list(names), mask=mask, mask_path=mask_path, seed=seed))
    return [n for n in names if n in chosen]
