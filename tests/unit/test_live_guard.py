"""The live-mode guard and the sender's failure paths (against a local JSON-RPC server), with
every log event and message searched for the key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from pydantic import SecretStr
from structlog.testing import capture_logs

from agent.core.errors import AgentError, ConfigError, Halt, MalformedResponse, RpcError
from agent.core.rpc import send_client
from agent.sinks.config import LiveConfig, SinksConfig
from agent.sinks.live import LiveRefused, LiveSender, check_live_allowed

KEY = "0x" + "ab12" * 16
ON = LiveConfig(
    enabled=True, signer_key=SecretStr(KEY), private_rpc_url=SecretStr("https://rpc.flashbots.net")
)


@pytest.mark.parametrize(
    ("cfg", "rpc_chain", "sim", "signer", "exc", "text"),
    [
        (LiveConfig(), 1, True, True, ConfigError, "sinks.live.enabled is false"),
        (ON.model_copy(update={"signer_key": None}), 1, True, True, ConfigError, "no signer configured"),
        (ON, 1, True, False, ConfigError, "no signer configured"),
        (ON.model_copy(update={"private_rpc_url": None}), 1, True, True, ConfigError, "no private RPC configured"),
        (ON, 5, True, True, LiveRefused, "RPC reports chain id 5, configuration expects 1"),
        (ON, 1, False, True, LiveRefused, "simulation failed this tick for transaction(s) 1 of 1"),
        (ON, 1, [True, False, False], True, LiveRefused, "transaction(s) 2, 3 of 3"),
        (ON, 1, [], True, LiveRefused, "no transaction was simulated this tick"),
    ],
)  # fmt: skip
def test_guard_refuses(
    cfg: LiveConfig, rpc_chain: int, sim: Any, signer: bool, exc: type[AgentError], text: str
) -> None:
    with pytest.raises(exc) as ei:
        check_live_allowed(cfg, rpc_chain, 1, sim, signer)
    msg = str(ei.value)
    assert text in msg and msg.startswith("live submission refused: ") and "\n" not in msg
    assert KEY[2:] not in msg
    if exc is LiveRefused:
        assert isinstance(ei.value, Halt)


def test_guard_allows() -> None:
    check_live_allowed(ON, 1, 1, True, True)
    check_live_allowed(ON, 1, 1, [True, True], True)


def test_sinks_config_defaults_and_forbid() -> None:
    s = SinksConfig()
    assert s.live.enabled is False and s.safe_service.enabled is False
    assert s.safe_tx_builder_dir == "var/safe-tx-builder"
    with pytest.raises(ValueError, match="extra"):
        SinksConfig(typo=1)  # type: ignore[call-arg]
    assert KEY not in repr(ON) and KEY not in str(ON.model_dump())


class FakeRpc:
    def __init__(self) -> None:
        self.chain_id = 1
        self.send_answer: dict[str, Any] = {"result": "0x" + "00" * 32}
        self.raw: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        m, rid = body["method"], body["id"]
        result: Any
        if m == "eth_chainId":
            result = hex(self.chain_id)
        elif m == "eth_getTransactionCount":
            result = "0x7"
        elif m == "eth_estimateGas":
            result = hex(100_000)
        elif m == "eth_getBlockByNumber":
            result = {"number": "0x10", "timestamp": "0x1", "baseFeePerGas": hex(10**9)}
        elif m == "eth_maxPriorityFeePerGas":
            result = "0x0"
        elif m == "eth_sendRawTransaction":
            self.raw.append(body["params"][0])
            return web.json_response({"jsonrpc": "2.0", "id": rid, **self.send_answer})
        else:
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "nope"}}
            )
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})


@pytest.fixture
async def rpc() -> AsyncIterator[tuple[FakeRpc, str]]:
    fake = FakeRpc()
    app = web.Application()
    app.router.add_post("/", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield fake, str(server.make_url("/"))
    finally:
        await server.close()


def cfg_for(url: str) -> LiveConfig:
    return LiveConfig(enabled=True, signer_key=SecretStr(KEY), private_rpc_url=SecretStr(url))


async def test_sender_signs_with_min_tip_and_checks_hash(rpc: tuple[FakeRpc, str]) -> None:
    fake, url = rpc
    to = "0x0000000000000000000000000000000000000abc"
    with capture_logs() as events:
        async with send_client(url) as send:
            sender = LiveSender(cfg_for(url), chain_id=1, send_rpc=send)
            with pytest.raises(MalformedResponse, match="eth_sendRawTransaction answered") as ei:
                await sender.send(to, "0x1234")
    raw = fake.raw[0]
    tx = Account.recover_transaction(raw)
    assert tx == Account.from_key(KEY).address
    fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    assert fields["nonce"] == 7 and fields["gas"] == 120_000  # +20% over the estimate
    assert fields["maxPriorityFeePerGas"] == 10**9  # never 0: Protect would not include it
    assert fields["maxFeePerGas"] == 3 * 10**9 and fields["chainId"] == 1
    blob = (json.dumps(events, default=repr) + str(ei.value)).lower()
    assert KEY[2:] not in blob


async def test_sender_refuses_wrong_chain_and_reports_rpc_errors(rpc: tuple[FakeRpc, str]) -> None:
    fake, url = rpc
    fake.chain_id = 5
    async with send_client(url) as send:
        sender = LiveSender(cfg_for(url), chain_id=1, send_rpc=send)
        with pytest.raises(
            LiveRefused, match="private RPC reports chain id 5, configuration expects 1"
        ):
            await sender.send("0x0000000000000000000000000000000000000abc", "0x")
    fake.chain_id = 1
    fake.send_answer = {"error": {"code": -32000, "message": "nonce too low"}}
    async with send_client(url) as send:
        sender = LiveSender(cfg_for(url), chain_id=1, send_rpc=send)
        with pytest.raises(RpcError, match="nonce too low") as ei:
            await sender.send("0x0000000000000000000000000000000000000abc", "0x")
    assert KEY[2:] not in str(ei.value)


def test_bad_key_is_not_echoed() -> None:
    bad = LiveConfig(enabled=True, signer_key=SecretStr("0xdeadbeef-secret-material"),
                     private_rpc_url=SecretStr("http://127.0.0.1:1"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"sinks\.live\.signer_key is not a valid") as ei:
        LiveSender(bad, chain_id=1, send_rpc=send_client("http://127.0.0.1:1"))
    assert "secret-material" not in str(ei.value)
