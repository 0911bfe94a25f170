"""How varied a group's prompts are, measured the same way for every writer.

- `near_key`: two prompts are near-duplicates when they have the same words once case, punctuation, articles
  and linking words are dropped ("A smiling man, with glasses." ~ "a smiling man glasses"); writers reject both
  exact and near-duplicates.
- `diversity`: per group, the prompts, their distinct contexts (distinct near keys), the distinct-bigram ratio
  (distinct word bigrams / all word bigrams over the group's prompts: 1.0 when no two prompts share a pair of
  adjacent words; the shared subject of a group's prompts keeps it below 1) and the rejections by reason.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Mapping, Sequence

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
# Words that change nothing in a picture: dropping them makes "with glasses, in a park" ~ "glasses park".
_FILLER = {"a", "an", "the", "with", "and", "of", "in", "on", "at", "wearing", "is", "who", "her", "his", "their"}
MSG_NEAR_DUPLICATE = "near-duplicate"


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def near_key(prompt: str) -> str:
    return " ".join(w for w in words(prompt) if w not in _FILLER)


def bigram_ratio(prompts: Sequence[str]) -> float:
    pairs = [pair for p in prompts for pair in zip(words(p), words(p)[1:])]
    return round(len(set(pairs)) / len(pairs), 3) if pairs else 0.0


def diversity(prompts: Sequence[str], rejected: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The diversity figures of one group's prompts (written into the prompt file)."""
    counts = collections.Counter(dict(rejected or {}))
    return {
        "prompts": len(prompts),
        "distinct_contexts": len({near_key(p) for p in prompts}),
        "distinct_bigram_ratio": bigram_ratio(prompts),
        "rejected": {why: k for why, k in counts.most_common()},
    }


def summary_line(group: str, figures: Mapping[str, Any]) -> str:
    """'smiling_male: 5 prompts, 5 distinct contexts, distinct-bigram ratio 0.71; rejected: duplicate (2)'."""
    rejected = ", ".join(f"{why} ({k})" for why, k in (figures.get("rejected") or {}).items()) or "none"
    return (f"{group}: {figures['prompts']} prompts, {figures['distinct_contexts']} distinct contexts, "
            f"distinct-bigram ratio {figures['distinct_bigram_ratio']:.2f}; rejected: {rejected}")
