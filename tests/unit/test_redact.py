"""The one redaction (``agent.core.redact``) and the log processor that applies it to every
event, nested values included."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from agent.core.redact import redact, redact_url, redact_value
from agent.sinks.logging import configure_logging


def test_names_that_look_like_credentials_are_masked_in_text() -> None:
    text = (
        "GET /series?api_key=AAA&file_type=json&token=BBB&registrationkey=CCC "
        'body {"access_token": "DDD", "apikey":"EEE"} auth Authorization: Bearer FFF'
    )
    out = redact(text)
    for secret in ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF"):
        assert secret not in out
    assert "file_type=json" in out


def test_a_longer_name_ending_in_key_is_not_a_credential() -> None:
    assert redact("idempotency_key=topup:WETH:2024") == "idempotency_key=topup:WETH:2024"
    assert redact("x", ["x"]) == "***"


def test_nested_values_and_credential_entries() -> None:
    v = {"params": {"api_key": "AAA", "q": ["u?token=BBB", ("key=CCC",)]}, "n": 3}
    assert redact_value(v) == {
        "params": {"api_key": "***", "q": ["u?token=***", ("key=***",)]},
        "n": 3,
    }


def test_provider_url_keys() -> None:
    assert "abcdef0123456789abcdef" not in redact_url(
        "https://eth.example/v2/abcdef0123456789abcdef"
    )
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert "k=1" not in redact_url("https://x.example/rpc?k=1")


def test_log_lines_are_redacted_nested_and_with_tracebacks(restore_logging: None) -> None:
    buf = io.StringIO()
    configure_logging("json", "INFO")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buf))
    log = structlog.get_logger("t")
    try:
        raise ValueError("GET https://api.example/x?token=SECRET1 failed")
    except ValueError as exc:
        log.error(
            "tick.failed",
            url="https://api.example/x?token=SECRET2",
            request={"headers": {"Authorization": "Bearer SECRET3"}, "body": ["apikey=SECRET4"]},
            token="SECRET5",
            exc_info=exc,
        )
    line = buf.getvalue()
    for n in range(1, 6):
        assert f"SECRET{n}" not in line, line
    event: dict[str, Any] = json.loads(line)
    assert "Traceback" in event["exception"] and "ValueError" in event["exception"]
