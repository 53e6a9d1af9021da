"""Our EIP-712 safeTxHash equals the devnet Safe's own ``getTransactionHash``, and a signature
made the way the Transaction Service expects is accepted on chain by ``execTransaction``."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from pydantic import SecretStr

from agent.core.abi import load_abi
from agent.core.rpc import RpcClient
from agent.devnet.artifacts import npm_artifact
from agent.devnet.chain import Chain
from agent.planner.safe import SafeTx
from agent.sinks.live import exec_transaction_calldata
from agent.sinks.safe_service import (
    account_from_key,
    read_safe_nonce,
    safe_tx_hash,
    sign_safe_tx_hash,
)

pytestmark = pytest.mark.integration

# anvil's default mnemonic ("test test ... junk"), accounts 1 and 2: the devnet Safe owners.
ANVIL_KEYS = [
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]


def owner_key(owner: str) -> str:
    for k in ANVIL_KEYS:
        if Account.from_key(k).address == owner:
            return k
    pytest.skip(f"devnet owner {owner} is not one of anvil's default accounts")


@pytest.mark.parametrize(
    "st_args",
    [
        dict(to="multisend", value=0, data="0x8d80ff0a" + "11" * 100, operation=1),
        dict(to="pool", value=12345, data="0x", operation=0, safe_tx_gas=70_000, base_gas=21_000,
             gas_price=3, gas_token="usdc", refund_receiver="pool"),
    ],
)  # fmt: skip
async def test_hash_matches_contract(
    devnet: dict[str, Any], devnet_chain: Chain, st_args: dict[str, Any]
) -> None:
    safe = devnet["safe"]["address"]
    names = {"multisend": devnet["safe"]["multisend_call_only"], "pool": devnet["aave"]["pool"],
             "usdc": devnet["tokens"]["USDC"]["address"]}  # fmt: skip
    args = {
        k: names.get(v, v) if isinstance(v, str) and k != "data" else v for k, v in st_args.items()
    }
    st = SafeTx(safe=safe, **args)
    safe_c = devnet_chain.at(safe, npm_artifact("Safe"))
    async with RpcClient(devnet["rpc_url"]) as rpc:
        nonce = await read_safe_nonce(rpc, safe)
    assert nonce == devnet_chain.call(safe_c, "nonce")
    for n in (nonce, nonce + 5):
        onchain = devnet_chain.call(
            safe_c, "getTransactionHash", st.to, st.value, bytes.fromhex(st.data[2:]), st.operation,
            st.safe_tx_gas, st.base_gas, st.gas_price, st.gas_token, st.refund_receiver, n,
        )  # fmt: skip
        assert safe_tx_hash(st, chain_id=devnet_chain.chain_id(), nonce=n) == bytes(onchain)


async def test_owner_signature_executes(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    """An owner's signature over safeTxHash (what we POST to the service) lets anyone execute."""
    safe, owner = devnet["safe"]["address"], devnet["safe"]["owners"][0]
    signer = account_from_key(SecretStr(owner_key(owner)), "test key")
    usdc = devnet["tokens"]["USDC"]["address"]
    data = load_abi("ERC20").encode_hex("transfer", owner, 1_000_000)
    st = SafeTx(safe=safe, to=usdc, value=0, data=data, operation=0)
    async with RpcClient(devnet["rpc_url"]) as rpc:
        nonce = await read_safe_nonce(rpc, safe)
    sig = sign_safe_tx_hash(signer, safe_tx_hash(st, chain_id=31337, nonce=nonce))
    relayer = devnet["accounts"]["deployer"]  # not an owner
    tx_hash = devnet_chain.w3.eth.send_transaction(
        {"from": relayer, "to": safe, "data": exec_transaction_calldata(st, bytes.fromhex(sig[2:]))}
    )
    assert devnet_chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)["status"] == 1
    safe_c = devnet_chain.at(safe, npm_artifact("Safe"))
    assert devnet_chain.call(safe_c, "nonce") == nonce + 1
