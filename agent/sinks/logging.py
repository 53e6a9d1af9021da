"""structlog set-up: JSON lines in production, a readable console on a terminal.

Context (``tick_id``, ``block_number``) is bound per tick with contextvars, so every line of a
tick carries it. A redaction processor is the last line of defence for secrets.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

_SECRET_PATTERNS = [
    re.compile(r"(api_key=)[^&\s\"']+", re.I),
    re.compile(r"(apikey=)[^&\s\"']+", re.I),
    re.compile(r"(registrationkey\"?\s*[:=]\s*\"?)[^&\s\"',}]+", re.I),
]


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k, v in list(event_dict.items()):
        if isinstance(v, str):
            for pat in _SECRET_PATTERNS:
                v = pat.sub(r"\1***", v)
            event_dict[k] = v
    return event_dict


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO"
) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
