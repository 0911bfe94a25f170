"""The `openai` prompt writer: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, Ollama).

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

Structured output: each request carries the reply's JSON schema ({"contexts": [{field: string} x n]} in the
composed mode, {"prompts": [string x n]} in the free mode) as
`response_format={"type": "json_schema", ...}` (OpenAI, vLLM, llama.cpp's llama-server, Ollama). A server that
answers HTTP 400 or 422 to it is asked with the next form instead, for the rest of the run: `{"type":
"json_object", "schema": ...}` (llama-cpp-python's server), then plain `{"type": "json_object"}`, then no
response_format (and, last, no `seed`). The groups' requests of a round are sent concurrently (`concurrency`).
Every form gives usable prompts in the composed mode: the instruction names the fields and the JSON shape,
so a reply without a schema is still read (a context given as a plain string is composed as it is).
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import os
import queue
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from ..core.errors import PromptWriterError, UsageError
from ..core.options import option
from ..core.redact import redact_text, redact_url, url_secrets
from .chat import MODE_HELP, MODES, MSG_NO_MODEL, REDACTED, ChatRequest, ChatWriter, reject_unknown, reply_schema

log = logging.getLogger(__name__)

LOCAL_KEY = "sk-local-no-key"  # sent to local servers when the key variable is not set
TIMEOUT_RETRIES = 1  # a timed-out request is tried once more: a hung server ends the run in ~2 x timeout
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what an environment variable's name looks like
MSG_NO_KEY = (
    "environment variable {var} is not set: export your API key there (aimfair reads keys from the environment "
    "only), or name another variable with --api-key-env"
)
MSG_KEY_NOT_ASCII = ("${var} holds characters that are not printable ASCII (a typographic quote, a non-breaking "
                     "space, a line break?); an API key is plain ASCII: export it again")
# The value is not repeated: it may be the key itself.
MSG_BAD_KEY_ENV = (
    "--api-key-env takes the NAME of an environment variable (letters, digits and _, e.g. OPENAI_API_KEY), "
    "not the key itself; export the key in a variable and pass its name"
)
MSG_BAD_TIMEOUT = "--timeout must be a positive number of seconds, got {value}"
MSG_BAD_RETRIES = "max_retries must be at least 0, got {value}"  # a library argument (no flag)
MSG_BAD_CONCURRENCY = "--concurrency must be at least 1, got {value}"
MSG_NO_ANSWER = "no reply from {url} within {timeout:g} s ({attempts}); raise --timeout if the model is slow"
MSG_AUTH = "{url} rejected the API key in ${var} (HTTP {status})"
MSG_MODEL_NOT_FOUND = "model '{model}' not found at {url} (HTTP 404)"
MSG_HTTP = "request to {url} failed: {reason}"
MSG_GAVE_UP = "request to {url} still failing after {attempts} attempts: {reason}"
MSG_NOT_COMPLETION = "{url} answered with something that is not a chat completion ({what})"
# The response_format forms tried in turn (see the module docstring); "none" sends no response_format.
RESPONSE_FORMATS = ("json_schema", "json_object+schema", "json_object", "none")
# Answers that make the next request ask with less: 400 and 422 (request validation), and any other error
# whose message names the response_format field or its json_schema type (llama-cpp-python 0.3's server turns
# its 422 into "HTTP 500: 1 validation error: ... response_format ... 'json_schema'").
FALLBACK_STATUS = (400, 422)
_NAMES_FORMAT = re.compile(r"response_format|json_schema")


def _unbounded(schema: Any) -> Any:
    """`schema` without string length bounds: OpenAI's strict mode refuses minLength/maxLength (the length is
    checked later)."""
    if isinstance(schema, dict):
        return {k: _unbounded(v) for k, v in schema.items() if k not in ("minLength", "maxLength")}
    if isinstance(schema, list):
        return [_unbounded(v) for v in schema]
    return schema


def response_format(form: str, want: int, schema: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The response_format field of form `form` for a reply of `want` prompts (or following `schema`)."""
    schema = _unbounded(schema if schema is not None else reply_schema(want))
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "prompts", "strict": True, "schema": schema}}
    if form == "json_object+schema":
        return {"type": "json_object", "schema": schema}
    if form == "json_object":
        return {"type": "json_object"}
    return None


def run_concurrently(calls: list[Callable[[], Any]], workers: int) -> list[Any]:
    """The results of `calls` in order, at most `workers` running at a time; a call that raised gives its exception
    in place of a result. Daemon threads, waited for with short joins: Ctrl-C reaches the main thread at once
    and requests still in flight are abandoned with the process instead of holding up its exit."""
    results: list[Any] = [None] * len(calls)
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(calls)):
        todo.put(i)

    def work() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = calls[i]()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller in the call's place
                results[i] = exc

    threads = [threading.Thread(target=work, daemon=True, name=f"aimfair-openai-{k}")
               for k in range(min(workers, len(calls)))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    return results


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


@dataclass
class OpenAIOptions:
    """The openai writer's options (`aimfair prompts --writer openai ...`)."""

    model: str | None = option(None, help="the model name (required).", default_text="none")
    base_url: str | None = option(None, help="the API base URL, e.g. a local vLLM, llama.cpp or Ollama server.",
                                  default_text="the OpenAI API")
    api_key_env: str = option("OPENAI_API_KEY", help="NAME of the environment variable holding the API key (a value "
                              "that is not a variable name is refused); the key itself is never written anywhere.")
    temperature: float = option(1.0, min=0, max=2, help="sampling temperature.")
    max_rounds: int = option(5, min=1, max=1000, help="requests per group before giving up on missing prompts.")
    timeout: float = option(60.0, above=0, max=86_400, help="seconds to wait for each reply; a request that times out "
                            "is tried once more, then the command stops.")
    concurrency: int = option(4, min=1, max=64, help="requests sent at once (one per group still missing prompts).")
    # Opt-in: OpenAI's reasoning models refuse max_tokens, and count their hidden tokens in it.
    max_new_tokens: int | None = option(None, min=1, max=1_000_000, help="tokens per reply at most, sent as max_tokens "
                                        "(for servers that otherwise generate up to their context size).",
                                        default_text="the server's")
    mode: str = option("composed", choices=MODES, help=MODE_HELP)


class OpenAIWriter(ChatWriter):
    """Prompts from any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama via `base_url`).

    Requests that fail with 408/409/429/5xx or a lost connection are retried up to `max_retries` times (a
    timeout only TIMEOUT_RETRIES times) with capped, jittered exponential backoff, waiting as long as a Retry-After header asks (up to
    `max_backoff` seconds). The reply's JSON schema (`response_format`) and a per-round `seed` are sent where the
    server takes them: after an HTTP 400/422 the request is resent with the next RESPONSE_FORMATS form (the seed
    is dropped last), which stays in use for the rest of the run. Up to `concurrency` groups are asked at once.
    """

    name = "openai"
    options = OpenAIOptions

    def __init__(
        self,
        *,
        model: str | None = OpenAIOptions.model,
        base_url: str | None = OpenAIOptions.base_url,
        api_key_env: str = OpenAIOptions.api_key_env,
        temperature: float = OpenAIOptions.temperature,
        max_rounds: int = OpenAIOptions.max_rounds,
        timeout: float = OpenAIOptions.timeout,
        concurrency: int = OpenAIOptions.concurrency,
        max_new_tokens: int | None = OpenAIOptions.max_new_tokens,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        mode: str = OpenAIOptions.mode,
        json_mode: bool = True,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        **unknown: Any,
    ) -> None:
        reject_unknown(unknown, self.name)
        if not model:
            raise UsageError(MSG_NO_MODEL.format(writer=self.name, extra=", e.g. gpt-4o"))
        if not isinstance(api_key_env, str) or not ENV_NAME.match(api_key_env):
            raise UsageError(MSG_BAD_KEY_ENV)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise UsageError(MSG_BAD_TIMEOUT.format(value=timeout))
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise UsageError(MSG_BAD_RETRIES.format(value=max_retries))
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise UsageError(MSG_BAD_CONCURRENCY.format(value=concurrency))
        super().__init__(max_rounds=max_rounds, temperature=temperature, mode=mode)
        self.model, self.api_key_env, self.timeout = model, api_key_env, float(timeout)
        self.concurrency = int(concurrency)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self._sleep, self._jitter = sleep, random.Random()
        # What the server has taken so far: the response_format form (RESPONSE_FORMATS) and whether it takes a
        # seed. Downgraded after HTTP 400/422, under the lock: concurrent requests share them.
        self._form = RESPONSE_FORMATS[0] if json_mode else "none"
        self._sends_seed = True
        self._lock = threading.Lock()
        self._tokens: int | None = 0  # completion tokens of the current round (None: a reply did not say)
        self._key = os.environ.get(api_key_env) or None
        if self._key is not None and not (self._key.isascii() and self._key.isprintable()):
            # HTTP headers are ASCII: the client would fail deep inside with a UnicodeEncodeError
            raise PromptWriterError(MSG_KEY_NOT_ASCII.format(var=api_key_env))
        self._secrets = [self._key] if self._key else []
        self._secrets += url_secrets(self.base_url)
        if client is None:
            if self._key is None:
                if not is_local_url(self.base_url):
                    raise PromptWriterError(MSG_NO_KEY.format(var=api_key_env))
                log.info("$%s is not set; sending a placeholder key to the local server %s", api_key_env, self._url)
            import openai

            # Retries are ours (they honour Retry-After and are logged), so the client's own are off.
            client = openai.OpenAI(base_url=self.base_url, api_key=self._key or LOCAL_KEY, max_retries=0,
                                   timeout=self.timeout)
        self._client = client

    @property
    def _url(self) -> str:
        """The server as messages name it: credentials in the URL replaced by ***."""
        return redact_url(self.base_url) if self.base_url else "the OpenAI API"

    def _hide(self, text: str, mark: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, mark)
        return redact_text(text)

    def _scrub(self, text: str) -> str:
        return self._hide(text, "***")

    def scrub(self, text: str) -> str:
        return self._hide(text, REDACTED)

    def _chat_many(self, requests: list[ChatRequest]) -> list[str | BaseException]:
        started = time.monotonic()
        self._tokens = 0
        calls = [lambda r=r: self._chat(r.messages, seed=r.seed, want=r.want, schema=r.schema) for r in requests]
        if self.concurrency == 1 or len(calls) == 1:
            replies: list[Any] = []
            for call in calls:  # one at a time: after a failure the rest are not sent
                try:
                    replies.append(call())
                except Exception as exc:  # noqa: BLE001 - raised by write_groups once the others are saved
                    replies += [exc] * (len(calls) - len(replies))
                    break
        else:
            replies = run_concurrently(calls, self.concurrency)
        if self._tokens:  # the server reported usage for every reply
            self.last_generated = (self._tokens, time.monotonic() - started)
        return replies

    def _downgrade(self, form: str, sends_seed: bool, exc: Any) -> bool:
        """After a refusal (400/422, or an error naming response_format) of a request sent with (form,
        sends_seed): ask with less from now on, saying so once per step. False when nothing is left to drop."""
        with self._lock:
            if (self._form, self._sends_seed) != (form, sends_seed):
                return True  # a concurrent request already stepped down: just resend
            reason = self._scrub(_describe_error(exc))
            if self._form != "none":
                self._form = RESPONSE_FORMATS[RESPONSE_FORMATS.index(self._form) + 1]
                now = "no response_format" if self._form == "none" else f"response_format {self._form}"
                log.warning("%s refused response_format %s (%s); using %s for the rest of the run", self._url, form,
                            reason, now)
                return True
            if self._sends_seed:
                self._sends_seed = False
                log.warning("%s refused the request (%s); sending no seed for the rest of the run", self._url, reason)
                return True
            return False

    def _chat(self, messages: list[dict[str, str]], *, seed: int, want: int,
              schema: dict[str, Any] | None = None) -> str:
        import openai

        retryable = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
        attempt = timeouts = 0
        while True:
            form, sends_seed = self._form, self._sends_seed
            kwargs: dict[str, Any] = dict(model=self.model, messages=messages, temperature=self.temperature)
            if form != "none":
                kwargs["response_format"] = response_format(form, want, schema)
            if sends_seed:
                kwargs["seed"] = seed % (2**31)
            if self.max_new_tokens is not None:
                kwargs["max_tokens"] = self.max_new_tokens
            try:
                completion = self._client.chat.completions.create(**kwargs)
                text = reply_text(completion, url=self._url, model=self.model)
                self._count(completion)
                return text
            except openai.APIStatusError as exc:
                if exc.status_code in FALLBACK_STATUS or (form != "none" and _NAMES_FORMAT.search(_error_text(exc))):
                    if self._downgrade(form, sends_seed, exc):
                        continue
                    raise self._fatal(exc) from None
                if not (isinstance(exc, retryable) or exc.status_code in (408, 409)):
                    raise self._fatal(exc) from None
                error: Exception = exc
            except retryable as exc:  # connection errors and timeouts (no status code)
                error = exc
            except (openai.OpenAIError, UnicodeError) as exc:  # anything else the client raises: one scrubbed line
                raise PromptWriterError(MSG_HTTP.format(url=self._url, reason=self._scrub(_describe_error(exc)))) \
                    from None
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

    def _count(self, completion: Any) -> None:
        """Add the reply's completion tokens to the round's count (which stays None once a reply lacks them)."""
        tokens = getattr(getattr(completion, "usage", None), "completion_tokens", None)
        with self._lock:
            if self._tokens is not None:
                self._tokens = self._tokens + tokens if isinstance(tokens, int) and tokens > 0 else None

    @property
    def json_mode(self) -> bool:
        return self._form != "none"

    @property
    def response_format_form(self) -> str:
        """The response_format form requests are sent with now (RESPONSE_FORMATS)."""
        return self._form

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
            "base_url": redact_url(self.base_url) if self.base_url else None,
            "api_key_env": self.api_key_env,
            "temperature": self.temperature,
            "max_rounds": self.max_rounds,
            "json_mode": self.json_mode,
            "response_format": self._form,
            "sends_seed": self._sends_seed,
            "max_new_tokens": self.max_new_tokens,
            "mode": self.mode,
            "instruction_version": self.instruction_version,
        }

    def __repr__(self) -> str:
        shown = redact_url(self.base_url) if self.base_url else None
        return f"OpenAIWriter(model={self.model!r}, base_url={shown!r}, api_key_env={self.api_key_env!r})"


def _error_text(exc: Any) -> str:
    """All the server said about an error (its JSON body, else the client's message)."""
    body = getattr(exc, "body", None)
    return json.dumps(body) if body is not None else str(getattr(exc, "message", None) or exc)


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
