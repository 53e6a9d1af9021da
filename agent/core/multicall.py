"""Batch many ``eth_call`` reads into one Multicall3 ``aggregate3`` call.

Every call is ``allowFailure=true``: a failing or undecodable call becomes a ``CallFailure``
in the result instead of failing the whole batch, so one broken feed never hides the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak

from agent.core.abi import ContractAbi, decode_revert
from agent.core.errors import MalformedResponse
from agent.core.rpc import RpcClient

MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
_AGGREGATE3 = keccak(text="aggregate3((address,bool,bytes)[])")[:4]


@dataclass(frozen=True)
class Call:
    """One read: ``abi.fn(*args)`` on ``target``. ``tag`` identifies it in the results."""

    tag: str
    target: str
    abi: ContractAbi
    fn: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class CallFailure:
    tag: str
    reason: str


async def multicall(
    rpc: RpcClient,
    calls: Sequence[Call],
    *,
    block: int | str = "latest",
    address: str = MULTICALL3_ADDRESS,
) -> tuple[dict[str, tuple[Any, ...]], list[CallFailure]]:
    """Run ``calls`` in one ``eth_call``; return decoded outputs by tag and the failures."""
    if not calls:
        return {}, []
    payload = [(c.target, True, c.abi.encode(c.fn, *c.args)) for c in calls]
    data = _AGGREGATE3 + abi_encode(["(address,bool,bytes)[]"], [payload])
    raw = await rpc.eth_call(address, "0x" + data.hex(), block)
    try:
        (results,) = abi_decode(["(bool,bytes)[]"], raw)
    except DecodingError as exc:
        raise MalformedResponse(
            rpc.source,
            f"Multicall3 at {address} returned undecodable data ({exc}); is it deployed?",
        ) from exc
    if len(results) != len(calls):
        raise MalformedResponse(
            rpc.source, f"Multicall3 returned {len(results)} results for {len(calls)} calls"
        )
    out: dict[str, tuple[Any, ...]] = {}
    failures: list[CallFailure] = []
    for call, (ok, ret) in zip(calls, results, strict=True):
        where = f"{call.abi.name}.{call.fn} on {call.target}"
        if not ok:
            failures.append(
                CallFailure(call.tag, f"{where} reverted: {decode_revert(bytes(ret), [call.abi])}")
            )
            continue
        try:
            out[call.tag] = call.abi.decode_output(call.fn, bytes(ret))
        except (DecodingError, OverflowError, ValueError) as exc:
            failures.append(CallFailure(call.tag, f"{where} returned undecodable data: {exc}"))
    return out, failures
