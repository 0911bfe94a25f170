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
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from ..errors import PromptWriterError, UsageError
from ..options import option
from .chat import INSTRUCTION_VERSION, MSG_NO_MODEL, REDACTED, ChatWriter, reject_unknown

log = logging.getLogger(__name__)

LOCAL_KEY = "sk-local-no-key"  # sent to local servers when the key variable is not set
TIMEOUT_RETRIES = 1  # a timed-out request is tried once more: a hung server ends the run in ~2 x timeout
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what an environment variable's name looks like
MSG_NO_KEY = (
    "environment variable {var} is not set: export your API key there (aimfair reads keys from the environment "
    "only), or name another variable with --api-key-env"
)
# The value is not repeated: it may be the key itself.
MSG_BAD_KEY_ENV = (
    "--api-key-env takes the NAME of an environment variable (letters, digits and _, e.g. OPENAI_API_KEY), "
    "not the key itself; export the key in a variable and pass its name"
)
MSG_BAD_TIMEOUT = "--timeout must be a positive number of seconds, got {value}"
MSG_BAD_RETRIES = "max_retries must be at least 0, got {value}"  # a library argument (no flag)
MSG_NO_ANSWER = "no reply from {url} within {timeout:g} s ({attempts}); raise --timeout if the model is slow"
MSG_AUTH = "{url} rejected the API key in ${var} (HTTP {status})"
MSG_MODEL_NOT_FOUND = "model '{model}' not found at {url} (HTTP 404)"
MSG_HTTP = "request to {url} failed: {reason}"
MSG_GAVE_UP = "request to {url} still failing after {attempts} attempts: {reason}"
MSG_NOT_COMPLETION = "{url} answered with something that is not a chat completion ({what})"


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


class OpenAIWriter(ChatWriter):
    """Prompts from any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama via `base_url`).

    Requests that fail with 408/409/429/5xx or a lost connection are retried up to `max_retries` times (a
    timeout only TIMEOUT_RETRIES times) with capped, jittered exponential backoff, waiting as long as a Retry-After header asks (up to
    `max_backoff` seconds). JSON mode (`response_format={"type": "json_object"}`) and a per-round `seed` are sent
    where the server takes them: after an HTTP 400 the request is resent without them (JSON mode first), and
    they stay off for the rest of the run.
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
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
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
