"""The one redaction of secrets, for every message, log line and recording.

``redact`` scrubs ``name=value`` and ``"name": "value"`` pairs whose name looks like a credential
(``api_key``, ``apikey``, ``registrationkey``, ``access_token``, ``token``, ``secret``, ``key``,
``password``, ``authorization``) plus any explicitly known secret values; ``redact_value`` does
the same through nested dicts, lists and tuples (a dict entry whose key is such a name is masked
whole); ``redact_url`` also hides an API key embedded as the last path segment of a provider
URL (``.../v2/<key>``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

MASK = "***"
SNIPPET_CHARS = 200
SECRET_NAMES = (
    "api_key",
    "api-key",
    "apikey",
    "registrationkey",
    "access_token",
    "access-token",
    "token",
    "secret",
    "password",
    "authorization",
    "key",
)
# A credential name (not the tail of a longer name: "idempotency_key=" is not a secret), then
# "=" or a JSON ":" (quotes optional), then the value up to a separator.
_PAIR = re.compile(
    r"((?<![A-Za-z0-9_\-])(?:"
    + "|".join(re.escape(n) for n in SECRET_NAMES)
    + r")[\"']?\s*[:=]\s*(?:Bearer\s+)?[\"']?)[^&#\s\"',}]+",
    re.IGNORECASE,
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    out = _PAIR.sub(r"\1" + MASK, text)
    for s in secrets:
        if s:
            out = out.replace(s, MASK)
    return out


def is_secret_name(name: object) -> bool:
    return str(name).lower() in SECRET_NAMES


def redact_value(v: Any, secrets: Sequence[str] = ()) -> Any:
    """``v`` with every string redacted, through nested containers."""
    if isinstance(v, dict):
        return {k: MASK if is_secret_name(k) else redact_value(x, secrets) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(redact_value(x, secrets) for x in v)
    if isinstance(v, str):
        return redact(v, secrets)
    return v


def redact_url(url: str) -> str:
    """A provider URL fit for a message: a key-like last path segment (16+ characters) and the
    whole query are hidden."""
    base, _, query = url.partition("?")
    parts = base.split("/")
    if len(parts) > 3 and len(parts[-1]) >= 16:
        parts[-1] = MASK
    return redact("/".join(parts)) + ("?" + MASK if query else "")


def snippet(body: bytes | str, secrets: Sequence[str] = (), limit: int = SNIPPET_CHARS) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())  # one line: collapses HTML/pretty-printed JSON
    text = redact(text, secrets)
    return text if len(text) <= limit else text[:limit] + "…"
