"""A planned transaction: exactly what will be signed, plus its decoded form for review."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.core.abi import DecodedCall, load_abi


@dataclass(frozen=True)
class PlannedTx:
    to: str
    value: int
    data: str  # 0x-hex calldata
    decoded: DecodedCall
    human: str  # one line in human units, e.g. "supply 1.25 WETH to Aave V3 for 0xSafe"

    def as_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "value": str(self.value),
            "data": self.data,
            "call": {
                "contract": self.decoded.contract,
                "method": self.decoded.method,
                "args": _jsonable(self.decoded.args),
            },
            "human": self.human,
        }


def call_tx(contract: str, to: str, fn: str, *args: Any, human: str, value: int = 0) -> PlannedTx:
    """Encode with the ABI in ``contracts_abi/`` and decode it back, so what the reviewer
    reads is derived from the bytes that will be signed, not from our intentions."""
    abi = load_abi(contract)
    data = abi.encode(fn, *args)
    decoded = abi.decode_call(data)
    assert decoded is not None  # we just encoded it with this ABI
    return PlannedTx(to=to, value=value, data="0x" + data.hex(), decoded=decoded, human=human)


def approve_if_short(
    token: str, spender: str, amount: int, allowance: int, *, human: str
) -> list[PlannedTx]:
    """An ERC-20 ``approve(spender, amount)`` only when the current allowance is short."""
    if allowance >= amount:
        return []
    return [call_tx("ERC20", token, "approve", spender, amount, human=human)]


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # uint256 does not fit a JSON number safely
    return v
