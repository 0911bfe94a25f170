"""The conversation both LLM prompt writers hold (`openai_writer.py`, `transformers_writer.py`).

Two modes. `composed` (the default, `compose.py`): the model writes only the context fields of each prompt
({"contexts": [{"hair": ..., "pose": ..., ...}]}) and aimfair composes the prompt around the group's canonical
phrase, so every prompt states the group by construction; a context that contradicts the group is rejected
with the reason. `free`: the model writes whole prompts, as below.

In free mode both send the same instruction, laid out as in the paper (§3.1): {Task}, {Number of Prompts}, {Target
Attribute}, {Protected Attribute}, {Other Detailed Descriptions} (facial features, hair, eyes, head orientation
and angle) and {Prompt Format}, asking for a JSON object {"prompts": [...]}. Both run every reply through the
same checks — `tasks.check_prompt` (states the group's target and protected values, short enough for CLIP's
77 tokens) and a case/whitespace-insensitive duplicate check — and, in the same conversation, ask again for
what is still missing, telling the model why prompts were rejected, for at most `max_rounds` rounds. In both
modes exact and near-duplicates (`diversity.near_key`) are rejected, and every rejection is counted by reason
(`ChatWriter.rejections`, for the prompt file's diversity figures). Valid
prompts are handed to `on_partial` as they arrive, so an interrupted run keeps them and a rerun continues.
Several groups are written side by side (`write_groups`): each round, every group that still misses prompts
sends its own conversation, and a backend may answer them together (`_chat_many`: one batch on a local model,
concurrent requests to a server). A backend implements `_chat(messages, seed=, want=) -> reply text` or
`_chat_many` (and `scrub` when it holds a secret). `want` is how many prompts the reply must hold: backends that
can constrain decoding force the reply into the request's `schema` (`reply_schema(want)` in free mode,
`compose.context_schema` in composed mode).
"""

from __future__ import annotations

import collections
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from ..core.errors import PromptWriterError, UsageError
from ..core.tasks import Attribute, Group, Task, check_prompt
from . import compose
from .diversity import MSG_NEAR_DUPLICATE, near_key

log = logging.getLogger(__name__)

INSTRUCTION_VERSION = 2  # bump when the wording below changes: it is recorded in the prompt file
MAX_WORDS = 60  # tasks.check_prompt's bound, well inside CLIP's 77 tokens
SHOWN_REJECTIONS = 5  # rejected prompts quoted back to the model per round
MSG_NO_MODEL = "--writer {writer} needs --model (an LLM name{extra})"
MSG_UNKNOWN_OPTIONS = "option(s) {names} do not apply to --writer {writer}"
MSG_BAD_ROUNDS = "--max-rounds must be at least 1, got {value}"
MSG_BAD_TEMPERATURE = "--temperature must be >= 0, got {value}"
MODES = ("composed", "free")
MSG_BAD_MODE = "--mode must be one of composed, free; got {value}"
MODE_HELP = ("composed: the model writes only each prompt's context and aimfair states the group (works with small "
             "models); free: the model writes whole prompts.")
MSG_KEY_IN_PROMPT = "contained the API key"
REDACTED = "[redacted API key]"  # what an echoed key is replaced with (no JSON-special characters)
MSG_CAP = "writer produced {got} of {n} valid prompts for group {group} after {rounds} rounds; last reasons: {reasons}"
MSG_REPLY_NOT_JSON = "reply was not valid JSON"
MSG_REPLY_NO_LIST = 'reply had no "prompts" list'
MSG_DUPLICATE = "duplicate"
# Bounded generation: a reply of n prompts needs about n x TOKENS_PER_PROMPT tokens (a 40-word prompt is ~55
# BPE tokens, plus quotes and commas), TOKEN_MARGIN covers the braces and the key. A schema-bound prompt holds
# at most MAX_PROMPT_CHARS characters (60 words of ~5 characters), ~80 tokens for a usual BPE vocabulary.
TOKENS_PER_PROMPT = 80
TOKEN_MARGIN = 32
MAX_PROMPT_CHARS = 320


def token_budget(want: int, per_item: int = TOKENS_PER_PROMPT) -> int:
    """New tokens a reply of `want` prompts (or contexts, `per_item` tokens each) may take (the default
    --max-new-tokens)."""
    return per_item * max(1, want) + TOKEN_MARGIN


def reply_schema(want: int) -> dict[str, Any]:
    """The JSON schema of a reply holding exactly `want` prompts: {"prompts": [string x want]}."""
    return {
        "type": "object",
        "properties": {"prompts": {"type": "array", "minItems": want, "maxItems": want,
                                   "items": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS}}},
        "required": ["prompts"],
        "additionalProperties": False,
    }


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
        # No placeholders such as "<prompt 1>" in the format: small models copy them verbatim.
        f'Answer with only a JSON object {{"prompts": [...]}} whose list holds the {n} prompts as strings.',
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


def load_reply(text: str | None) -> tuple[Any, str | None]:
    """The JSON value in a reply, and why none could be read. Accepts ```json fences and text around the JSON."""
    text = (text or "").strip()
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    data: Any = None
    # strict=False: a raw newline or control character inside a string (small models write them) is read, and
    # the prompt is then judged on its words like any other.
    decoder = json.JSONDecoder(strict=False)
    for candidate in (text, _outermost(text, "{", "}"), _outermost(text, "[", "]")):
        if candidate is None:
            continue
        try:
            data = decoder.decode(candidate)
            break
        except ValueError:
            continue
    else:
        return None, MSG_REPLY_NOT_JSON
    return data, None


def parse_reply(text: str | None) -> tuple[list[str], str | None]:
    """The prompt strings in a reply, and why none could be read (None if the reply was usable).

    Accepts {"prompts": [...]}, a bare JSON list, ```json fences and text around the JSON.
    """
    data, error = load_reply(text)
    if error:
        return [], error
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


def json_closed(text: str) -> bool:
    """Whether `text` holds a complete top-level JSON object or list (strings and escapes respected): where
    unconstrained generation can stop."""
    depth, in_string, escaped, started = 0, False, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = started
        elif ch in "{[":
            depth, started = depth + 1, True
        elif ch in "}]" and started:
            depth -= 1
            if depth == 0:
                return True
    return False


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


def parse_contexts(text: str | None) -> tuple[list[dict[str, Any] | str], str | None]:
    """The contexts in a composed-mode reply (objects of fields, or plain strings), and why none could be read."""
    data, error = load_reply(text)
    if error:
        return [], error
    contexts = compose.contexts_in(data)
    return ([], MSG_REPLY_NO_CONTEXTS) if contexts is None else (contexts, None)


MSG_REPLY_NO_CONTEXTS = 'reply had no "contexts" list'


@dataclass
class ChatRequest:
    """One group's turn in a round: its conversation so far, its seed, how many prompts it still misses and the
    JSON schema its reply should follow (None: `reply_schema(want)`)."""

    messages: list[dict[str, str]]
    seed: int
    want: int
    schema: dict[str, Any] | None = None

    @property
    def reply_schema(self) -> dict[str, Any]:
        return self.schema if self.schema is not None else reply_schema(self.want)


@dataclass
class RoundReport:
    """What one round did for one group (handed to `on_round`, e.g. for a progress bar)."""

    group: str
    round: int
    max_rounds: int
    added: int
    rejected: int
    have: int
    want: int
    top_reason: str | None  # the most common rejection reason, None when nothing was rejected
    tokens_per_s: float | None  # generation speed of the whole round, when the backend measured it


class _Conversation:
    """One group's side of the exchange: its valid prompts so far, the messages, the last round's reasons and the
    count of every rejection by reason."""

    def __init__(self, writer: "ChatWriter", task: Task, group: Group, n: int, existing: Sequence[str]) -> None:
        self.writer, self.task, self.group, self.n = writer, task, group, n
        self.composed = writer.mode == "composed"
        # one context per request (a local model's batch rows): no reply can repeat itself, rows sample apart
        self.split = self.composed and writer.one_context_per_request
        self.prompts: list[str] = []
        self.seen: set[str] = set()
        self.rejections: collections.Counter = collections.Counter()
        for p in existing:  # a resumed run: keep what is still valid
            if writer.scrub(p) != p or REDACTED in p:
                continue  # a partial file written before replies were scrubbed
            if check_prompt(p, task, group, max_words=MAX_WORDS) is None and near_key(p) not in self.seen:
                self.prompts.append(p)
                self.seen.add(near_key(p))
        build = compose.build_instruction if self.composed else build_instruction
        self.messages = build(task, group, 1 if self.split else self.ask) if self.missing > 0 else []
        self.reasons: list[str] = ["no reply"]

    @property
    def missing(self) -> int:
        return self.n - len(self.prompts)

    @property
    def ask(self) -> int:
        """How many items the next reply should hold: in the composed mode SPARE_CONTEXTS more than are missing,
        as a small model often repeats one (surplus valid ones are not used)."""
        return self.missing + (compose.SPARE_CONTEXTS if self.composed and self.missing > 0 else 0)

    def schema(self) -> dict[str, Any]:
        """The JSON schema the next reply should follow."""
        if self.composed:
            return compose.context_schema(self.task, 1 if self.split else self.ask)
        return reply_schema(self.missing)

    def requests(self, seed: int, rounds: int) -> list[ChatRequest]:
        """This round's requests: one, or (split) one per context asked, each with its own seed."""
        from ..generators.base import image_seed

        if not self.split:
            return [ChatRequest(self.messages, image_seed(seed, f"prompts/{self.group.name}", rounds), self.ask,
                                self.schema())]
        return [ChatRequest(self.messages, image_seed(seed, f"prompts/{self.group.name}" + (f"/{i}" if i else ""),
                                                      rounds), 1, self.schema()) for i in range(self.ask)]

    def _candidates(self, replies: list[str]) -> tuple[list[tuple[str, str, str | None]], str | None, str]:
        """(prompt, what the model wrote, why it is rejected before any other check) per item of the replies, why
        a reply could not be read, and the assistant turn to keep in the conversation."""
        if not self.composed:
            prompts, error = parse_reply(replies[0])
            return [(p, p, None) for p in prompts], error, replies[0]
        contexts, error = [], None
        for reply in replies:
            got, why = parse_contexts(reply)
            contexts += got
            error = error or why
        # split replies are kept as the one reply they stand for
        turn = replies[0] if len(replies) == 1 else json.dumps({"contexts": contexts}, ensure_ascii=False)
        out = []
        for ctx in contexts:
            written = compose.context_text(ctx, self.task)
            out.append((compose.compose(self.task, self.group, ctx), written,
                        compose.rejection(ctx, self.task, self.group)))
        return out, error, turn

    def _judge(self, prompt: str, written: str, why: str | None) -> str | None:
        if self.writer.scrub(written) != written or REDACTED in written or self.writer.scrub(prompt) != prompt:
            return MSG_KEY_IN_PROMPT
        why = why or check_prompt(prompt, self.task, self.group, max_words=MAX_WORDS)
        if why is None and near_key(prompt) in self.seen:
            same = any(prompt_key(p) == prompt_key(prompt) for p in self.prompts)
            why = MSG_DUPLICATE if same else MSG_NEAR_DUPLICATE
        return why

    def take(self, replies: list[str]) -> tuple[int, list[tuple[str, str]]]:
        """Check the (scrubbed) replies of a round, keep their valid prompts, add the follow-up; (added, rejected)."""
        candidates, error, turn = self._candidates(replies)
        self.reasons, rejected, added = [], [], 0
        if error:
            self.reasons.append(error)
        for prompt, written, why in candidates:
            why = self._judge(prompt, written, why)
            if why is not None:
                self.reasons.append(why)
                rejected.append((self.writer.scrub(written), why))
                continue
            if len(self.prompts) < self.n:
                self.prompts.append(prompt)
                self.seen.add(near_key(prompt))
                added += 1
        self.rejections.update(self.reasons)
        tell = compose.follow_up if self.composed else follow_up
        extra = {"shown": 0 if self.split else SHOWN_REJECTIONS} if self.composed else {}
        self.messages = self.messages + [
            {"role": "assistant", "content": turn},
            {"role": "user", "content": tell(accepted=added, missing=1 if self.split else self.ask, rejected=rejected,
                                             error=error,
                                             **extra)},
        ]
        return added, rejected


class ChatWriter:
    """The loop shared by every LLM writer; subclasses implement `_chat(messages, seed=, want=) -> text` or, to
    answer several groups at once, `_chat_many(requests) -> texts`."""

    name = "llm"
    one_context_per_request = False  # composed mode: ask for each context in a request of its own (batch rows)

    def __init__(self, *, max_rounds: int, temperature: float, mode: str = "composed") -> None:
        if max_rounds < 1:
            raise UsageError(MSG_BAD_ROUNDS.format(value=max_rounds))
        if temperature < 0:
            raise UsageError(MSG_BAD_TEMPERATURE.format(value=temperature))
        if mode not in MODES:
            raise UsageError(MSG_BAD_MODE.format(value=mode))
        self.max_rounds, self.temperature, self.mode = int(max_rounds), float(temperature), mode
        # group -> rejections by reason over this writer's runs (the prompt file's diversity figures)
        self.rejections: dict[str, collections.Counter] = {}
        # (tokens, seconds) generated by the last _chat_many, for backends that count them
        self.last_generated: tuple[int, float] | None = None

    @property
    def instruction_version(self) -> int:
        return compose.INSTRUCTION_VERSION if self.mode == "composed" else INSTRUCTION_VERSION

    @property
    def tokens_per_item(self) -> int:
        """Tokens one prompt (free) or one context (composed) of a reply takes at most, about."""
        return compose.TOKENS_PER_CONTEXT if self.mode == "composed" else TOKENS_PER_PROMPT

    def _chat(self, messages: list[dict[str, str]], *, seed: int, want: int,
              schema: dict[str, Any] | None = None) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _chat_many(self, requests: list[ChatRequest]) -> list[str | BaseException]:
        """One reply per request, in order (or the exception that request ended with, when the others should
        still be used). Backends that can answer several at once override this."""
        return [self._chat(r.messages, seed=r.seed, want=r.want, schema=r.schema) for r in requests]

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
        report = None if on_partial is None else (lambda _name, prompts: on_partial(prompts))
        return self.write_groups(task, [group], n, seed=seed, existing={group.name: existing},
                                 on_partial=report)[group.name]

    def write_groups(
        self,
        task: Task,
        groups: Sequence[Group],
        n: int,
        *,
        seed: int = 0,
        existing: Mapping[str, Sequence[str]] | None = None,
        on_partial: Callable[[str, list[str]], None] | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> dict[str, list[str]]:
        """`n` valid prompts for each of `groups`, asked side by side: each round sends the conversation of every
        group still missing prompts (`_chat_many`), so a local model answers them in one batch and a server
        concurrently. Replies are handled in the order of `groups`, so callbacks and results do not depend on
        which reply arrived first. Group g's round r is seeded with image_seed(seed, "prompts/g", r) (its i-th split
        request, i > 0, with "prompts/g/i")."""
        existing = existing or {}
        convs = [_Conversation(self, task, g, n, existing.get(g.name, ())) for g in groups]
        for c in convs:  # counted from now on, also when the run stops
            c.rejections = self.rejections.setdefault(c.group.name, collections.Counter())
        rounds = 0
        while pending := [c for c in convs if c.missing > 0]:
            if rounds == self.max_rounds:
                c = pending[0]
                raise PromptWriterError(MSG_CAP.format(got=len(c.prompts), n=n, group=c.group.name, rounds=rounds,
                                                       reasons=summarize(c.reasons)))
            rounds += 1
            asked = [c.requests(seed, rounds) for c in pending]
            requests = [r for rs in asked for r in rs]
            self.last_generated = None
            # said before the round's requests: a local model's round can take minutes
            log.info("%s round %d/%d: asking for %s", self.name, rounds, self.max_rounds,
                     ", ".join(f"{c.missing} {c.group.name}" for c in pending))
            # A backend may hand back an exception in place of a reply (one of several concurrent requests
            # failed): the other groups' replies are still used and saved before it is raised.
            flat = self._chat_many(requests)
            failed = next((r for r in flat if isinstance(r, BaseException)), None)
            replies, at = [], 0
            for rs in asked:  # each conversation's replies
                replies.append(flat[at:at + len(rs)])
                at += len(rs)
            speed = None
            if self.last_generated is not None:
                tokens, seconds = self.last_generated
                speed = tokens / seconds if seconds > 0 else None
                log.info("%s round %d/%d: %d tokens in %.1f s (%s tokens/s) for %d group(s)", self.name, rounds,
                         self.max_rounds, tokens, seconds, f"{speed:.1f}" if speed else "?", len(pending))
            for c, mine in zip(pending, replies):
                if any(isinstance(r, BaseException) for r in mine):
                    continue
                # Scrubbed before anything else sees it: the reply goes back into the conversation and its prompts
                # into files. A prompt that held the key is rejected (JSON escapes are caught by the second scrub).
                added, rejected = c.take([self.scrub(r or "") for r in mine])
                for prompt, why in rejected:  # -v shows what the model wrote
                    log.debug("%s round %d, %s rejected %r: %s", self.name, rounds, c.group.name, prompt, why)
                top = collections.Counter(c.reasons).most_common(1)
                report = RoundReport(group=c.group.name, round=rounds, max_rounds=self.max_rounds, added=added,
                                     rejected=len(c.reasons),  # rejected prompts, plus 1 for an unreadable reply
                                     have=len(c.prompts), want=n,
                                     top_reason=f"{top[0][0]} ({top[0][1]})" if top else None, tokens_per_s=speed)
                log.info("%s round %d/%d, %s: %d accepted, %d rejected%s; %d/%d", self.name, rounds, self.max_rounds,
                         c.group.name, added, report.rejected,
                         f" (most often: {report.top_reason})" if report.top_reason else "", report.have, n)
                if added and on_partial is not None:
                    on_partial(c.group.name, list(c.prompts))
                if on_round is not None:
                    on_round(report)
            if failed is not None:
                raise failed
        return {c.group.name: c.prompts[:n] for c in convs}


def reject_unknown(unknown: dict[str, Any], writer: str) -> None:
    if unknown:
        names = ", ".join("--" + k.replace("_", "-") for k in sorted(unknown))
        raise UsageError(MSG_UNKNOWN_OPTIONS.format(names=names, writer=writer))
