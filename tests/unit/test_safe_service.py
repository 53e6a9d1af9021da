"""Safe Transaction Service proposal against a local aiohttp server shaped like the real
endpoint: it recomputes the safeTxHash itself (eth_account's EIP-712 encoder, not ours), checks
the signer, and answers 201 (empty body) or the 422 bodies the real service sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak
from pydantic import SecretStr, ValidationError

from agent.core.errors import ConfigError, SourceError
from agent.core.http import HttpClient, RetryPolicy
from agent.planner.safe import SafeTx
from agent.sinks.config import SafeServiceConfig
from agent.sinks.safe_service import describe_service_error, propose, safe_tx_hash

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
DELEGATE_KEY = "0x" + "4c" * 32
DELEGATE = Account.from_key(DELEGATE_KEY).address
API_KEY = "sk_test_0123456789abcdef0123456789"
SAFE = to_checksum_address("0x5afe3855358e112b5647b952709e6165e1c1eeee")
ZERO = "0x0000000000000000000000000000000000000000"
ST = SafeTx(SAFE, "0x40A2aCCbd92BCA938b02010E17A5b8929b49130D", 0, "0x8d80ff0a" + "00" * 64, 1)


def reference_hash(body: dict[str, Any], chain_id: int) -> bytes:
    """The service's view: EIP-712 of the posted fields, via eth_account's typed-data encoder."""
    msg = encode_typed_data(full_message={
        "types": {
            "EIP712Domain": [{"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "SafeTx": [{"name": n, "type": t} for n, t in [
                ("to", "address"), ("value", "uint256"), ("data", "bytes"), ("operation", "uint8"),
                ("safeTxGas", "uint256"), ("baseGas", "uint256"), ("gasPrice", "uint256"),
                ("gasToken", "address"), ("refundReceiver", "address"), ("nonce", "uint256")]],
        },
        "primaryType": "SafeTx",
        "domain": {"chainId": chain_id, "verifyingContract": body["safe"]},
        "message": {
            "to": body["to"], "value": int(body["value"]), "data": bytes.fromhex((body["data"] or "0x")[2:]),
            "operation": body["operation"], "safeTxGas": int(body["safeTxGas"]),
            "baseGas": int(body["baseGas"]), "gasPrice": int(body["gasPrice"]),
            "gasToken": body["gasToken"], "refundReceiver": body["refundReceiver"],
            "nonce": int(body["nonce"]),
        },
    })  # fmt: skip
    return b"\x19" + msg.version + msg.header + msg.body


class FakeService:
    def __init__(self) -> None:
        self.chain_id = 1
        self.owners = ["0x757280Bd46fC5B1C8b85628E800c443525Afc09b"]
        self.delegates = {DELEGATE}
        self.force_body: tuple[int, str] | None = None
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        addr = request.match_info["address"]
        body = await request.json()
        self.received.append((request.path, dict(request.headers), body))
        if not is_checksum_address(addr):
            return web.json_response({"code": 1, "message": "Checksum address validation failed",
                                      "arguments": [addr]}, status=422)  # fmt: skip
        if self.force_body is not None:
            return web.Response(status=self.force_body[0], text=self.force_body[1],
                                content_type="application/json")  # fmt: skip
        if body.get("signature") is None:
            return web.json_response({"signature": ["This field may not be null."]}, status=422)
        mine = keccak(reference_hash(body, self.chain_id))
        if "0x" + mine.hex() != body["contractTransactionHash"]:
            return web.json_response({"nonFieldErrors": [
                f"Contract-transaction-hash=0x{mine.hex()} does not match provided "
                f"contract-tx-hash={body['contractTransactionHash']}"]}, status=422)  # fmt: skip
        signer = Account._recover_hash(mine, signature=bytes.fromhex(body["signature"][2:]))
        if signer != body["sender"]:
            return web.json_response(
                {"nonFieldErrors": [f"Signer={signer} is not an owner or delegate."]}, status=422
            )
        if signer not in self.owners and signer not in self.delegates:
            return web.json_response({"nonFieldErrors": [
                f"Sender={signer} is not an owner or delegate. Current owners={self.owners!r}. "
                f"Delegates=set()"]}, status=422)  # fmt: skip
        return web.Response(status=201)  # success: empty body


@pytest.fixture
async def service() -> AsyncIterator[tuple[FakeService, str]]:
    svc = FakeService()
    app = web.Application()
    app.router.add_post("/tx-service/eth/api/v1/safes/{address}/multisig-transactions/", svc.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield svc, str(server.make_url("/tx-service/eth"))
    finally:
        await server.close()


def cfg(base: str, **kw: Any) -> SafeServiceConfig:
    return SafeServiceConfig(enabled=True, base_url=base, api_key=SecretStr(API_KEY),
                             delegate_key=SecretStr(DELEGATE_KEY), **kw)  # fmt: skip


async def test_propose_success(service: tuple[FakeService, str]) -> None:
    svc, base = service
    async with HttpClient(retry=RetryPolicy(attempts=1)) as http:
        p = await propose(http, cfg(base), ST, chain_id=1, nonce=7)
    path, headers, body = svc.received[0]
    assert path == f"/tx-service/eth/api/v1/safes/{SAFE}/multisig-transactions/"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert set(body) == {"safe", "to", "value", "data", "operation", "safeTxGas", "baseGas",
                         "gasPrice", "gasToken", "refundReceiver", "nonce",
                         "contractTransactionHash", "sender", "signature", "origin"}  # fmt: skip
    assert body["operation"] == 1 and body["nonce"] == 7 and body["value"] == "0"
    assert body["gasToken"] == ZERO and body["sender"] == DELEGATE
    assert p.safe_tx_hash == body["contractTransactionHash"]
    assert p.safe_tx_hash == "0x" + safe_tx_hash(ST, chain_id=1, nonce=7).hex()
    assert API_KEY not in p.url


async def test_contract_tx_hash_mismatch(service: tuple[FakeService, str]) -> None:
    svc, base = service
    svc.chain_id = 11155111  # the service is on another chain than we signed for
    async with HttpClient(retry=RetryPolicy(attempts=1)) as http:
        with pytest.raises(SourceError) as ei:
            await propose(http, cfg(base), ST, chain_id=1, nonce=7)
    msg = str(ei.value)
    assert msg.startswith("safe-tx-service: rejected the proposal for Safe " + SAFE + " nonce 7")
    assert "HTTP 422: Contract-transaction-hash=0x" in msg and "does not match provided" in msg
    assert "hint: the service hashed the transaction differently" in msg
    assert "\n" not in msg and API_KEY not in msg


async def test_sender_not_owner_or_delegate(service: tuple[FakeService, str]) -> None:
    svc, base = service
    svc.delegates = set()
    async with HttpClient(retry=RetryPolicy(attempts=1)) as http:
        with pytest.raises(SourceError, match=r"Sender=0x[0-9a-fA-F]{40} is not an owner or delegate.*"
                           r"hint: register the key's address as a delegate"):  # fmt: skip
            await propose(http, cfg(base), ST, chain_id=1, nonce=0)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("safe_tx_service_post_multisig_422_sender_not_owner_or_delegate.json",
         "HTTP 422: Sender=0x5E69fb460c9950F5AE90DafFc4C4F32EcafaCaA5 is not an owner or delegate."),
        ("safe_tx_service_post_multisig_422_signer_not_owner_or_delegate.json",
         "HTTP 422: Signer=0x309835815F6033b5ef843E3346AF53cF343F920e is not an owner or delegate."),
        ("safe_tx_service_post_multisig_422_signature_null.json",
         "HTTP 422: signature: This field may not be null. (hint: a required field was empty)"),
    ],
)  # fmt: skip
async def test_real_422_bodies(
    service: tuple[FakeService, str], sample: str, expected: str
) -> None:
    path = SAMPLES / sample
    if not path.exists():
        pytest.skip(f"{path} not available")
    svc, base = service
    svc.force_body = (422, path.read_text(encoding="utf-8"))
    async with HttpClient(retry=RetryPolicy(attempts=1)) as http:
        with pytest.raises(SourceError) as ei:
            await propose(http, cfg(base), ST, chain_id=1, nonce=3)
    assert expected in str(ei.value)
    assert "\n" not in str(ei.value)


def test_describe_node_inspect_sample_text() -> None:
    path = SAMPLES / "safe_tx_service_post_multisig_422_contract_tx_hash_mismatch_node_inspect.txt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    # Not JSON (Node util.inspect): we still produce one bounded line with the hint.
    line = describe_service_error(422, path.read_text(encoding="utf-8"))
    assert "\n" not in line and "does not match provided contract-tx-hash" in line
    assert "hint: the service hashed" in line
    code50 = json.dumps(
        {"code": 50, "message": "Cannot get Safe info from blockchain", "arguments": [SAFE]}
    )
    assert (
        describe_service_error(422, code50)
        == "HTTP 422: code 50: Cannot get Safe info from blockchain"
    )


async def test_off_and_misconfigured() -> None:
    async with HttpClient() as http:
        with pytest.raises(ConfigError, match="enabled is false"):
            await propose(http, SafeServiceConfig(), ST, chain_id=1, nonce=0)
        bad = SafeServiceConfig(enabled=True, delegate_key=SecretStr("0xnot-a-key-but-secret"))
        with pytest.raises(ConfigError, match="not a valid 32-byte hex private key") as ei:
            await propose(http, bad, ST, chain_id=1, nonce=0)
        assert "not-a-key-but-secret" not in str(ei.value)
    with pytest.raises(ValidationError, match=r"requires safe_service\.delegate_key"):
        SafeServiceConfig(enabled=True)
