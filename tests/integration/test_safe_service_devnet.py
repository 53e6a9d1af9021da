"""The proposal path's Safe Transaction Service half against the devnet Safe on a real anvil and a
local service shaped like the v2 one: the nonce comes after the service's queue, the fork
simulation executes at that nonce (the Safe's own ExecutionSuccess carries the safeTxHash the
service queues), and the owner's delegate signature made by Foundry's ``cast`` is accepted."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from eth_account import Account
from fake_safe_service import FakeSafeService, safe_tx_hash_reference
from pydantic import SecretStr

from agent.core.abi import load_abi
from agent.core.anvil import find_tool
from agent.core.http import HttpClient, RetryPolicy
from agent.core.rpc import RpcClient
from agent.core.rpc_pool import RpcPool
from agent.devnet.artifacts import npm_artifact
from agent.devnet.chain import Chain
from agent.planner.safe import SafeTx
from agent.simulator.fork import ForkSimulator
from agent.sinks.config import SafeServiceConfig
from agent.sinks.safe_delegate import (
    DelegateRegistration,
    check_signature,
    delegate_typed_data,
    totp,
)
from agent.sinks.safe_service import SafeServiceSink, read_safe_nonce

pytestmark = pytest.mark.integration

DELEGATE_KEY = "0x" + "4c" * 32
DELEGATE = Account.from_key(DELEGATE_KEY).address
API_KEY = "sk_devnet_0123456789abcdef"
# anvil's default mnemonic, account 1: a devnet Safe owner (see test_safe_hash_devnet.py).
OWNER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


@pytest.fixture
async def service(devnet: dict[str, Any]) -> AsyncIterator[FakeSafeService]:
    svc = FakeSafeService(chain_id=31337, owners=list(devnet["safe"]["owners"]),
                          delegates={DELEGATE}, api_key=API_KEY)  # fmt: skip
    server = TestServer(svc.app(), host="127.0.0.1")
    await server.start_server()
    svc.base = str(server.make_url("/tx-service/eth"))
    try:
        yield svc
    finally:
        await server.close()


async def test_simulated_and_queued_at_the_next_free_nonce(
    devnet: dict[str, Any],
    devnet_url: str,
    devnet_chain: Chain,
    service: FakeSafeService,
    fork_upstream: Callable[..., RpcPool],
) -> None:
    safe = devnet["safe"]["address"]
    usdc = devnet["tokens"]["USDC"]["address"]
    async with RpcClient(devnet_url) as rpc:
        onchain = await read_safe_nonce(rpc, safe)
        block = int(await rpc.request("eth_blockNumber"), 16)
    service.add_pending(safe, onchain)
    service.add_pending(safe, onchain + 1, data="0x01")
    data = load_abi("ERC20").encode_hex("approve", devnet["aave"]["pool"], 12345)
    st = SafeTx(safe=safe, to=usdc, value=0, data=data, operation=0)
    cfg = SafeServiceConfig(enabled=True, base_url=service.base, api_key=SecretStr(API_KEY),
                            delegate_key=SecretStr(DELEGATE_KEY))  # fmt: skip
    sim = ForkSimulator(fork_upstream(devnet_url), pool=devnet["aave"]["pool"])
    try:
        async with HttpClient(retry=RetryPolicy(attempts=1)) as http, RpcClient(devnet_url) as rpc:
            sink = SafeServiceSink(http, cfg, chain_id=31337)
            planned, entry = await sink.reserve_nonce(st, rpc, block)
            res = await sim.simulate_safe(block, planned, safe, "approve")
            sent = await sink.submit(planned, block)
            # A second proposal in the same tick comes after the first...
            other = SafeTx(safe=safe, to=usdc, value=0, operation=0,
                           data=load_abi("ERC20").encode_hex("approve", devnet["aave"]["pool"], 1))  # fmt: skip
            again, entry2 = await sink.reserve_nonce(other, rpc, block)
            # ...and the same transaction again keeps the nonce it is queued at (issue 24).
            same, entry3 = await sink.reserve_nonce(st, rpc, block)
    finally:
        await sim.stop()
    assert entry == {"nonce": onchain + 2, "onchain_nonce": onchain,
                     "queued_nonces": [onchain, onchain + 1]}  # fmt: skip
    assert planned.nonce == onchain + 2 and again.nonce == onchain + 3
    assert entry2["queued_nonces"] == [onchain, onchain + 1, onchain + 2]
    assert same.nonce == onchain + 2 and entry3["already_queued"] == sent["safe_tx_hash"]
    # Queued by the service at that nonce, under the hash it computes itself (eth-account).
    assert sent["queued"] and sent["nonce"] == onchain + 2 and sent["api"] == "v2"
    mine = service.queue(safe)[-1]
    assert mine["nonce"] == onchain + 2 and mine["safeTxHash"] == sent["safe_tx_hash"]
    body = {"safe": safe, "to": usdc, "value": "0", "data": data, "operation": 0,
            "nonce": str(onchain + 2)}  # fmt: skip
    assert sent["safe_tx_hash"] == safe_tx_hash_reference(body, 31337)
    (path, headers, _) = service.posts()[0]
    assert path.endswith(f"/api/v2/safes/{safe}/multisig-transactions/")
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    # The fork executed it at that nonce: the Safe's own event carries the queued hash, and the
    # Safe contract hashes the transaction at that nonce to the same value.
    assert res.success, res.error
    executed = [e for e in res.transactions[0].events if e.method == "ExecutionSuccess"]
    assert [e.args["txHash"] for e in executed] == [sent["safe_tx_hash"]]
    safe_c = devnet_chain.at(safe, npm_artifact("Safe"))
    onchain_hash = devnet_chain.call(
        safe_c, "getTransactionHash", usdc, 0, bytes.fromhex(data[2:]), 0, 0, 0, 0,
        "0x" + "00" * 20, "0x" + "00" * 20, onchain + 2,
    )  # fmt: skip
    assert "0x" + bytes(onchain_hash).hex() == sent["safe_tx_hash"]
    # ... and the devnet itself still has its own nonce (the fork was reverted).
    assert devnet_chain.call(safe_c, "nonce") == onchain


async def test_queue_unreadable_means_not_proposed(devnet: dict[str, Any], devnet_url: str) -> None:
    safe = devnet["safe"]["address"]
    st = SafeTx(safe=safe, to=safe, value=0, data="0x", operation=0)
    cfg = SafeServiceConfig(enabled=True, base_url="http://127.0.0.1:9/tx-service/eth",
                            delegate_key=SecretStr(DELEGATE_KEY))  # fmt: skip
    async with HttpClient(retry=RetryPolicy(attempts=1)) as http, RpcClient(devnet_url) as rpc:
        planned, entry = await SafeServiceSink(http, cfg, chain_id=31337).reserve_nonce(st, rpc, 1)
    assert planned.nonce is None  # simulated at the on-chain nonce, not posted
    assert entry["error"].startswith("not proposed: queue unreadable: safe-tx-service: ")


def test_delegate_signature_from_cast_is_accepted(devnet: dict[str, Any], tmp_path: Path) -> None:
    """Foundry's EIP-712 encoder is a third, independent implementation of the message."""
    cast = find_tool("cast")
    owner = Account.from_key(OWNER_KEY).address
    assert owner in devnet["safe"]["owners"]
    now = int(time.time())
    f = tmp_path / "delegate.json"
    f.write_text(json.dumps(delegate_typed_data(DELEGATE, 31337, totp(now))))
    sig = subprocess.run(
        [cast, "wallet", "sign", "--data", "--from-file", str(f), "--private-key", OWNER_KEY],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    check_signature(DelegateRegistration(devnet["safe"]["address"], DELEGATE, owner, sig, "x"),
                    31337, now)  # fmt: skip
