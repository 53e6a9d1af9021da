"""Contract ABIs from ``contracts_abi/`` (copied from the pinned protocol packages) and the
encoding/decoding the agent needs: calldata, return values, decoded calls for review,
events and revert reasons."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import collapse_if_tuple
from eth_utils.abi import event_abi_to_log_topic as _event_topic
from eth_utils.abi import function_abi_to_4byte_selector as _selector
from eth_utils.address import to_checksum_address

from agent.core.errors import ConfigError

ABI_DIR = Path(
    os.environ.get("HEDGE_AGENT_ABI_DIR") or Path(__file__).resolve().parents[2] / "contracts_abi"
)

_PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to zero-initialised function",
}
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")


def function_abi_to_4byte_selector(item: dict[str, Any]) -> bytes:
    return bytes(_selector(cast(Any, item)))


def event_abi_to_log_topic(item: dict[str, Any]) -> bytes:
    return bytes(_event_topic(cast(Any, item)))


def _types(params: list[dict[str, Any]]) -> list[str]:
    return [collapse_if_tuple(p) for p in params]


def _normalise(value: Any, param: dict[str, Any]) -> Any:
    """Make decoded values readable and JSON-friendly: checksummed addresses, hex bytes,
    named struct fields."""
    typ = str(param["type"])
    if typ.endswith("]"):
        inner = dict(param, type=typ[: typ.rindex("[")])
        return [_normalise(v, inner) for v in value]
    if typ == "tuple":
        return {
            c["name"] or str(i): _normalise(v, c)
            for i, (c, v) in enumerate(zip(param["components"], value, strict=True))
        }
    if typ == "address":
        return to_checksum_address(value)
    if typ.startswith("bytes"):
        return "0x" + bytes(value).hex()
    return value


@dataclass(frozen=True)
class DecodedCall:
    contract: str
    method: str
    args: dict[str, Any]

    def signature(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"{self.contract}.{self.method}({inner})"


class ContractAbi:
    def __init__(self, name: str, abi: list[dict[str, Any]]) -> None:
        self.name = name
        self.abi = abi
        self.functions: dict[str, dict[str, Any]] = {}
        self.by_selector: dict[bytes, dict[str, Any]] = {}
        self.events: dict[bytes, dict[str, Any]] = {}
        self.errors: dict[bytes, dict[str, Any]] = {}
        for item in abi:
            kind = item.get("type")
            if kind == "function":
                # First overload wins by name; every overload is reachable by selector.
                self.functions.setdefault(item["name"], item)
                self.by_selector[function_abi_to_4byte_selector(item)] = item
            elif kind == "event":
                self.events[event_abi_to_log_topic(item)] = item
            elif kind == "error":
                self.errors[function_abi_to_4byte_selector(item)] = item

    def fn(self, name: str) -> dict[str, Any]:
        try:
            return self.functions[name]
        except KeyError:
            raise ConfigError(f"ABI {self.name} has no function {name!r}") from None

    def selector(self, name: str) -> bytes:
        return function_abi_to_4byte_selector(self.fn(name))

    def encode(self, name: str, *args: Any) -> bytes:
        item = self.fn(name)
        return self.selector(name) + abi_encode(_types(item["inputs"]), list(args))

    def encode_hex(self, name: str, *args: Any) -> str:
        return "0x" + self.encode(name, *args).hex()

    def decode_output(self, name: str, data: bytes) -> tuple[Any, ...]:
        item = self.fn(name)
        return tuple(abi_decode(_types(item["outputs"]), data))

    def decode_call(self, data: bytes) -> DecodedCall | None:
        item = self.by_selector.get(data[:4])
        if item is None:
            return None
        try:
            values = abi_decode(_types(item["inputs"]), data[4:])
        except DecodingError:
            return None
        args = {
            (p["name"] or f"arg{i}"): _normalise(v, p)
            for i, (p, v) in enumerate(zip(item["inputs"], values, strict=True))
        }
        return DecodedCall(self.name, item["name"], args)

    def decode_event(self, topics: list[bytes], data: bytes) -> DecodedCall | None:
        if not topics:
            return None
        item = self.events.get(topics[0])
        if item is None:
            return None
        indexed = [p for p in item["inputs"] if p.get("indexed")]
        if len(topics) - 1 != len(indexed):
            # Same signature, other indexing (Safe's ``EnabledModule(address indexed)`` and a
            # Zodiac module's ``EnabledModule(address)``): not this ABI's event.
            return None
        plain = [p for p in item["inputs"] if not p.get("indexed")]
        try:
            plain_values = abi_decode(_types(plain), data)
            indexed_values = [
                abi_decode([collapse_if_tuple(p)], t)[0] if not _is_dynamic(p) else "0x" + t.hex()
                for p, t in zip(indexed, topics[1:], strict=False)
            ]
        except DecodingError:
            return None
        args: dict[str, Any] = {}
        it_idx = iter(indexed_values)
        it_plain = iter(plain_values)
        for p in item["inputs"]:
            v = next(it_idx) if p.get("indexed") else next(it_plain)
            args[p["name"]] = _normalise(v, p) if not (p.get("indexed") and _is_dynamic(p)) else v
        return DecodedCall(self.name, item["name"], args)


def _is_dynamic(p: dict[str, Any]) -> bool:
    t = str(p["type"])
    return t in ("string", "bytes") or t.endswith("]") or t == "tuple"


@cache
def load_abi(name: str) -> ContractAbi:
    path = ABI_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"ABI file missing: {path}") from None
    except ValueError as exc:
        raise ConfigError(f"ABI file {path} is not valid JSON: {exc}") from None
    abi = raw["abi"] if isinstance(raw, dict) else raw
    return ContractAbi(name, abi)


def decode_revert(data: bytes, abis: list[ContractAbi] | None = None) -> str:
    """Human-readable revert reason: ``Error(string)``, ``Panic(uint256)`` or a custom error
    from one of our ABIs; otherwise the raw selector."""
    if not data:
        return "reverted without reason"
    sel, body = data[:4], data[4:]
    try:
        if sel == ERROR_STRING_SELECTOR:
            return f"Error({abi_decode(['string'], body)[0]!r})"
        if sel == PANIC_SELECTOR:
            code = int(abi_decode(["uint256"], body)[0])
            return f"Panic(0x{code:02x}: {_PANIC_CODES.get(code, 'unknown panic')})"
    except DecodingError:
        return f"unreadable revert data 0x{data.hex()}"
    for abi in abis or []:
        item = abi.errors.get(sel)
        if item is not None:
            try:
                values = abi_decode(_types(item["inputs"]), body)
            except DecodingError:
                break
            inner = ", ".join(
                f"{p['name']}={_normalise(v, p)}"
                for p, v in zip(item["inputs"], values, strict=True)
            )
            return f"{abi.name}.{item['name']}({inner})"
    return f"custom error 0x{sel.hex()} (data 0x{body.hex()})"


def revert_data_from_rpc(data: object) -> bytes | None:
    """Extract revert bytes from a JSON-RPC error's ``data`` (string or ``{"data": ...}``)."""
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None
