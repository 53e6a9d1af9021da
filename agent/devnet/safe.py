"""Executing Safe transactions on the devnet, the way a 1-of-N owner does on chain.

With threshold 1, an owner that sends ``execTransaction`` itself can sign with a
*pre-validated* signature: ``r = owner address, s = 0, v = 1`` (Safe ``checkSignatures``
accepts it when ``msg.sender == owner``), so no private key is needed.
Batches go through ``MultiSendCallOnly`` by DELEGATECALL (operation 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils.address import to_canonical_address
from web3.contract import Contract
from web3.types import TxReceipt

from agent.devnet.artifacts import npm_artifact
from agent.devnet.chain import Chain

ZERO = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class Call:
    to: str
    data: bytes
    value: int = 0


def encode(contract: Contract, fn: str, *args: object) -> bytes:
    return bytes.fromhex(contract.encode_abi(fn, args=list(args))[2:])


def pack_multisend(calls: Sequence[Call]) -> bytes:
    """``operation(1) ‖ to(20) ‖ value(32) ‖ len(32) ‖ data`` per call; MultiSendCallOnly
    accepts only operation 0 (call)."""
    out = b""
    for c in calls:
        out += (
            b"\x00"
            + to_canonical_address(c.to)
            + c.value.to_bytes(32, "big")
            + len(c.data).to_bytes(32, "big")
            + c.data
        )
    return out


def prevalidated_signature(owner: str) -> bytes:
    return bytes(12) + to_canonical_address(owner) + bytes(32) + b"\x01"


def exec_transaction(
    chain: Chain,
    safe: str,
    owner: str,
    to: str,
    data: bytes,
    *,
    value: int = 0,
    operation: int = 0,
) -> TxReceipt:
    """One ``execTransaction`` sent by ``owner``. ``safeTxGas = gasPrice = 0``, so the Safe
    reverts (GS013) when the inner call fails instead of silently succeeding."""
    safe_c = chain.at(safe, npm_artifact("Safe"))
    return chain.send(
        safe_c,
        "execTransaction",
        to,
        value,
        data,
        operation,
        0,
        0,
        0,
        ZERO,
        ZERO,
        prevalidated_signature(owner),
        sender=owner,
    )


def exec_batch(
    chain: Chain, safe: str, owner: str, multisend_call_only: str, calls: Sequence[Call]
) -> TxReceipt:
    """Execute ``calls`` atomically from the Safe via a MultiSendCallOnly delegatecall."""
    ms = chain.at(multisend_call_only, npm_artifact("MultiSendCallOnly"))
    data = encode(ms, "multiSend", pack_multisend(calls))
    return exec_transaction(chain, safe, owner, multisend_call_only, data, operation=1)
