"""`FaceAttributes` (one concrete value per attribute) and the sampler that fills in unstated attributes.

A distribution spec has the shape of the vocabulary's `stereotypes` section:

    order: [gender, age, ...]              # draw order; rules may only look at attributes drawn earlier
    base: {attr: {value: weight, ...}}     # every attribute
    when: [{if: {attr: value}, then: {attr: {value: weight}}}, ...]   # later rules win

The same engine draws the generator's stereotyped defaults and the demo's natural distribution
(`aimfair_cli.render.natural`).
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.errors import ConfigError

MSG_BAD_SPEC = "attribute distribution: {reason}"


@dataclass(frozen=True)
class FaceAttributes:
    """Everything the renderers draw, as vocabulary values. `race` is drawn through `skin_tone`."""

    smiling: str = "no"
    gender: str = "female"
    age: str = "young"
    race: str = "white"
    skin_tone: str = "light"
    hair_style: str = "short"
    hair_color: str = "brown"
    facial_hair: str = "none"
    glasses: str = "no"
    hat: str = "no"
    earrings: str = "no"
    lipstick: str = "no"
    eye_color: str = "brown"
    face_shape: str = "oval"
    head_pose: str = "frontal"
    background: str = "plain"
    lighting: str = "soft"

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes: str) -> "FaceAttributes":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @property
    def key(self) -> tuple[str, ...]:
        """All values in field order: a hashable combination (used to count distinct combinations)."""
        return dataclasses.astuple(self)


def _key(value: Any) -> str:
    if isinstance(value, bool):  # YAML 1.1 yes/no
        return "yes" if value else "no"
    return str(value)


def _cdf(dist: Mapping[Any, float]) -> tuple[list[str], list[float]]:
    """Values and cumulative probabilities, in the mapping's own order (inverse-CDF sampling)."""
    items = [(_key(k), float(w)) for k, w in dist.items() if float(w) > 0]
    if not items:
        raise ConfigError(MSG_BAD_SPEC.format(reason="a distribution has no positive weight"))
    total = sum(w for _, w in items)
    cum, acc = [], 0.0
    for _, w in items:
        acc += w / total
        cum.append(acc)
    return [v for v, _ in items], cum


def _pick(cdf: tuple[list[str], list[float]], u: float) -> str:
    values, cum = cdf
    return values[min(bisect.bisect_right(cum, u), len(values) - 1)]


_COMPILED: dict[int, tuple[Any, Any]] = {}  # id(spec) -> (spec, compiled); the spec is kept so its id stays unique


def _compile(spec: Mapping[str, Any]):
    hit = _COMPILED.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    names = FaceAttributes.names()
    order = [str(a) for a in spec.get("order", [])]
    if sorted(order) != sorted(names):
        missing = sorted(set(names) - set(order))
        extra = sorted(set(order) - set(names))
        raise ConfigError(MSG_BAD_SPEC.format(reason=f"'order' must list every attribute (missing {missing}, unknown {extra})"))
    base = {str(a): _cdf(d) for a, d in (spec.get("base") or {}).items() if d}
    rules = []
    for rule in spec.get("when", []) or []:
        cond = {str(a): _key(v) for a, v in (rule.get("if") or {}).items()}
        rules.append((cond, {str(a): _cdf(d) for a, d in (rule.get("then") or {}).items()}))
    compiled = (order, base, rules)
    _COMPILED[id(spec)] = (spec, compiled)
    return compiled


def draw_attributes(spec: Mapping[str, Any], stated: Mapping[str, str], rng) -> FaceAttributes:
    """Fill every attribute: `stated` values are kept, the rest drawn from `spec` with `rng`.

    One uniform number is drawn per attribute whether or not it is stated, so stating one attribute never
    changes which value another (independent) attribute gets for the same seed.
    """
    order, base, rules = _compile(spec)
    values: dict[str, str] = {}
    for attr, u in zip(order, rng.random(len(order))):
        if attr in stated:
            values[attr] = str(stated[attr])
            continue
        cdf = base.get(attr)
        for cond, then in rules:
            if attr in then and all(values.get(a) == v for a, v in cond.items()):
                cdf = then[attr]
        if cdf is None:
            raise ConfigError(MSG_BAD_SPEC.format(reason=f"no distribution for '{attr}'"))
        values[attr] = _pick(cdf, float(u))
    return FaceAttributes(**values)


def attributes_from_prompt(prompt: str, rng, *, vocabulary=None) -> FaceAttributes:
    """What the `procedural` generator draws for a prompt: stated attributes, stereotyped defaults for the rest."""
    from .vocabulary import load_vocabulary

    vocab = vocabulary or load_vocabulary()
    return draw_attributes(vocab.stereotypes, vocab.parse(prompt), rng)
