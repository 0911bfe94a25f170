"""Fairness metrics: count each (target y, protected s) cell once, derive every headline number from the cells.

With acc(y,s) the accuracy of cell (y,s):
  TPR_s = acc(1,s), FPR_s = 1 - acc(0,s)
  ACC   = correct / n over all cells
  WST   = min over cells of acc(y,s)                     (worst-group accuracy)
  EO    = (|TPR_1 - TPR_0| + |FPR_1 - FPR_0|) / 2        (fairlearn equalized_odds_difference, agg="mean";
                                                          the paper's Eq. 9)
  EO_worst = max(|TPR_1 - TPR_0|, |FPR_1 - FPR_0|)       (fairlearn's default agg="worst_case")
  STD   = population std of the 4 cell accuracies
All values are fractions in [0, 1].

Over runs (seeds), `aggregate` gives mean ± sample std of each, and WST and STD also the way the paper's released
code aggregates: computed once from the seed-averaged cell accuracies. Runs of two strategies on the same seeds
are paired: `paired` gives the mean difference per metric with a Student t interval over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..core.errors import DataError
from .cells import CELLS

HEADLINE = ("acc", "wst", "eo", "eo_worst", "std")
STD_KIND = "sample"  # spread over runs: sample standard deviation (ddof=1); 0 for a single run

MSG_LENGTHS = "targets, protected and predictions differ in length ({sizes})"
MSG_NO_PROTECTED = "protected attribute missing for {n} of {total} images; evaluation needs it for every image"
MSG_BAD_VALUES = "{what} must be 0 or 1; found {value!r}"
MSG_EMPTY_CELL = "no test image in cell (target={y}, protected={s}); every (target, protected) cell needs at least one"
MSG_NO_RUNS = "nothing to aggregate: no runs"
MSG_PAIRED_COUNT = "a paired comparison needs as many runs as reference runs; got {n} and {m}"

# The metrics compared pairwise, and which way is better: +1 higher (ACC, WST), -1 lower (EO, STD).
PAIRED = (("acc", +1), ("wst", +1), ("eo", -1), ("std", -1))

# A classifier that gives one answer to (nearly) every image has equal error rates in every group by
# construction: EO 0 and STD 0 would read as "perfectly fair". Such a run is flagged, never reported plainly.
DEGENERATE_SHARE = 0.99
DEGENERATE_MARK = "DEGENERATE"
MSG_DEGENERATE_NOTE = (
    "DEGENERATE: the model predicts one class for at least 99% of the test images; its fairness numbers "
    "(EO, STD) are meaningless"
)


def cell_key(y: int, s: int) -> str:
    return f"{y},{s}"


@dataclass(frozen=True)
class GroupMetrics:
    """Per-cell counts, cells[(y, s)] = (n, correct); every metric is a property derived from them."""

    cells: dict[tuple[int, int], tuple[int, int]]

    def cell_acc(self, y: int, s: int) -> float:
        n, correct = self.cells[(y, s)]
        return correct / n

    @property
    def n(self) -> int:
        return sum(n for n, _ in self.cells.values())

    @property
    def acc(self) -> float:
        return sum(c for _, c in self.cells.values()) / self.n

    @property
    def wst(self) -> float:
        return min(self.cell_acc(*c) for c in CELLS)

    @property
    def _gaps(self) -> tuple[float, float]:
        d_tpr = abs(self.cell_acc(1, 1) - self.cell_acc(1, 0))
        d_fpr = abs((1 - self.cell_acc(0, 1)) - (1 - self.cell_acc(0, 0)))
        return d_tpr, d_fpr

    @property
    def eo(self) -> float:
        return sum(self._gaps) / 2

    @property
    def eo_worst(self) -> float:
        return max(self._gaps)

    @property
    def std(self) -> float:
        import numpy as np

        return float(np.std([self.cell_acc(*c) for c in CELLS]))  # ddof=0: population std

    @property
    def positive_rate(self) -> float:
        """Share of images predicted 1. In cell (1, s) the correct answers are the 1s, in cell (0, s) the errors."""
        ones = sum(c if y == 1 else n - c for (y, _), (n, c) in self.cells.items())
        return ones / self.n

    @property
    def degenerate(self) -> bool:
        """True when one class is predicted for at least DEGENERATE_SHARE of the images."""
        return max(self.positive_rate, 1 - self.positive_rate) >= DEGENERATE_SHARE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in HEADLINE}
        out["positive_rate"] = self.positive_rate
        out["degenerate"] = self.degenerate
        out["cells"] = {cell_key(*c): {"n": self.cells[c][0], "correct": self.cells[c][1], "acc": self.cell_acc(*c)}
                        for c in CELLS}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GroupMetrics":
        """Back from `to_dict` (its per-cell counts)."""
        return cls(cells={c: (int(d["cells"][cell_key(*c)]["n"]), int(d["cells"][cell_key(*c)]["correct"]))
                          for c in CELLS})


def _binary(values: Any, what: str):
    import numpy as np

    arr = np.asarray(values)
    bad = arr[(arr != 0) & (arr != 1)]
    if bad.size:
        raise DataError(MSG_BAD_VALUES.format(what=what, value=bad.flat[0].item()))
    return arr.astype(np.int64)


def group_metrics(targets: Sequence[int], protected: Sequence[int | None], preds: Sequence[int]) -> GroupMetrics:
    """Count (n, correct) per (target, protected) cell. protected must be known (not None/-1) everywhere."""
    import numpy as np

    if not (len(targets) == len(protected) == len(preds)):
        raise DataError(MSG_LENGTHS.format(sizes=f"{len(targets)}, {len(protected)}, {len(preds)}"))
    prot = np.asarray([-1 if p is None else p for p in protected])
    missing = int(np.sum(prot == -1))
    if missing:
        raise DataError(MSG_NO_PROTECTED.format(n=missing, total=len(prot)))
    y, s, p = _binary(targets, "targets"), _binary(prot, "protected"), _binary(preds, "predictions")
    cells = {}
    for cy, cs in CELLS:
        sel = (y == cy) & (s == cs)
        n = int(sel.sum())
        if n == 0:
            raise DataError(MSG_EMPTY_CELL.format(y=cy, s=cs))
        cells[(cy, cs)] = (n, int((p[sel] == cy).sum()))
    return GroupMetrics(cells=cells)


def _spread(values: list[float]) -> dict[str, float]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def aggregate(runs: list[GroupMetrics]) -> dict[str, Any]:
    """Mean and sample std (ddof=1; 0 for one run) of each headline metric over runs (e.g. seeds).

    WST is reported two ways: "wst_mean_of_runs" (mean ± std of each run's WST) and "wst_of_mean_cells"
    (min over cells of the mean cell accuracy — how the paper aggregates). STD likewise: "std" (mean ± std of each
    run's STD) and "std_of_mean_cells" (population std of the mean cell accuracies — the released code's
    `np.std` of the averaged cells, e.g. the paper's Tab. 3 STD 2.74 for cells 88.16/91.40/90.25/84.20).
    Cells hold mean ± std accuracy.
    """
    import numpy as np

    if not runs:
        raise DataError(MSG_NO_RUNS)
    out: dict[str, Any] = {"n_runs": len(runs), "std_kind": STD_KIND}
    for key in HEADLINE:
        name = "wst_mean_of_runs" if key == "wst" else key
        out[name] = _spread([getattr(r, key) for r in runs])
    cells = {}
    for c in CELLS:
        accs = _spread([r.cell_acc(*c) for r in runs])
        cells[cell_key(*c)] = {"n": runs[0].cells[c][0], "acc": accs["mean"], "acc_std": accs["std"]}
    out["cells"] = cells
    out["degenerate_runs"] = sum(r.degenerate for r in runs)
    out["wst_of_mean_cells"] = min(v["acc"] for v in cells.values())
    out["std_of_mean_cells"] = float(np.std([v["acc"] for v in cells.values()]))  # ddof=0, as the released code
    return out


def paired(runs: Sequence[GroupMetrics], reference: Sequence[GroupMetrics], *, level: float = 0.95) -> dict[str, Any]:
    """Compare two strategies run on the same seeds, run i of `runs` against run i of `reference`.

    For ACC, WST, EO and STD: "mean_diff" = mean over runs of (run − reference), in the metrics' units
    (fractions); "ci95" = its Student t interval with n − 1 degrees of freedom ([lo, hi], or None for one run:
    one pair says nothing about the spread); "wins" = runs where `runs` beat `reference` in the metric's
    direction (higher ACC/WST, lower EO/STD; a tie is not a win); "n" = number of pairs.
    """
    from .stats import mean_ci

    if len(runs) != len(reference):
        raise DataError(MSG_PAIRED_COUNT.format(n=len(runs), m=len(reference)))
    if not runs:
        raise DataError(MSG_NO_RUNS)
    out: dict[str, Any] = {}
    for key, better in PAIRED:
        diffs = [getattr(a, key) - getattr(b, key) for a, b in zip(runs, reference)]
        mean, ci = mean_ci(diffs, level)
        out[key] = {"mean_diff": mean, "ci95": None if ci is None else [ci[0], ci[1]],
                    "wins": sum(1 for d in diffs if d * better > 0), "n": len(diffs)}
    return out


def excludes_zero(entry: dict[str, Any]) -> bool:
    """Whether a paired entry's interval lies wholly on one side of 0 (False without an interval)."""
    ci = entry["ci95"]
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


def format_paired(entry: dict[str, Any]) -> dict[str, str]:
    """One paired entry as text in percentage points: "diff", "ci95" ("—" without an interval) and "wins"."""
    ci = entry["ci95"]
    return {"diff": f"{100 * entry['mean_diff']:+.2f}",
            "ci95": "—" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]",
            "wins": f"{entry['wins']}/{entry['n']}"}
