"""The conversation both LLM prompt writers hold (`openai_writer.py`, `transformers_writer.py`).

Both send the same instruction, laid out as in the paper (§3.1): {Task}, {Number of Prompts}, {Target
Attribute}, {Protected Attribute}, {Other Detailed Descriptions} (facial features, hair, eyes, head orientation
and angle) and {Prompt Format}, asking for a JSON object {"prompts": [...]}. Both run every reply through the
same checks — `tasks.check_prompt` (states the group's target and protected values, short enough for CLIP's
77 tokens) and a case/whitespace-insensitive duplicate check — and, in the same conversation, ask again for
what is still missing, telling the model why prompts were rejected, for at most `max_rounds` rounds. Valid
prompts are handed to `on_partial` as they arrive, so an interrupted run keeps them and a rerun continues.
A backend only implements `_chat(messages, seed) -> reply text` (and `scrub` when it holds a secret).
"""

from __future__ import annotations

import collections
import json
import logging
import re
from typing import Any, Callable, Sequence

from ..errors import PromptWriterError, UsageError
from ..tasks import Attribute, Group, Task, check_prompt

log = logging.getLogger(__name__)

INSTRUCTION_VERSION = 1  # bump when the wording below changes: it is recorded in the prompt file
MAX_WORDS = 60  # tasks.check_prompt's bound, well inside CLIP's 77 tokens
SHOWN_REJECTIONS = 5  # rejected prompts quoted back to the model per round
MSG_NO_MODEL = "--writer {writer} needs --model (an LLM name{extra})"
MSG_UNKNOWN_OPTIONS = "option(s) {names} do not apply to --writer {writer}"
MSG_BAD_ROUNDS = "--max-rounds must be at least 1, got {value}"
MSG_BAD_TEMPERATURE = "--temperature must be >= 0, got {value}"
MSG_KEY_IN_PROMPT = "contained the API key"
REDACTED = "[redacted API key]"  # what an echoed key is replaced with (no JSON-special characters)
MSG_CAP = "writer produced {got} of {n} valid prompts for group {group} after {rounds} rounds; last reasons: {reasons}"
MSG_REPLY_NOT_JSON = "reply was not valid JSON"
MSG_REPLY_NO_LIST = 'reply had no "prompts" list'
MSG_DUPLICATE = "duplicate"


def _quoted(phrases: Sequence[str]) -> str:
    return ", ".join(f'"{p}"' for p in phrases)


def _attribute_line(label: str, attr: Attribute, value: int) -> str:
    return (
        f"{label}: {attr.name} = {attr.phrase(value)}. Every prompt must state it with one of these exact words: "
        f"{_quoted(attr.words[value])}; nothing may state the opposite value ({_quoted(attr.words[1 - value])})."
    )


def build_instruction(task: Task, group: Group, n: int) -> list[dict[str, str]]:
    """The chat messages asking for `n` prompts for `group`, in the paper's format."""
    target, protected = task.target.phrase(group.target), task.protected.phrase(group.protected)
    system = (
        "You write prompts for a text-to-image diffusion model (Stable Diffusion) that will create training "
        "data for a fair image classifier. You answer with JSON only."
    )
    user = "\n".join([
        f"Task: write prompts that each describe one realistic {task.subject} photo of a person who is {target} "
        f"and {protected}.",
        f"Number of prompts: {n}, all different from each other.",
        _attribute_line("Target attribute", task.target, group.target),
        _attribute_line("Protected attribute", task.protected, group.protected),
        "Other detailed descriptions: vary everything else from prompt to prompt — facial features (face shape, "
        "skin, nose, lips, facial hair where it fits), hair (colour, length, style), eyes (colour, shape, "
        "eyebrows, glasses), head orientation and angle (frontal, three-quarter, profile, tilted up or down), "
        "age, lighting and background. Nothing may contradict the target or protected attribute.",
        f"Prompt format: one sentence of at most {MAX_WORDS - 20} words, like \"Portrait face photo of a "
        f"{target} {protected} with ...\".",
        f'Answer with only this JSON object: {{"prompts": ["<prompt 1>", "<prompt 2>", ...]}} holding {n} strings.',
    ])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def follow_up(*, accepted: int, missing: int, rejected: list[tuple[str, str]], error: str | None) -> str:
    """What the model is told after a reply that left prompts missing."""
    lines = []
    if error:
        lines.append(f'Your reply could not be used: {error}. Answer with only a JSON object {{"prompts": [...]}}.')
    else:
        lines.append(f"{accepted} of your prompts were accepted.")
    if rejected:
        lines.append("These were rejected:")
        lines += [f'- "{p}": {why}' for p, why in rejected[:SHOWN_REJECTIONS]]
    lines.append(f'Write {missing} more, different from every earlier prompt, as {{"prompts": [...]}}.')
    return "\n".join(lines)


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def parse_reply(text: str | None) -> tuple[list[str], str | None]:
    """The prompt strings in a reply, and why none could be read (None if the reply was usable).

    Accepts {"prompts": [...]}, a bare JSON list, ```json fences and text around the JSON.
    """
    text = (text or "").strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    data: Any = None
    for candidate in (text, _outermost(text, "{", "}"), _outermost(text, "[", "]")):
        if candidate is None:
            continue
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    else:
        return [], MSG_REPLY_NOT_JSON
    if isinstance(data, dict):
        data = data.get("prompts", next((v for v in data.values() if isinstance(v, list)), None))
    if not isinstance(data, list):
        return [], MSG_REPLY_NO_LIST
    out = []
    for item in data:
        if isinstance(item, dict):
            item = item.get("prompt")
        if isinstance(item, str):
            out.append(" ".join(item.split()).strip("\"'"))
    return out, None


def _outermost(text: str, open_: str, close: str) -> str | None:
    a, b = text.find(open_), text.rfind(close)
    return text[a : b + 1] if 0 <= a < b else None


def prompt_key(prompt: str) -> str:
    """Duplicates differ only in case, spacing or a final full stop."""
    return " ".join(prompt.lower().split()).rstrip(" .")


def summarize(reasons: Sequence[str]) -> str:
    """'does not state 'male' (3), duplicate (1)' — most frequent first."""
    counts = collections.Counter(reasons)
    return ", ".join(f"{why} ({k})" for why, k in counts.most_common()) or "none"


class ChatWriter:
    """The loop shared by every LLM writer; subclasses only implement `_chat(messages, seed) -> text`."""

    name = "llm"

    def __init__(self, *, max_rounds: int, temperature: float) -> None:
        if max_rounds < 1:
            raise UsageError(MSG_BAD_ROUNDS.format(value=max_rounds))
        if temperature < 0:
            raise UsageError(MSG_BAD_TEMPERATURE.format(value=temperature))
        self.max_rounds, self.temperature = int(max_rounds), float(temperature)

    def _chat(self, messages: list[dict[str, str]], *, seed: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def scrub(self, text: str) -> str:
        """`text` with every secret this writer holds replaced by REDACTED (writers without secrets: as is)."""
        return text

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
        from ..generators.base import image_seed

        prompts: list[str] = []
        seen: set[str] = set()
        for p in existing:  # a resumed run: keep what is still valid
            if self.scrub(p) != p or REDACTED in p:
                continue  # a partial file written before replies were scrubbed
            if check_prompt(p, task, group, max_words=MAX_WORDS) is None and prompt_key(p) not in seen:
                prompts.append(p)
                seen.add(prompt_key(p))
        messages = build_instruction(task, group, n - len(prompts))
        rounds, reasons = 0, ["no reply"]
        while len(prompts) < n:
            if rounds == self.max_rounds:
                raise PromptWriterError(MSG_CAP.format(got=len(prompts), n=n, group=group.name, rounds=rounds,
                                                       reasons=summarize(reasons)))
            rounds += 1
            # Scrubbed before anything else sees it: the reply goes back into the conversation and its prompts
            # into files. A prompt that held the key is rejected (JSON escapes are caught by the second scrub).
            reply = self.scrub(self._chat(messages, seed=image_seed(seed, f"prompts/{group.name}", rounds)) or "")
            candidates, error = parse_reply(reply)
            reasons, rejected, added = [], [], 0
            if error:
                reasons.append(error)
            for p in candidates:
                clean = self.scrub(p)
                if clean != p or REDACTED in p:
                    reasons.append(MSG_KEY_IN_PROMPT)
                    rejected.append((clean, MSG_KEY_IN_PROMPT))
                    continue
                why = check_prompt(p, task, group, max_words=MAX_WORDS)
                if why is None and prompt_key(p) in seen:
                    why = MSG_DUPLICATE
                if why is not None:
                    reasons.append(why)
                    rejected.append((p, why))
                    continue
                if len(prompts) < n:
                    prompts.append(p)
                    seen.add(prompt_key(p))
                    added += 1
            log.info("%s round %d for %s: %d new, %d rejected, %d/%d", self.name, rounds, group.name, added,
                     len(rejected), len(prompts), n)
            if added and on_partial is not None:
                on_partial(list(prompts))
            messages = messages + [
                {"role": "assistant", "content": reply or ""},
                {"role": "user", "content": follow_up(accepted=added, missing=n - len(prompts), rejected=rejected,
                                                      error=error)},
            ]
        return prompts[:n]


def reject_unknown(unknown: dict[str, Any], writer: str) -> None:
    if unknown:
        names = ", ".join("--" + k.replace("_", "-") for k in sorted(unknown))
        raise UsageError(MSG_UNKNOWN_OPTIONS.format(names=names, writer=writer))
