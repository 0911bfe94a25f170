"""The offline benchmark's calibration targets (the paper's regime, Tab. 3), checked per seed and on the mean.

Only rows that are not the method set the benchmark: ERM on biased real data, balanced synthetic data alone,
supplementation, repairing, and the premise the method builds on (full fine-tuning on the balanced synthetic set
repairs the worst group). Each target compares a row with ERM *of the same seed* (and, for the mean, the mean of
each metric over the seeds with ERM's mean). Metrics are in percent.

    checks = check_regime({"pretrained": [m0, m1, m2], "synthetic": [...], ...})   # GroupMetrics per seed
    failures = [c for c in checks if not c.holds]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from aimfair_cli.experiments.paper import TAB3_CELEBA_SMILING_MALE

# the rows that set the benchmark, with the paper's CelebA numbers (ACC, WST, EO, STD in percent)
PAPER = {row: TAB3_CELEBA_SMILING_MALE[row] for row in ("pretrained", "synthetic", "supplement", "repair", "full")}
ROWS = tuple(PAPER)
METRICS = ("acc", "wst", "eo", "std")

Values = Mapping[str, float]  # {"acc": .., "wst": .., "eo": .., "std": ..} in percent


@dataclass(frozen=True)
class Target:
    row: str
    text: str  # how the report states it
    test: Callable[[Values, Values], bool]  # (row's values, ERM's values of the same seed or the mean)


TARGETS: tuple[Target, ...] = (
    Target("pretrained", "ACC − WST ≥ 12", lambda r, e: r["acc"] - r["wst"] >= 12),
    Target("pretrained", "15 ≤ EO ≤ 30", lambda r, e: 15 <= r["eo"] <= 30),
    Target("synthetic", "1 ≤ ERM ACC − ACC ≤ 6", lambda r, e: 1 <= e["acc"] - r["acc"] <= 6),
    Target("synthetic", "WST ≥ ERM WST + 3", lambda r, e: r["wst"] >= e["wst"] + 3),
    Target("synthetic", "STD ≤ ½ ERM STD", lambda r, e: r["std"] <= e["std"] / 2),
    Target("synthetic", "EO ≤ ½ ERM EO", lambda r, e: r["eo"] <= e["eo"] / 2),
    Target("supplement", "EO ≥ ⅔ ERM EO", lambda r, e: r["eo"] >= 2 * e["eo"] / 3),
    Target("supplement", "ACC ≥ ERM ACC − 2", lambda r, e: r["acc"] >= e["acc"] - 2),
    Target("repair", "EO ≥ ⅔ ERM EO", lambda r, e: r["eo"] >= 2 * e["eo"] / 3),
    Target("repair", "ACC ≥ ERM ACC − 2", lambda r, e: r["acc"] >= e["acc"] - 2),
    Target("full", "WST ≥ ERM WST + 3", lambda r, e: r["wst"] >= e["wst"] + 3),
    Target("full", "EO ≤ ½ ERM EO", lambda r, e: r["eo"] <= e["eo"] / 2),
)


@dataclass(frozen=True)
class Check:
    target: Target
    where: str  # "mean" or "seed 2"
    holds: bool


def percent(metrics) -> dict[str, float]:
    """One run's GroupMetrics as {acc, wst, eo, std} in percent."""
    return {k: 100 * float(getattr(metrics, k)) for k in METRICS}


def mean_values(runs: Sequence[Values]) -> dict[str, float]:
    return {k: sum(r[k] for r in runs) / len(runs) for k in METRICS}


def check_regime(runs: Mapping[str, Sequence[Values]]) -> list[Check]:
    """Every target on the mean over seeds, then on each seed. `runs[row][i]` is seed i's values of a row; every row
    of `ROWS` must be there with the same number of seeds."""
    seeds = len(runs["pretrained"])
    means = {row: mean_values(runs[row]) for row in ROWS}
    checks = [Check(t, "mean", bool(t.test(means[t.row], means["pretrained"]))) for t in TARGETS]
    for i in range(seeds):
        checks += [Check(t, f"seed {i}", bool(t.test(runs[t.row][i], runs["pretrained"][i]))) for t in TARGETS]
    return checks


def table(checks: Sequence[Check]) -> list[str]:
    """One line per target: ✓/✗ on the mean and on each seed."""
    wheres = list(dict.fromkeys(c.where for c in checks))
    width = max(len(t.row) + len(t.text) + 3 for t in TARGETS)
    lines = [f"    {'target':<{width}} " + " ".join(f"{w:>7}" for w in wheres)]
    for t in TARGETS:
        marks = {c.where: "✓" if c.holds else "✗" for c in checks if c.target is t}
        lines.append(f"    {t.row + ': ' + t.text:<{width}} " + " ".join(f"{marks[w]:>7}" for w in wheres))
    return lines


def failures_text(checks: Sequence[Check]) -> list[str]:
    return [f"{c.target.row}: {c.target.text} fails on the {c.where}" for c in checks if not c.holds]
