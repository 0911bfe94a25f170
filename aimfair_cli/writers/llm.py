"""LLM prompt writers: `openai` (any OpenAI-compatible chat endpoint) and `transformers` (a local chat model).

Both send the same instruction, laid out as in the paper (§3.1): {Task}, {Number of Prompts}, {Target
Attribute}, {Protected Attribute}, {Other Detailed Descriptions} (facial features, hair, eyes, head orientation
and angle) and {Prompt Format}, asking for a JSON object {"prompts": [...]}. Both run every reply through the
same checks — `tasks.check_prompt` (states the group's target and protected values, short enough for CLIP's
77 tokens) and a case/whitespace-insensitive duplicate check — and, in the same conversation, ask again for
what is still missing, telling the model why prompts were rejected, for at most `max_rounds` rounds. Valid
prompts are handed to `on_partial` as they arrive, so an interrupted run keeps them and a rerun continues.

API keys are read from an environment variable only (`api_key_env`, default OPENAI_API_KEY), whose NAME must look
like a variable name, so a key pasted there by mistake is refused before it can reach a config file. The key is
given to the HTTP client and nothing else: it is never logged, returned by `describe()` or written to any file.
It is scrubbed from error messages and from every reply as it arrives (a server may echo it inside generated
text), and a prompt that contained it is rejected, so it never reaches a prompt file or the conversation. A
server on this machine or a private network (vLLM, llama.cpp, Ollama) usually wants no key; for those a
placeholder is sent when the variable is not set.

Each request waits at most `timeout` seconds for the reply. A request that times out is tried once more (a
server that never answers ends the run after about twice the timeout); refused connections, 408/409/429 and
5xx answers are retried up to `max_retries` times with backoff.
"""

from __future__ import annotations

import collections
import email.utils
import ipaddress
import json
import logging
import os
import random
import re
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from ..errors import PromptWriterError, UsageError
from ..tasks import Attribute, Group, Task, check_prompt

log = logging.getLogger(__name__)

INSTRUCTION_VERSION = 1  # bump when the wording below changes: it is recorded in the prompt file
MAX_WORDS = 60  # tasks.check_prompt's bound, well inside CLIP's 77 tokens
LOCAL_KEY = "sk-local-no-key"  # sent to local servers when the key variable is not set
SHOWN_REJECTIONS = 5  # rejected prompts quoted back to the model per round
REDACTED = "[redacted API key]"  # what an echoed key is replaced with (no JSON-special characters)
TIMEOUT_RETRIES = 1  # a timed-out request is tried once more: a hung server ends the run in ~2 x timeout
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what an environment variable's name looks like

MSG_NO_MODEL = "--writer {writer} needs --model (an LLM name{extra})"
MSG_UNKNOWN_OPTIONS = "option(s) {names} do not apply to --writer {writer}"
MSG_NO_KEY = (
    "environment variable {var} is not set: export your API key there (aimfair reads keys from the environment "
    "only), or name another variable with --api-key-env"
)
MSG_BAD_ROUNDS = "--max-rounds must be at least 1, got {value}"
MSG_BAD_TEMPERATURE = "--temperature must be >= 0, got {value}"
# The value is not repeated: it may be the key itself.
MSG_BAD_KEY_ENV = (
    "--api-key-env takes the NAME of an environment variable (letters, digits and _, e.g. OPENAI_API_KEY), "
    "not the key itself; export the key in a variable and pass its name"
)
MSG_BAD_TIMEOUT = "--timeout must be a positive number of seconds, got {value}"
MSG_BAD_RETRIES = "max_retries must be at least 0, got {value}"  # a library argument (no flag)
MSG_NO_ANSWER = "no reply from {url} within {timeout:g} s ({attempts}); raise --timeout if the model is slow"
MSG_KEY_IN_PROMPT = "contained the API key"
MSG_CAP = "writer produced {got} of {n} valid prompts for group {group} after {rounds} rounds; last reasons: {reasons}"
MSG_AUTH = "{url} rejected the API key in ${var} (HTTP {status})"
MSG_MODEL_NOT_FOUND = "model '{model}' not found at {url} (HTTP 404)"
MSG_HTTP = "request to {url} failed: {reason}"
MSG_GAVE_UP = "request to {url} still failing after {attempts} attempts: {reason}"
MSG_REPLY_NOT_JSON = "reply was not valid JSON"
MSG_NOT_COMPLETION = "{url} answered with something that is not a chat completion ({what})"
MSG_REPLY_NO_LIST = 'reply had no "prompts" list'
MSG_DUPLICATE = "duplicate"


# ---- the instruction (one builder for every LLM writer) -------------------------------------------------


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


# ---- reading and checking replies ----------------------------------------------------------------------

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


def reply_text(completion: Any, *, url: str, model: str) -> str:
    """The text of the first choice of a chat completion. A server that answers with something else (not
    JSON, `{}`, no or an empty `choices` list, a bare list) is a PromptWriterError, not a traceback: the
    openai client hands such bodies through unvalidated."""
    choices = getattr(completion, "choices", None)  # None for a str, a list or a body without the field
    if not isinstance(choices, list):
        raise PromptWriterError(MSG_NOT_COMPLETION.format(url=url, what="no choices list"))
    if not choices:
        raise PromptWriterError(MSG_NOT_COMPLETION.format(url=url, what="an empty choices list"))
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        raise PromptWriterError(MSG_NOT_COMPLETION.format(url=url, what="a choice without a message"))
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise PromptWriterError(MSG_NOT_COMPLETION.format(url=url, what="the message content is not text"))
    if getattr(choice, "finish_reason", None) == "length":
        log.warning("the reply from %s was cut off at its token limit", model)
    return content or ""


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


class _ChatWriter:
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


# ---- openai ---------------------------------------------------------------------------------------------


def is_local_url(url: str | None) -> bool:
    """A server on this machine or a private network (which normally needs no API key)."""
    if not url:
        return False
    host = urlparse(url).hostname or ""
    if host == "localhost" or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def retry_after(exc: Any) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), if it said."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OpenAIWriter(_ChatWriter):
    """Prompts from any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama via `base_url`).

    Requests that fail with 408/409/429/5xx or a lost connection are retried up to `max_retries` times (a
    timeout only TIMEOUT_RETRIES times) with capped, jittered exponential backoff, waiting as long as a Retry-After header asks (up to
    `max_backoff` seconds). JSON mode (`response_format={"type": "json_object"}`) and a per-round `seed` are sent
    where the server takes them: after an HTTP 400 the request is resent without them (JSON mode first), and
    they stay off for the rest of the run.
    """

    name = "openai"

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 1.0,
        max_rounds: int = 5,
        timeout: float = 60.0,  # --timeout: seconds to wait for each reply
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        json_mode: bool = True,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        **unknown: Any,
    ) -> None:
        _reject_unknown(unknown, self.name)
        if not model:
            raise UsageError(MSG_NO_MODEL.format(writer=self.name, extra=", e.g. gpt-4o"))
        if not isinstance(api_key_env, str) or not ENV_NAME.match(api_key_env):
            raise UsageError(MSG_BAD_KEY_ENV)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise UsageError(MSG_BAD_TIMEOUT.format(value=timeout))
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError(MSG_BAD_RETRIES.format(value=max_retries))
        super().__init__(max_rounds=max_rounds, temperature=temperature)
        self.model, self.api_key_env, self.timeout = model, api_key_env, float(timeout)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self._sleep, self._jitter = sleep, random.Random()
        # Optional request fields, dropped one by one (in this order) if the server answers HTTP 400 to them.
        self._optional = (["response_format"] if json_mode else []) + ["seed"]
        self._key = os.environ.get(api_key_env) or None
        if client is None:
            if self._key is None:
                if not is_local_url(self.base_url):
                    raise PromptWriterError(MSG_NO_KEY.format(var=api_key_env))
                log.info("$%s is not set; sending a placeholder key to the local server %s", api_key_env, self.base_url)
            import openai

            # Retries are ours (they honour Retry-After and are logged), so the client's own are off.
            client = openai.OpenAI(base_url=self.base_url, api_key=self._key or LOCAL_KEY, max_retries=0,
                                   timeout=self.timeout)
        self._client = client

    @property
    def _url(self) -> str:
        return self.base_url or "the OpenAI API"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def scrub(self, text: str) -> str:
        return text.replace(self._key, REDACTED) if self._key else text

    def _chat(self, messages: list[dict[str, str]], *, seed: int) -> str:
        import openai

        retryable = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
        attempt = timeouts = 0
        while True:
            optional = {"response_format": {"type": "json_object"}, "seed": seed % (2**31)}
            kwargs: dict[str, Any] = dict(model=self.model, messages=messages, temperature=self.temperature,
                                          **{k: v for k, v in optional.items() if k in self._optional})
            try:
                completion = self._client.chat.completions.create(**kwargs)
                return reply_text(completion, url=self._url, model=self.model)
            except openai.BadRequestError as exc:
                if self._optional:
                    dropped = self._optional.pop(0)
                    log.info("%s answered HTTP 400 (%s); asking without %s", self._url,
                             self._scrub(_describe_error(exc)), dropped)
                    continue
                raise self._fatal(exc) from None
            except openai.APIStatusError as exc:
                if not (isinstance(exc, retryable) or exc.status_code in (408, 409)):
                    raise self._fatal(exc) from None
                error: Exception = exc
            except retryable as exc:  # connection errors and timeouts (no status code)
                error = exc
            attempt += 1
            if isinstance(error, openai.APITimeoutError):
                # A server that does not answer in time rarely answers the next time: one more try, then stop.
                timeouts += 1
                if timeouts > TIMEOUT_RETRIES or attempt > self.max_retries:
                    tries = f"{attempt} attempt" + ("s" if attempt > 1 else "")
                    raise PromptWriterError(MSG_NO_ANSWER.format(url=self._url, timeout=self.timeout,
                                                                 attempts=tries)) from None
            reason = self._scrub(_describe_error(error))
            if attempt > self.max_retries:
                raise PromptWriterError(MSG_GAVE_UP.format(url=self._url, attempts=attempt, reason=reason)) from None
            asked = retry_after(error)
            delay = min(self.max_backoff, asked if asked is not None else
                        self.backoff * 2 ** (attempt - 1) * self._jitter.uniform(0.5, 1.0))
            log.warning("%s: %s; retry %d/%d in %.1f s", self._url, reason, attempt, self.max_retries, delay)
            self._sleep(delay)

    @property
    def json_mode(self) -> bool:
        return "response_format" in self._optional

    def _fatal(self, exc: Any) -> PromptWriterError:
        status = getattr(exc, "status_code", "?")
        if status in (401, 403):
            return PromptWriterError(MSG_AUTH.format(url=self._url, var=self.api_key_env, status=status))
        if status == 404:
            return PromptWriterError(MSG_MODEL_NOT_FOUND.format(model=self.model, url=self._url))
        return PromptWriterError(MSG_HTTP.format(url=self._url, reason=self._scrub(_describe_error(exc))))

    def describe(self) -> dict[str, Any]:
        # The variable's name, never its value.
        return {
            "writer": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "temperature": self.temperature,
            "max_rounds": self.max_rounds,
            "json_mode": self.json_mode,
            "sends_seed": "seed" in self._optional,
            "instruction_version": INSTRUCTION_VERSION,
        }

    def __repr__(self) -> str:
        return f"OpenAIWriter(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"


def _describe_error(exc: Any) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    # The server's own words when it sent any ({"error": {"message": ...}}), else the client's description.
    message = body.get("message") if isinstance(body, dict) and body.get("message") else None
    message = message or getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    first = next((line.strip() for line in str(message).splitlines() if line.strip()), exc.__class__.__name__)
    return f"HTTP {status}: {first}" if status else first


def _reject_unknown(unknown: dict[str, Any], writer: str) -> None:
    if unknown:
        names = ", ".join("--" + k.replace("_", "-") for k in sorted(unknown))
        raise UsageError(MSG_UNKNOWN_OPTIONS.format(names=names, writer=writer))


# ---- transformers ---------------------------------------------------------------------------------------


class TransformersWriter(_ChatWriter):
    """Prompts from a local causal LM (a Hub id in the local cache or a folder), for users without an API.

    The conversation is rendered with the tokenizer's chat template (a plain "System/User/Assistant" text when
    it has none). temperature 0 decodes greedily; above 0 it samples, seeded per group and round so a rerun
    gives the same prompts on the same machine.
    """

    name = "transformers"

    def __init__(
        self,
        *,
        model: str | None = None,
        temperature: float = 0.0,
        max_rounds: int = 5,
        max_new_tokens: int = 4096,
        device: str = "auto",
        **unknown: Any,
    ) -> None:
        _reject_unknown(unknown, self.name)
        if not model:
            raise UsageError(MSG_NO_MODEL.format(writer=self.name, extra=" or a local folder"))
        super().__init__(max_rounds=max_rounds, temperature=temperature)
        from ..hub import first_line, locate_model, quiet_loading, resolve_device

        self.model, self.max_new_tokens = str(model), int(max_new_tokens)
        self.source = locate_model(self.model, marker="config.json", what="transformers model", error=PromptWriterError)
        self.device = resolve_device(device)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = dict(local_files_only=self.source.local_files_only)
        try:
            with quiet_loading():
                self.tokenizer = AutoTokenizer.from_pretrained(self.source.name_or_path, **kw)
                self.lm = AutoModelForCausalLM.from_pretrained(self.source.name_or_path, **kw)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError) as exc:
            raise PromptWriterError(f"cannot load transformers model '{self.model}': {first_line(exc)}") from exc
        # bf16 on GPUs that have it keeps 7B models in memory; CPUs compute fp32.
        if self.device.startswith("cuda"):
            self.lm = self.lm.to(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        self.lm = self.lm.to(self.device).eval()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: list[dict[str, str]]) -> str:
        """The text the model continues: its chat template, or a plain transcript without one."""
        if self.has_chat_template:
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates that refuse a system turn (e.g. Gemma): fold it into the first user turn
                folded = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
                return self.tokenizer.apply_chat_template(folded + messages[2:], tokenize=False,
                                                          add_generation_prompt=True)
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(turns) + "\n\nAssistant:"

    def _chat(self, messages: list[dict[str, str]], *, seed: int) -> str:
        import torch
        from transformers import GenerationConfig

        text = self.render(messages)
        # A chat template already writes the special tokens it needs; a plain transcript gets the usual ones.
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=not self.has_chat_template)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        sample = self.temperature > 0
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=sample,
                                  temperature=self.temperature if sample else None,
                                  top_p=None, top_k=None, pad_token_id=pad, eos_token_id=eos)
        if sample:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.lm.generate(**enc, generation_config=config)  # [1, prompt + new tokens]
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "writer": self.name,
            "model": self.model,
            "source": self.source.where,
            "revision": self.source.revision,
            "temperature": self.temperature,
            "decoding": "sampling" if self.temperature > 0 else "greedy",
            "max_new_tokens": self.max_new_tokens,
            "max_rounds": self.max_rounds,
            "chat_template": self.has_chat_template,
            "device": self.device,
            "transformers_version": str(transformers.__version__),
            "instruction_version": INSTRUCTION_VERSION,
        }
