"""The prompt-writer interface: `template` (offline, deterministic), `openai` (any OpenAI-compatible
endpoint) and `transformers` (a local chat model).

A writer returns prompts for one group of a task. Every prompt it returns has passed
`aimfair_cli.core.tasks.check_prompt` (states the group's target and protected values, short enough for CLIP)
and is neither a duplicate nor a near-duplicate (`diversity.near_key`). Writers count what they rejected, by
reason, in `rejections` (group -> Counter) for the prompt file's diversity figures. LLM writers
(`chat.ChatWriter`) also have `write_groups`, which asks for several groups side by side (one batch on a local
model, concurrent requests to a server); the prompts stage uses it when a writer has it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..core.errors import UsageError
from ..core.tasks import Group, Task


@runtime_checkable
class PromptWriter(Protocol):
    name: str

    def write(
        self,
        task: Task,
        group: Group,
        n: int,
        *,
        seed: int = 0,
        existing: Sequence[str] = (),
        on_partial: Callable[[list[str]], None] | None = None,
    ) -> list[str]:
        """`n` distinct, validated prompts for `group`, starting with `existing` (a resumed run).

        `on_partial(prompts_so_far)` is called whenever new valid prompts arrive, so the caller can save
        them and a rerun continues where this one stopped.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """How the prompts were made (writer, model, seed, ...), saved in the prompt file. Never secrets."""
        ...


WRITERS = {
    "template": "aimfair_cli.writers.template:TemplateWriter",
    "openai": "aimfair_cli.writers.openai_writer:OpenAIWriter",
    "transformers": "aimfair_cli.writers.transformers_writer:TransformersWriter",
}


def make_writer(name: str, **options: Any) -> PromptWriter:
    try:
        target = WRITERS[name]
    except KeyError:
        raise UsageError(f"unknown prompt writer '{name}' (known: {', '.join(WRITERS)})") from None
    module, cls = target.split(":")
    factory = getattr(importlib.import_module(module), cls)
    return factory(**{k: v for k, v in options.items() if v is not None})
