"""Safe batches: pack calls for ``MultiSendCallOnly`` and build the Safe transaction fields
that the owners will sign (and that the simulator executes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_utils.address import to_canonical_address

from agent.core.abi import load_abi
from agent.planner.tx import PlannedTx

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def pack_multisend(txs: Sequence[PlannedTx]) -> bytes:
    """``operation(uint8) ‖ to(20) ‖ value(32) ‖ len(32) ‖ data`` per call (Safe MultiSend)."""
    out = b""
    for tx in txs:
        data = bytes.fromhex(tx.data[2:])
        out += (
            b"\x00"
            + to_canonical_address(tx.to)
            + tx.value.to_bytes(32, "big")
            + len(data).to_bytes(32, "big")
            + data
        )
    return out


@dataclass(frozen=True)
class SafeTx:
    safe: str
    to: str
    value: int
    data: str
    operation: int  # 0 call, 1 delegatecall (MultiSend batches)
    safe_tx_gas: int = 0
    base_gas: int = 0
    gas_price: int = 0
    gas_token: str = ZERO_ADDRESS
    refund_receiver: str = ZERO_ADDRESS
    # The Safe nonce the signers will see (the next free one after the Transaction Service's
    # queue). None: the Safe's current on-chain nonce, as execTransaction uses it.
    nonce: int | None = None


def build_safe_tx(safe: str, multisend_call_only: str, txs: Sequence[PlannedTx]) -> SafeTx:
    if len(txs) == 1:
        tx = txs[0]
        return SafeTx(safe=safe, to=tx.to, value=tx.value, data=tx.data, operation=0)
    data = load_abi("MultiSendCallOnly").encode("multiSend", pack_multisend(txs))
    return SafeTx(safe=safe, to=multisend_call_only, value=0, data="0x" + data.hex(), operation=1)
