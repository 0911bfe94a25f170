"""The `prompts` stage: write a task's prompt file (contextual prompts per group + one plain prompt each).

An LLM writer can stop half-way (a crash, a rate limit, Ctrl-C). Every batch of valid prompts a writer
reports is saved at once to `<out>.partial.yaml` (atomically), and a rerun with the same task, writer and
seed hands them back to the writer as `existing`, so it continues instead of starting over. The final file is
written atomically and the partial file removed. `made_by` records the writer's own description, the seed and
the count, never a secret. `diversity` records, per group, how varied the prompts are and what the writer
rejected, by reason (`writers.diversity`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..core import layout
from ..core.config import config_path_for, write_resolved_config
from ..core.errors import PromptWriterError, UsageError
from ..core.fsio import atomic_write_text, check_outputs, check_suffix
from ..core.options import MAX_SEED, option, pass_through_merged
from ..core.progress import NULL, Progress
from ..core.tasks import TASKS, PromptFile, Task, check_prompt, get_task, load_prompt_file, save_prompt_file
from ..writers.base import PromptWriter, make_writer
from ..writers.diversity import diversity
from ..writers.openai_writer import OpenAIOptions
from ..writers.template import plain_prompt
from ..writers.transformers_writer import TransformersOptions

log = logging.getLogger(__name__)

_LLM = "LLM writers only."
# A prompt file is read by people and by synth's round-robin; past this it is a typo, not a plan.
MAX_PER_GROUP = 10_000


@dataclass
class _PromptsCore:
    """Options of `aimfair prompts` (flags, the `prompts:` section of aimfair.yaml). Writer options default to None:
    they are passed on only when given, so each writer applies its own defaults and the template writer refuses
    them (`OpenAIOptions`, `TransformersOptions`)."""

    task: str | None = option(None, choices=tuple(TASKS), help="Task whose prompt file to write. Required.")
    per_group: int = option(50, help="Contextual prompts per group.", min=1, max=MAX_PER_GROUP)
    writer: str = option("template",  # no fixed choices: make_writer knows the registered ones
                         help="Who writes the prompts: template (offline, from prompts/vocabulary.yaml), openai (any "
                         "OpenAI-compatible endpoint) or transformers (a local chat model).")
    seed: int = option(0, help="Random seed; the same seed reproduces the run.", min=0, max=MAX_SEED)
    out: Path | None = option(None, short=("-o",), path="file", help="Prompt file to write.",
                              default_text=f"{layout.PROMPTS_DIR}/<task>.yaml")


# The LLM writers' own options (declared by each writer), as optional prompts flags: passed on only when given,
# so each writer applies its own defaults and the template writer refuses them.
_WRITER_FIELDS = pass_through_merged([("openai", OpenAIOptions), ("transformers", TransformersOptions)], only=_LLM)
PromptsConfig = dataclasses.make_dataclass("PromptsConfig", _WRITER_FIELDS, bases=(_PromptsCore,),
                                           namespace={"__doc__": _PromptsCore.__doc__, "__module__": __name__})
WRITER_OPTIONS = tuple(name for name, _, _ in _WRITER_FIELDS)  # forwarded to make_writer when given

MSG_NO_TASK = "--task is required (" + ", ".join(list(TASKS)[:-1]) + " or " + list(TASKS)[-1] + ")"
PARTIAL_SUFFIX = ".partial.yaml"

PROMPT_SUFFIXES = (".yaml", ".yml")
MSG_BAD_PER_GROUP = "--per-group must be at least 1 (got {n})"
MSG_PARTIAL_MISMATCH = (
    "{path} holds prompts from another run ({what} differs); rerun with the same options or delete it"
)
MSG_WRITER_BROKE = "prompt writer '{writer}' returned an unusable prompt for group {group}: {reason}"
MSG_WRITER_COUNT = "prompt writer '{writer}' returned {got} prompts for group {group}, expected {want}"
MSG_WRITER_SECRET = "prompt writer '{writer}' returned a prompt for group {group} that holds its API key"

# Keys that must never reach a file even if a writer's describe() let one through (the *_env names are fine).
_SECRET = re.compile(r"^(.*_)?(api_?key|key|token|secret|password)$", re.IGNORECASE)


MSG_PARTIAL_CORRUPT = "%s is corrupt (not a partial prompt file aimfair wrote): ignoring it and starting over"


def partial_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _scrub(d: dict[str, Any]) -> dict[str, Any]:
    from ..core.redact import redact_values

    return {k: redact_values(v) for k, v in d.items() if not _SECRET.search(str(k))}


def _load_partial(path: Path, *, task: Task, made_by: dict[str, Any]) -> dict[str, list[str]]:
    """Prompts saved by an interrupted run with the same task, writer and seed."""
    import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        groups = data.get("groups") or {}
        if not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in groups.values()):
            raise TypeError("groups must map names to lists of prompts")
        saved = {str(k): list(v) for k, v in groups.items()}
    except (yaml.YAMLError, AttributeError, TypeError, ValueError, OSError, RecursionError):
        log.warning(MSG_PARTIAL_CORRUPT, path)
        return {}
    for what, have, want in (("task", data.get("task"), task.name),
                             ("seed", (data.get("made_by") or {}).get("seed"), made_by.get("seed")),
                             ("writer", _without(data.get("made_by") or {}, "per_group"), _without(made_by, "per_group"))):
        if have != want:
            raise UsageError(MSG_PARTIAL_MISMATCH.format(path=path, what=what))
    return saved


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _save_partial(path: Path, *, task: Task, made_by: dict[str, Any], groups: dict[str, list[str]]) -> None:
    import yaml

    text = yaml.safe_dump({"task": task.name, "made_by": made_by, "groups": groups}, sort_keys=False,
                          allow_unicode=True, width=200)
    atomic_write_text(path, text)


def _validate(prompts: list[str], *, task: Task, group, want: int, writer: str, scrub=None) -> None:
    """The writer's contract, checked once more: the stage never writes an unusable prompt file, nor one that
    holds the writer's secret (`scrub` replaces it; LLM writers already reject such prompts)."""
    if len(prompts) != want:
        raise PromptWriterError(MSG_WRITER_COUNT.format(writer=writer, got=len(prompts), group=group.name, want=want))
    seen = set()
    for p in prompts:
        if scrub is not None and scrub(p) != p:
            raise PromptWriterError(MSG_WRITER_SECRET.format(writer=writer, group=group.name))
        reason = check_prompt(p, task, group)
        key = " ".join(p.lower().split())
        if reason is None and key in seen:
            reason = f"duplicate prompt {p!r}"
        if reason is not None:
            raise PromptWriterError(MSG_WRITER_BROKE.format(writer=writer, group=group.name, reason=reason))
        seen.add(key)


def _write_side_by_side(w: Any, task: Task, chosen: list, per_group: int, *, seed: int, saved: dict[str, list[str]],
                        result: dict[str, list[str]], progress: Progress, save: Any) -> None:
    """An LLM writer asks for every group at once (a batch on a local model, concurrent requests to a server):
    one progress bar per group (valid prompts / wanted) whose info shows the last round, rejections and speed."""
    with contextlib.ExitStack() as stack:
        bars = {g.name: stack.enter_context(progress.task(f"prompts {g.name}", total=per_group)) for g in chosen}
        counted = {g.name: min(len(saved.get(g.name, [])), per_group) for g in chosen}
        for name, k in counted.items():
            bars[name].advance(k)

        def on_partial(name: str, so_far: list[str]) -> None:
            saved[name] = list(so_far)
            save()
            now = min(len(so_far), per_group)
            bars[name].advance(max(0, now - counted[name]))
            counted[name] = max(counted[name], now)

        def on_round(r: Any) -> None:
            info = {"round": f"{r.round}/{r.max_rounds}", "rejected": r.rejected}
            if r.top_reason:
                info["mostly"] = r.top_reason
            if r.tokens_per_s:
                info["tok/s"] = f"{r.tokens_per_s:.1f}"
            bars[r.group].advance(0, **info)

        existing = {g.name: saved.get(g.name, [])[:per_group] for g in chosen}
        got = w.write_groups(task, chosen, per_group, seed=seed, existing=existing, on_partial=on_partial,
                             on_round=on_round)
        for group in chosen:
            prompts = got[group.name]
            _validate(prompts, task=task, group=group, want=per_group, writer=w.name, scrub=getattr(w, "scrub", None))
            bars[group.name].advance(per_group - counted[group.name])
            result[group.name] = saved[group.name] = prompts
        save()


def _diversity(w: Any, task: Task, result: dict[str, list[str]], names: Sequence[str],
               old: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each group's diversity figures: measured now for the groups written, kept from the old file for the others."""
    rejections = getattr(w, "rejections", {}) or {}
    figures = {}
    for g in task.groups:
        if g.name in names and g.name in result:
            figures[g.name] = diversity(result[g.name], rejections.get(g.name))
        elif g.name in old:
            figures[g.name] = old[g.name]
    return figures


def write_prompts(
    *,
    task: str | Task,
    out: str | os.PathLike,
    per_group: int = PromptsConfig.per_group,
    writer: str | PromptWriter = PromptsConfig.writer,
    writer_options: dict[str, Any] | None = None,
    seed: int = PromptsConfig.seed,
    groups: Sequence[str] | None = None,
    progress: Progress = NULL,
) -> PromptFile:
    """Write `out` (a prompt file) with `per_group` contextual prompts for each group and one plain prompt each.

    `groups` limits the groups written; the others keep the prompts of an existing `out` for the same task.
    """
    task = get_task(task) if isinstance(task, str) else task
    if per_group < 1:
        raise UsageError(MSG_BAD_PER_GROUP.format(n=per_group))
    out = Path(out)
    check_suffix(out, PROMPT_SUFFIXES, "--out")
    check_outputs({"--out": out, "the partial file": partial_path(out),
                   "the resolved config": config_path_for(out, "prompts")})
    names = list(dict.fromkeys(groups)) if groups else [g.name for g in task.groups]
    chosen = [task.group(name) for name in names]
    w = make_writer(writer, **(writer_options or {})) if isinstance(writer, str) else writer
    made_by = {**_scrub(w.describe()), "seed": seed, "per_group": per_group}

    partial_file = partial_path(out)
    saved = _load_partial(partial_file, task=task, made_by=made_by)
    if saved:
        log.info("resuming from %s (%d prompts kept)", partial_file, sum(len(v) for v in saved.values()))

    result: dict[str, list[str]] = {}
    old_figures: dict[str, dict[str, Any]] = {}
    if groups and out.is_file():
        old = load_prompt_file(out)
        if old.task.name == task.name:
            result.update({k: v for k, v in old.groups.items() if k not in names and v})
            old_figures = {k: v for k, v in old.diversity.items() if k in result}

    if hasattr(w, "write_groups"):
        _write_side_by_side(w, task, chosen, per_group, seed=seed, saved=saved, result=result, progress=progress,
                            save=lambda: _save_partial(partial_file, task=task, made_by=made_by, groups=saved))
    else:  # the template writer (and any writer without write_groups): one group after another
        with progress.task(f"prompts {task.name}", total=per_group * len(chosen)) as bar:
            for group in chosen:
                existing = saved.get(group.name, [])[:per_group]
                counted = [len(existing)]
                bar.advance(len(existing))

                def on_partial(so_far: list[str], group=group, counted=counted) -> None:
                    saved[group.name] = list(so_far)
                    _save_partial(partial_file, task=task, made_by=made_by, groups=saved)
                    bar.advance(max(0, min(len(so_far), per_group) - counted[0]))
                    counted[0] = max(counted[0], min(len(so_far), per_group))

                prompts = w.write(task, group, per_group, seed=seed, existing=existing, on_partial=on_partial)
                _validate(prompts, task=task, group=group, want=per_group, writer=w.name,
                          scrub=getattr(w, "scrub", None))
                bar.advance(per_group - counted[0])
                result[group.name] = prompts
                saved[group.name] = prompts
                _save_partial(partial_file, task=task, made_by=made_by, groups=saved)

    pf = PromptFile(
        task=task,
        groups={g.name: result[g.name] for g in task.groups if g.name in result},
        plain={g.name: plain_prompt(task, g) for g in task.groups},
        made_by=made_by,
        diversity=_diversity(w, task, result, names, old_figures),
    )
    save_prompt_file(out, pf)
    partial_file.unlink(missing_ok=True)
    write_resolved_config(out, "prompts", {
        "task": task.name, "per_group": per_group, "writer": w.name,
        "writer_options": _scrub(dict(writer_options or {})), "seed": seed, "groups": names, "out": str(out),
    })
    return pf


def run_prompts(cfg: Any, *, progress: Progress = NULL) -> tuple[PromptFile, Path]:
    """`aimfair prompts` from its options (a `PromptsConfig`): (the prompt file, where it was written)."""
    if not cfg.task:
        raise UsageError(MSG_NO_TASK)
    target = Path(cfg.out or layout.PROMPTS_DIR / f"{cfg.task}.yaml")
    pf = write_prompts(task=cfg.task, out=target, per_group=cfg.per_group, writer=cfg.writer,
                       writer_options={k: getattr(cfg, k) for k in WRITER_OPTIONS if getattr(cfg, k) is not None},
                       seed=cfg.seed, progress=progress)
    return pf, target
