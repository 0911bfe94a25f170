"""`aimfair prompts`: write a task's prompt file with the template writer or an LLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import layout
from ..config import resolve
from ..errors import UsageError
from ..stages.prompts import DEFAULTS, write_prompts
from . import console
from .options import ConfigOpt, JsonOpt, SeedOpt, TaskOpt, VerboseOpt

# Options only the LLM writers take; forwarded to make_writer only when given, so each writer applies its
# own defaults and the template writer rejects them.
WRITER_OPTIONS = ("model", "base_url", "api_key_env", "temperature", "max_rounds", "timeout")
MSG_NO_TASK = "--task is required (smiling_male, smiling_young, young_male or female_white)"


def prompts(
    task: TaskOpt = None,
    per_group: Annotated[Optional[int], typer.Option("--per-group", help="Contextual prompts per group. [default: 50]")] = None,
    writer: Annotated[
        Optional[str],
        typer.Option(help="Who writes the prompts: template (offline, from prompts/vocabulary.yaml), openai (any "
                     "OpenAI-compatible endpoint) or transformers (a local chat model). [default: template]"),
    ] = None,
    seed: SeedOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help=f"Prompt file to write. [default: {layout.PROMPTS_DIR}/<task>.yaml]", dir_okay=False),
    ] = None,
    model: Annotated[
        Optional[str], typer.Option(help="openai: the model name; transformers: a hub id or local folder. LLM writers only.")
    ] = None,
    base_url: Annotated[
        Optional[str],
        typer.Option("--base-url", help="openai: the API base URL, e.g. a local vLLM, llama.cpp or Ollama server. "
                     "[default: the OpenAI API]"),
    ] = None,
    api_key_env: Annotated[
        Optional[str],
        typer.Option("--api-key-env", help="openai: NAME of the environment variable holding the API key (a value "
                     "that is not a variable name is refused); the key itself is never written anywhere. "
                     "[default: OPENAI_API_KEY]"),
    ] = None,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", help="openai: seconds to wait for each reply; a request that times out is tried "
                     "once more, then the command stops. [default: 60]"),
    ] = None,
    temperature: Annotated[
        Optional[float], typer.Option(help="LLM sampling temperature. [default: the writer's own]")
    ] = None,
    max_rounds: Annotated[
        Optional[int],
        typer.Option("--max-rounds", help="LLM writers: requests per group before giving up on missing prompts. "
                     "[default: the writer's own]"),
    ] = None,
    json_: JsonOpt = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Write prompts/<task>.yaml: the task, PER_GROUP contextual prompts for each of its four groups (each states
    the group's target and protected values plus details and a head pose) and one plain prompt per group.

    An interrupted run keeps its prompts in <out>.partial.yaml; rerunning the same command continues it.
    """
    defaults = {**DEFAULTS, "task": None, "out": None, **{k: None for k in WRITER_OPTIONS}}
    explicit = dict(task=task, per_group=per_group, writer=writer, seed=seed, out=out, model=model, base_url=base_url,
                    api_key_env=api_key_env, temperature=temperature, max_rounds=max_rounds, timeout=timeout)
    opts = resolve("prompts", explicit, defaults, config_file=config)
    if not opts["task"]:
        raise UsageError(MSG_NO_TASK)
    console.setup_logging(verbose)
    target = Path(opts["out"]) if opts["out"] else layout.PROMPTS_DIR / f"{opts['task']}.yaml"
    pf = write_prompts(
        task=opts["task"],
        out=target,
        per_group=opts["per_group"],
        writer=opts["writer"],
        writer_options={k: opts[k] for k in WRITER_OPTIONS if opts[k] is not None},
        seed=opts["seed"],
        progress=console.RichProgress(),
    )
    counts = {name: len(ps) for name, ps in pf.groups.items()}
    if json_:
        console.out.print_json(json.dumps({"out": str(target), "task": pf.task.name, "groups": counts,
                                           "made_by": pf.made_by}))
    else:
        console.out.print(f"wrote {sum(counts.values())} prompts ({len(counts)} groups, writer {opts['writer']}, "
                          f"seed {opts['seed']}) -> {target}", markup=False)
