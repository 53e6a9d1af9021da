"""structlog set-up: JSON lines in production, a readable console on a terminal.

Context (``tick_id``, ``block_number``) is bound per tick with contextvars, so every line of a
tick carries it. A redaction processor is the last line of defence for secrets.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from agent.core.redact import MASK, is_secret_name, redact, redact_value


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # The project's one redaction, through nested values; an entry named like a credential
    # ("api_key", "token", ...) is masked whole.
    for k, v in list(event_dict.items()):
        if k == "exc_info":
            continue  # the exception object; its rendered text is redacted below
        event_dict[k] = MASK if is_secret_name(k) else redact_value(v)
    return event_dict


def _redact_rendered(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    exc = event_dict.get("exception")
    if isinstance(exc, str):
        event_dict["exception"] = redact(exc)
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
    # JSON lines carry a failed tick's traceback as text; the console renders it itself.
    tracebacks: list[Any] = (
        [structlog.processors.format_exc_info, _redact_rendered] if use_json else []
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            *tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
