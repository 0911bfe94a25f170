"""`aimfair prompts`: write a task's prompt file with the template writer or an LLM."""

from __future__ import annotations

import json

from ..stages.prompts import PromptsConfig, run_prompts
from ..writers.diversity import summary_line
from . import console
from .options import command



@command("prompts", PromptsConfig)
def prompts(cfg: PromptsConfig, *, json_out: bool) -> None:
    """Write prompts/<task>.yaml: the task, PER_GROUP contextual prompts for each of its four groups (each states
    the group's target and protected values plus details and a head pose) and one plain prompt per group.

    An interrupted run keeps its prompts in <out>.partial.yaml; rerunning the same command continues it.
    """
    pf, target = run_prompts(cfg, progress=console.make_progress())
    counts = {name: len(ps) for name, ps in pf.groups.items()}
    for name, figures in pf.diversity.items():  # how varied each group's prompts are, beside the progress
        console.err.print(summary_line(name, figures), markup=False)
    if json_out:
        console.out.print_json(json.dumps({"out": str(target), "task": pf.task.name, "groups": counts,
                                           "made_by": pf.made_by, "diversity": pf.diversity}))
    else:
        console.out.print(f"wrote {sum(counts.values())} prompts ({len(counts)} groups, writer {cfg.writer}, "
                          f"seed {cfg.seed}) -> {target}", markup=False)
