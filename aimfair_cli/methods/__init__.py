"""Training methods of `aimfair pretrain --method NAME` (the paper's comparison methods, Tab. 1-2), one module each:

    erm        the mean loss (the paper's pretraining; the default)
    jtt        Just Train Twice: ERM for T epochs, retrain with its error set upsampled λ times
    cvar-dro   the mean loss of the worst α-fraction of each batch
    lff        Learning from Failure: a GCE biased model and a reweighted debiased model, trained together
    eiil       environments inferred from an ERM model (IRM penalty), then GroupDRO on them
    group-dro  GroupDRO on the true training groups: an oracle that reads training group labels
    dfr        Deep Feature Reweighting: ERM, then the last layer retrained on group-balanced validation images

Each method's hyper-parameters are `pretrain` options (defaults from its paper or released code, in each module)
and go into the checkpoint's config like every other option. docs/methods.md says what each does and why MAPLE
and DiGA are not here.
"""

from __future__ import annotations

from typing import Any

from . import cvar_dro, dfr, eiil, erm, group_dro, jtt, lff

METHODS: dict[str, Any] = {m.METHOD.name: m.METHOD for m in (erm, jtt, cvar_dro, lff, eiil, group_dro, dfr)}
METHOD_HELP = ("Training method: " + "; ".join(f"{name}, {m.summary}" for name, m in METHODS.items()) + ".")


def get_method(name: str) -> Any:
    return METHODS[name]  # the option's choices are METHODS, checked before this is called
