"""Model selection: which epoch a training run keeps, by a score on the validation set (`--select`).

    overall      overall accuracy (the paper's released code, and every run before this option);
    worst-class  the lower of the two per-class accuracies: needs no group labels;
    worst-group  the lowest (target, protected) cell accuracy: needs the protected label of every validation image.

A result says which group labels it used (`group_labels`): `train` when the method reads training group labels
(GroupDRO, the oracle), else `val` when selection reads validation group labels, else `none`.
"""

from __future__ import annotations

from typing import Any

SELECT_MODES = ("overall", "worst-class", "worst-group")
SELECT_HELP = ("Which epoch is kept, by its validation score: overall (accuracy; the paper's code), worst-class (the "
               "lower per-class accuracy; no group labels) or worst-group (the lowest target·protected cell accuracy; "
               "needs protected labels on every validation image).")
LABEL_USES = ("none", "val", "train")

MSG_SELECT_NEEDS_GROUPS = ("--select worst-group needs the protected label on every row of {path}; use --select "
                           "overall or worst-class")
MSG_SELECT_NEEDS_CELL = ("--select worst-group needs every (target, protected) cell in {path}; it has no image of "
                         "target={y}, protected={s}")


def selection_score(preds: Any, select: str) -> float:
    """The validation score of `preds` (training.Predictions) under `select` (higher is better)."""
    import numpy as np

    if select == "overall":
        return preds.accuracy
    if select == "worst-class":
        correct = preds.preds == preds.targets
        return float(min(correct[preds.targets == y].mean() for y in np.unique(preds.targets)))
    if select == "worst-group":
        from ..fairness.metrics import group_metrics

        return group_metrics(preds.targets, preds.protected, preds.preds).wst
    raise ValueError(select)  # options are checked before training starts


def group_labels(method_uses: str, select: str) -> str:
    """What group labels a run used: the method's own use (none or train), else val when selection used them."""
    if method_uses == "train":
        return "train"
    return "val" if select == "worst-group" or method_uses == "val" else "none"


def check_select(select: str, val: Any) -> None:
    """Before training: worst-group selection needs every validation row's protected label."""
    from ..core.errors import UsageError

    if select != "worst-group":
        return
    if any(p is None for p in val.protected):
        raise UsageError(MSG_SELECT_NEEDS_GROUPS.format(path=val.path))
    present = set(zip(val.targets, val.protected))
    for y, s in ((0, 0), (0, 1), (1, 0), (1, 1)):
        if (y, s) not in present:
            raise UsageError(MSG_SELECT_NEEDS_CELL.format(path=val.path, y=y, s=s))
