"""The one retry layer (``agent.core.retry``), tested once for both transports that use it:
the HTTP client (collectors, Safe Transaction Service) and the JSON-RPC client, each against a
real local aiohttp server answering as providers do (429 with Retry-After, a gateway's HTML 502,
a body cut short, answers that must not be retried)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.core.anvil import free_port
from agent.core.errors import (
    HttpStatusError,
    MalformedResponse,
    RateLimited,
    RpcError,
    SourceError,
    TransportError,
)
from agent.core.http import HttpClient
from agent.core.metrics import METRICS
from agent.core.retry import RetryPolicy
from agent.core.rpc import RpcClient

Reply = tuple[int, str, dict[str, str]]
POLICY = RetryPolicy(attempts=4, base_delay_s=1.0, max_delay_s=3.0, max_retry_after_s=30.0)
GATEWAY_502 = "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"


class Server:
    """Scripted replies, consumed in order (the last one repeats); counts hits."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        status, body, headers = self.script[min(self.hits, len(self.script) - 1)]
        self.hits += 1
        ctype = headers.pop("Content-Type", "application/json")
        return web.Response(status=status, text=body, headers={**headers, "Content-Type": ctype})


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, d: float) -> None:
        self.calls.append(d)


@dataclass
class Transport:
    """One client kind: how it calls, what a good answer looks like, what it returns."""

    name: str
    ok_body: str
    ok_value: Any
    call: Callable[[str, Sleeps], Awaitable[Any]]


async def _http_call(url: str, sleeps: Sleeps) -> Any:
    async with HttpClient(retry=POLICY, sleep=sleeps, rng=random.Random(7)) as http:
        return await http.get_json("api", url)


async def _rpc_call(url: str, sleeps: Sleeps) -> Any:
    async with RpcClient(
        url, source="rpc:t", retry=POLICY, sleep=sleeps, rng=random.Random(7)
    ) as rpc:
        return await rpc.request("eth_blockNumber")


TRANSPORTS = [
    Transport("http", '{"tvl": 1.5}', {"tvl": 1.5}, _http_call),
    Transport("rpc", '{"jsonrpc": "2.0", "id": 1, "result": "0x10"}', "0x10", _rpc_call),
]


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    s = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield s, str(srv.make_url("/v1"))
    await srv.close()


@pytest.fixture(params=TRANSPORTS, ids=lambda t: t.name)
def transport(request: pytest.FixtureRequest) -> Transport:
    t: Transport = request.param
    return t


async def test_retry_after_seconds_is_waited_in_full(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [(429, "slow down", {"Retry-After": "2"}), (200, transport.ok_body, {})]
    sleeps = Sleeps()
    assert await transport.call(url, sleeps) == transport.ok_value
    # the first backoff would be 0.5..1 s: the server's 2 s wins, never shortened
    assert sleeps.calls == [2.0] and s.hits == 2


async def test_retry_after_as_an_http_date(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    s.script = [(429, "slow down", {"Retry-After": later}), (200, transport.ok_body, {})]
    sleeps = Sleeps()
    assert await transport.call(url, sleeps) == transport.ok_value
    assert len(sleeps.calls) == 1 and 15 <= sleeps.calls[0] <= 20


async def test_retry_after_beyond_the_cap_is_raised_not_shortened(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [(429, "slow", {"Retry-After": "600"})]
    sleeps = Sleeps()
    with pytest.raises(RateLimited) as ei:
        await transport.call(url, sleeps)
    assert ei.value.retry_after == 600
    assert sleeps.calls == [] and s.hits == 1


async def test_a_gateway_html_502_is_retried(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [(502, GATEWAY_502, {"Content-Type": "text/html"}), (200, transport.ok_body, {})]
    sleeps = Sleeps()
    assert await transport.call(url, sleeps) == transport.ok_value
    assert s.hits == 2 and len(sleeps.calls) == 1 and 0.5 <= sleeps.calls[0] <= 1.0


async def test_backoff_grows_with_equal_jitter_then_gives_up(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [(503, GATEWAY_502.replace("502", "503"), {"Content-Type": "text/html"})]
    sleeps = Sleeps()
    with pytest.raises(HttpStatusError) as ei:
        await transport.call(url, sleeps)
    assert ei.value.status == 503 and "\n" not in str(ei.value)
    assert s.hits == POLICY.attempts
    # d = 1, 2, 3 (capped at max_delay_s); each wait is in [d/2, d]
    assert len(sleeps.calls) == 3
    for wait, d in zip(sleeps.calls, (1.0, 2.0, 3.0), strict=True):
        assert d / 2 <= wait <= d


async def test_a_body_cut_short_is_retried(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [(200, transport.ok_body[:-7], {}), (200, transport.ok_body, {})]
    sleeps = Sleeps()
    assert await transport.call(url, sleeps) == transport.ok_value
    assert s.hits == 2


async def test_a_body_cut_short_every_time_ends_malformed(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [(200, transport.ok_body[:-7], {})]
    with pytest.raises(MalformedResponse, match="JSON cut short") as ei:
        await transport.call(url, Sleeps())
    assert ei.value.truncated and s.hits == POLICY.attempts


async def test_an_html_page_with_200_is_an_answer_not_retried(
    server: tuple[Server, str], transport: Transport
) -> None:
    s, url = server
    s.script = [
        (200, "<!DOCTYPE html><title>Just a moment...</title>", {"Content-Type": "text/html"})
    ]
    with pytest.raises(MalformedResponse) as ei:
        await transport.call(url, Sleeps())
    assert not ei.value.truncated and s.hits == 1


async def test_a_4xx_is_an_answer_not_retried(server: tuple[Server, str]) -> None:
    s, url = server
    s.script = [(404, '{"error": "no such series"}', {})]
    sleeps = Sleeps()
    with pytest.raises(HttpStatusError) as ei:
        await _http_call(url, sleeps)
    assert ei.value.status == 404 and s.hits == 1 and sleeps.calls == []


async def test_a_json_rpc_error_is_an_answer_not_retried(server: tuple[Server, str]) -> None:
    s, url = server
    s.script = [
        (200, '{"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}}', {})
    ]
    METRICS.reset()
    with pytest.raises(RpcError, match="-32601"):
        await _rpc_call(url, Sleeps())
    assert s.hits == 1 and METRICS.sources["rpc:t"].requests == 1


@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: t.name)
async def test_connection_refused_is_retried_then_raised(transport: Transport) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    sleeps = Sleeps()
    with pytest.raises(TransportError) as ei:
        await transport.call(url, sleeps)
    assert isinstance(ei.value, SourceError) and len(sleeps.calls) == POLICY.attempts - 1
