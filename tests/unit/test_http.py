"""HTTP client layer against a real local aiohttp server (no mocks of aiohttp)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.core.errors import MalformedResponse, RateLimited, SourceError, TransportError
from agent.core.http import (
    HttpClient,
    HttpStatusError,
    RateLimit,
    Request,
    Response,
    RetryPolicy,
    parse_retry_after,
    rate_limit_layer,
    redact,
)
from agent.core.metrics import METRICS

Reply = tuple[int, str | bytes, dict[str, str]]


class Scripted:
    """Per-path scripted replies, consumed in order (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: dict[
            str, list[Reply | Callable[[web.Request], Awaitable[web.StreamResponse]]]
        ] = {}
        self.hits: dict[str, int] = {}
        self.requests: list[web.Request] = []

    def on(self, path: str, *replies: Any) -> None:
        self.replies[path] = list(replies)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        path = request.path
        n = self.hits.get(path, 0)
        self.hits[path] = n + 1
        script = self.replies.get(path)
        if not script:
            return web.Response(status=404, text="not scripted")
        reply = script[min(n, len(script) - 1)]
        if callable(reply):
            return await reply(request)
        status, body, headers = reply
        ctype = headers.pop("Content-Type", "application/json") if headers else "application/json"
        return web.Response(
            status=status,
            body=body.encode() if isinstance(body, str) else body,
            headers={**headers, "Content-Type": ctype},
        )


@pytest.fixture
async def api() -> AsyncIterator[tuple[Scripted, str]]:
    s = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield s, str(server.make_url("")).rstrip("/")
    await server.close()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, d: float) -> None:
        self.calls.append(d)


def client(sleeps: Sleeps | None = None, **kw: Any) -> HttpClient:
    return HttpClient(
        retry=kw.pop(
            "retry",
            RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=30),
        ),
        sleep=sleeps or Sleeps(),
        rng=random.Random(1),
        **kw,
    )


async def test_get_json_ok_and_metrics(api: tuple[Scripted, str]) -> None:
    s, base = api
    s.on("/x", (200, '{"a": 1}', {}))
    METRICS.reset()
    async with client() as http:
        assert await http.get_json("src", f"{base}/x", label="x") == {"a": 1}
    snap = METRICS.snapshot()["src"]
    assert snap["requests"] == 1 and snap["errors"] == 0


async def test_invalid_json_names_the_source_and_path_without_the_key(
    api: tuple[Scripted, str],
) -> None:
    s, base = api
    s.on("/deep/path", (200, '{"observations": [{"date": "2020-01-01"}]}}', {}))
    async with client() as http:
        with pytest.raises(MalformedResponse) as ei:
            await http.get_json("fred", f"{base}/deep/path", params={"api_key": "SECRETKEY"})
    msg = str(ei.value)
    assert msg.startswith("fred: ") and "/deep/path" in msg and "invalid JSON" in msg
    assert "SECRETKEY" not in msg
    assert s.hits["/deep/path"] == 1


async def test_html_page_with_200_is_malformed(api: tuple[Scripted, str]) -> None:
    s, base = api
    s.on(
        "/p",
        (
            200,
            "<!DOCTYPE html><html><title>Just a moment...</title></html>",
            {"Content-Type": "text/html"},
        ),
    )
    async with client() as http:
        with pytest.raises(MalformedResponse, match=r"defillama: .*/p returned an HTML page"):
            await http.get_json("defillama", f"{base}/p")


async def test_nan_in_json_is_malformed(api: tuple[Scripted, str]) -> None:
    s, base = api
    s.on("/p", (200, '{"tvl": NaN}', {}))
    async with client() as http:
        with pytest.raises(MalformedResponse):
            await http.get_json("defillama", f"{base}/p")


async def test_404_not_retried_and_secret_redacted(
    api: tuple[Scripted, str], tmp_path: Path
) -> None:
    s, base = api
    s.on(
        "/obs",
        (400, '{"error_code":400,"error_message":"Bad Request.  api_key=SECRETKEY is bad"}', {}),
    )
    rec = tmp_path / "rec.jsonl"
    async with client(record_path=rec) as http:
        with pytest.raises(HttpStatusError) as ei:
            await http.get_json(
                "fred", f"{base}/obs", params={"api_key": "SECRETKEY"}, secrets=("SECRETKEY",)
            )
    assert ei.value.status == 400 and s.hits["/obs"] == 1
    assert "SECRETKEY" not in str(ei.value) and "SECRETKEY" not in ei.value.body
    text = rec.read_text()
    assert "SECRETKEY" not in text and '"error"' in text


async def test_post_json_and_recording(api: tuple[Scripted, str], tmp_path: Path) -> None:
    s, base = api

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.json()})

    s.on("/info", echo)
    rec = tmp_path / "rec.jsonl"
    async with client(record_path=rec) as http:
        out = await http.post_json(
            "bls", f"{base}/info", {"seriesid": ["X"], "registrationkey": "K123"}, secrets=("K123",)
        )
    assert out == {"got": {"seriesid": ["X"], "registrationkey": "K123"}}
    entry = json.loads(rec.read_text().splitlines()[0])
    assert entry["json"]["registrationkey"] == "***"
    assert "K123" not in rec.read_text()
    assert entry["status"] == 200


async def test_timeout_is_transport_error(api: tuple[Scripted, str]) -> None:
    s, base = api

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({})

    s.on("/slow", slow)
    async with HttpClient(timeout_s=0.1, retry=RetryPolicy(attempts=2, base_delay_s=0.0)) as http:
        with pytest.raises(TransportError, match=r"src: timeout after 0.1s"):
            await http.get_json("src", f"{base}/slow")
    assert s.hits["/slow"] == 2


async def test_connection_refused_is_transport_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client() as http:
        with pytest.raises(TransportError) as ei:
            await http.get_json("src", f"http://127.0.0.1:{port}/x?api_key=SECRET")
    assert "SECRET" not in str(ei.value)
    assert not isinstance(ei.value, RateLimited)


async def test_body_size_cap(api: tuple[Scripted, str]) -> None:
    s, base = api
    s.on("/big", (200, "[" + "1," * 5000 + "1]", {}))
    async with client(max_body_bytes=1000) as http:
        with pytest.raises(MalformedResponse, match="larger than"):
            await http.get_json("src", f"{base}/big")


async def test_rate_limit_layer_token_bucket() -> None:
    now = [0.0]
    waits: list[float] = []

    async def fake_sleep(d: float) -> None:
        waits.append(d)
        now[0] += d

    async def send(req: Request) -> Response:
        return Response(200, {}, b"{}", req.url)

    layer = rate_limit_layer(
        {"a": RateLimit(rate_per_s=2.0, burst=2)}, clock=lambda: now[0], sleep=fake_sleep
    )(send)
    req = Request(source="a", method="GET", url="http://x")
    for _ in range(4):
        await layer(req)
    assert waits == [0.5, 0.5]  # burst of 2, then one every 0.5 s
    other = Request(source="b", method="GET", url="http://x")
    await layer(other)  # unlimited source
    assert len(waits) == 2


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


def test_redact() -> None:
    url = "https://api.stlouisfed.org/fred/series/observations?series_id=X&api_key=abc123&x=1"
    assert "abc123" not in redact(url)
    assert "series_id=X" in redact(url)
    assert redact("registrationkey=zz&apikey=yy") == "registrationkey=***&apikey=***"
    assert redact("the key is hunter2", ["hunter2"]) == "the key is ***"


def test_http_status_error_is_source_error() -> None:
    e = HttpStatusError("s", "m", 418, "body")
    assert isinstance(e, SourceError) and e.status == 418
