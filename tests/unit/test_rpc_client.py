"""The JSON-RPC client against a real local HTTP server (aiohttp), shaped like provider errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.core.anvil import free_port
from agent.core.errors import (
    ExecutionReverted,
    MalformedResponse,
    RateLimited,
    RpcError,
    TransportError,
    WrongChain,
)
from agent.core.metrics import METRICS
from agent.core.rpc import RetryPolicy, RpcClient, redact_url

Handler = Callable[[web.Request], web.StreamResponse]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[list[web.Response]], str]]:
    servers: list[TestServer] = []

    async def start(responses: list[Callable[[], web.Response]]) -> str:
        # Factories: an aiohttp Response object can be sent only once.
        queue = list(responses)

        async def handler(request: web.Request) -> web.Response:
            await request.read()
            make = queue.pop(0) if len(queue) > 1 else queue[0]
            return make()

        app = web.Application()
        app.router.add_post("/", handler)
        srv = TestServer(app, host="127.0.0.1")
        await srv.start_server()
        servers.append(srv)
        return str(srv.make_url("/"))

    yield start  # type: ignore[misc]
    for s in servers:
        await s.close()


def ok(result: object) -> Callable[[], web.Response]:
    return lambda: web.json_response({"jsonrpc": "2.0", "id": 1, "result": result})


FAST = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.01)


async def test_chain_id_and_wrong_chain(serve: Callable[..., object]) -> None:
    url = await serve([ok("0x1")])  # type: ignore[misc]
    async with RpcClient(url, source="rpc:test", retry=FAST) as rpc:
        assert await rpc.chain_id() == 1
        with pytest.raises(WrongChain, match="chain 1, configuration expects 31337"):
            await rpc.ensure_chain(31337)


async def test_revert_is_translated_with_data(serve: Callable[..., object]) -> None:
    # Shape of a real provider answer (samples: eth_call execution reverted with Error(string)).
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": 3, "message": "execution reverted: nope", "data": "0x08c379a0"},
    }
    url = await serve([lambda: web.json_response(body)])  # type: ignore[misc]
    async with RpcClient(url, retry=FAST) as rpc:
        with pytest.raises(ExecutionReverted) as exc:
            await rpc.request("eth_call", [{}, "latest"])
    assert exc.value.data == "0x08c379a0"


async def test_connection_refused_names_the_source() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with RpcClient(url, source="rpc:devnet", retry=FAST) as rpc:
        with pytest.raises(TransportError, match=r"rpc:devnet .*cannot connect"):
            await rpc.chain_id()


def test_redact_url_hides_keys() -> None:
    assert "abcdef0123456789abcdef" not in redact_url(
        "https://eth.example/v2/abcdef0123456789abcdef"
    )
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert "k=1" not in redact_url("https://x.example/rpc?k=1")


async def test_too_many_results_is_an_rpc_error_not_a_rate_limit(
    serve: Callable[..., object],
) -> None:
    # Infura's answer to an oversized eth_getLogs shares -32005 with its rate limit.
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32005, "message": "query returned more than 10000 results"},
    }
    url = await serve([lambda: web.json_response(body)])  # type: ignore[misc]
    METRICS.reset()
    async with RpcClient(url, source="rpc:z", retry=FAST) as rpc:
        with pytest.raises(RpcError, match="more than 10000 results") as exc:
            await rpc.request("eth_getLogs", [{}])
    assert not isinstance(exc.value, RateLimited)
    assert METRICS.sources["rpc:z"].requests == 1  # not retried


async def test_batch_answers_in_call_order_with_errors_as_values(
    serve: Callable[..., object],
) -> None:
    """One HTTP request for several calls; answers matched by id (a server may reorder them),
    a call's JSON-RPC error returned in its place (the caller decides), a reply that is not a
    batch refused."""

    def batch_reply() -> web.Response:
        return web.json_response(
            [
                {"jsonrpc": "2.0", "id": 2, "result": "0x2"},
                {"jsonrpc": "2.0", "id": 0, "result": "0x0"},
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "backend gone"}},
            ]
        )

    url = await serve([batch_reply, ok("0x1")])  # type: ignore[misc]
    async with RpcClient(url, source="fork", retry=FAST) as rpc:
        calls = [("eth_getBalance", ["0x01", "latest"]), ("eth_getCode", ["0x02", "latest"])]
        calls.append(("eth_getStorageAt", ["0x03", "0x0", "latest"]))
        out = await rpc.batch(calls)
        assert out[0] == "0x0" and out[2] == "0x2"
        assert isinstance(out[1], RpcError) and not isinstance(out[1], ExecutionReverted)
        assert (out[1].code, out[1].rpc_message) == (-32000, "backend gone")
        assert await rpc.batch([]) == []
        with pytest.raises(MalformedResponse, match="batch of 3"):
            await rpc.batch(calls)  # the server now answers a single object
