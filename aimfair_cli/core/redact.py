"""Credentials inside URLs (`http://user:password@host/v1`, `?api_key=...`) are replaced by `***` wherever a URL is
recorded or printed: resolved configs, the prompt file's `made_by`, log lines and error messages. The client that
connects keeps the real URL."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
# query parameters that carry a credential (api_key, access_token, sig, X-Amz-Signature, password, ...)
_SECRET_PARAM = re.compile(r"(key|token|secret|passw(or)?d|pwd|auth|sig(nature)?|credential)", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """`url` with its user name, password and secret query values replaced by `***` (other text unchanged)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = HIDDEN + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode([(k, HIDDEN if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    del host
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted (an error message that quotes the URL it failed on)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def url_secrets(url: str | None) -> list[str]:
    """The credential strings inside `url` (password, user name, secret query values): scrubbed from any text."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password, parts.username]
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_PARAM.search(k)]
    except ValueError:
        return []
    return [s for s in found if s and len(s) >= 3]


def redact_values(value: Any) -> Any:
    """A config (dicts, lists, strings) with every URL-looking string redacted."""
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_values(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_text(value)
    return value
