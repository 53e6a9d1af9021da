"""Safe Transaction Builder batch files, one per proposal.

The file is what the Safe{Wallet} Transaction Builder app exports and imports (safe-react-apps
``tx-builder`` ``typings/models.ts``): ``version``, ``chainId`` (string), ``createdAt`` (ms),
``meta`` and ``transactions``. Calls whose ABI we know are written as ``contractMethod`` +
``contractInputsValues`` with ``data: null`` (as the app writes them, so the reviewer sees the
decoded call in the UI); anything else is written as raw ``data``.

``meta.checksum`` is computed as the app's ``lib/checksum.ts`` does::

    keccak256(utf8(serialize({...batch, meta: {...meta, name: null}})))   (checksum removed)

where ``serialize`` sorts object keys (JS ``Array.prototype.sort``: UTF-16 code-unit order) and
emits ``{`` + ``JSON.stringify(keys)`` + each value serialised followed by ``,`` + ``}``; arrays
become ``[a,b]``; primitives are ``JSON.stringify``-ed (``undefined`` → ``null``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from agent.core.abi import load_abi
from agent.core.errors import ConfigError, StoreError

BATCH_VERSION = "1.0"
TX_BUILDER_VERSION = "1.18.2"

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# -- the checksum -----------------------------------------------------------------------------


def _js_number(v: float) -> str:
    """``JSON.stringify`` of a JS number (ECMAScript Number::toString)."""
    if not math.isfinite(v):
        return "null"
    if v == 0:
        return "0"
    sign = "-" if v < 0 else ""
    # Python's repr is the shortest round-tripping decimal, as in JS; only the layout differs.
    d = Decimal(repr(abs(v)))
    digits = "".join(str(x) for x in d.as_tuple().digits).rstrip("0") or "0"
    exp = d.adjusted()  # value = 0.digits... * 10^(exp+1)
    k, n = len(digits), exp + 1
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    mant = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{sign}{mant}e{'+' if e >= 0 else '-'}{abs(e)}"


def _js_string(s: str) -> str:
    """``JSON.stringify`` of a string: like ``json.dumps(ensure_ascii=False)``, and lone
    surrogates escaped as ``\\udxxx`` (well-formed JSON.stringify, ES2019)."""
    out = json.dumps(s, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)


def _js_primitive(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**21 else _js_number(float(v))
    if isinstance(v, float):
        return _js_number(v)
    if isinstance(v, str):
        return _js_string(v)
    raise TypeError(f"cannot serialise {type(v).__name__} for a Transaction Builder checksum")


def _js_key_order(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def serialize(value: Any) -> str:
    """The Transaction Builder's ``serializeJSONObject``."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(serialize(x) for x in value) + "]"
    if isinstance(value, dict):
        keys = sorted((str(k) for k in value), key=_js_key_order)
        acc = "{[" + ",".join(_js_string(k) for k in keys) + "]"
        for k in keys:
            acc += serialize(value[k]) + ","
        return acc + "}"
    return _js_primitive(value)


def batch_checksum(batch: dict[str, Any]) -> str:
    """``meta.checksum`` for ``batch`` (any existing checksum is ignored, ``meta.name`` is
    hashed as null), 0x-prefixed lowercase hex."""
    meta = {k: v for k, v in dict(batch.get("meta") or {}).items() if k != "checksum"}
    target = {**batch, "meta": {**meta, "name": None}}
    serialized = serialize(target).encode("utf-8", "surrogatepass")
    return "0x" + keccak(serialized).hex()


def validate_checksum(batch: dict[str, Any]) -> bool:
    """What the app checks on upload: the stored checksum equals the recomputed one."""
    meta = batch.get("meta") or {}
    return bool(meta.get("checksum")) and meta["checksum"] == batch_checksum(batch)


# -- building a batch from a proposal record --------------------------------------------------


def _input_value(v: Any) -> str:
    """``contractInputsValues`` are strings; arrays and tuples as JSON (the app's input form)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return json.dumps([_plain(x) for x in v.values()], separators=(",", ":"))
    if isinstance(v, list | tuple):
        return json.dumps([_plain(x) for x in v], separators=(",", ":"))
    return str(v)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return [_plain(x) for x in v.values()]
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, bool):
        return v
    return str(v)


def _abi_input(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "internalType": p.get("internalType") or p["type"],
        "name": p.get("name") or "",
        "type": p["type"],
    }
    if "components" in p:
        out["components"] = [_abi_input(c) for c in p["components"]]
    return out


def batch_transaction(tx: dict[str, Any]) -> dict[str, Any]:
    """One proposal transaction (``PlannedTx.as_dict()``) in the Transaction Builder shape."""
    to = to_checksum_address(tx["to"])
    value = str(int(tx.get("value") or 0))
    data = str(tx.get("data") or "0x")
    call = tx.get("call") or {}
    item: dict[str, Any] | None = None
    if call.get("contract") and len(data) >= 10:
        with contextlib.suppress(ConfigError):
            item = load_abi(str(call["contract"])).by_selector.get(bytes.fromhex(data[2:10]))
    if item is None or item.get("name") != call.get("method"):
        return {"to": to, "value": value, "data": data}  # raw call: the app shows the hex
    inputs = [_abi_input(p) for p in item["inputs"]]
    args = list((call.get("args") or {}).values())
    if len(args) != len(inputs):
        return {"to": to, "value": value, "data": data}  # raw call: the app shows the hex
    return {
        "to": to,
        "value": value,
        "data": None,
        "contractMethod": {
            "inputs": inputs,
            "name": item["name"],
            "payable": item.get("stateMutability") == "payable" or bool(item.get("payable")),
        },
        "contractInputsValues": {
            (p["name"] or f"arg{i}"): _input_value(a)
            for i, (p, a) in enumerate(zip(inputs, args, strict=True))
        },
    }


def _created_at_ms(record: dict[str, Any]) -> int:
    raw = record.get("created_at")
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            return int(datetime.fromisoformat(raw).timestamp() * 1000)
    return int(datetime.now().timestamp() * 1000)


def build_batch(record: dict[str, Any]) -> dict[str, Any]:
    """The batch (with ``meta.checksum``) for a proposal record built by the runner."""
    txs = record.get("transactions") or []
    if not txs:
        raise ValueError(f"proposal {record.get('id')} has no transactions to write")
    explanation = record.get("explanation") or []
    lines = [explanation] if isinstance(explanation, str) else [str(x) for x in explanation]
    description = " | ".join(
        [
            f"{record.get('action', 'proposal')} proposed by hedge-agent, key {record.get('idempotency_key')}"
        ]
        + lines
        + [str(t.get("human", "")) for t in txs if t.get("human")]
    )
    batch: dict[str, Any] = {
        "version": BATCH_VERSION,
        "chainId": str(int(record["chain_id"])),
        "createdAt": _created_at_ms(record),
        "meta": {
            "name": f"hedge-agent {record.get('action', 'proposal')} {record.get('id', '')}".strip(),
            "description": description,
            "txBuilderVersion": TX_BUILDER_VERSION,
            "createdFromSafeAddress": to_checksum_address(record["account"]),
            "createdFromOwnerAddress": "",
        },
        "transactions": [batch_transaction(t) for t in txs],
    }
    batch["meta"]["checksum"] = batch_checksum(batch)
    return batch


def remove_batch_file(path: str | Path) -> None:
    """Remove a proposal's file (its proposal was retracted); a missing file is fine."""
    with contextlib.suppress(OSError):
        Path(path).unlink()


def write_batch_file(proposal_record: dict[str, Any], directory: str | Path) -> Path:
    """Write ``<directory>/<id>-<action>.json`` atomically and return its path. The name
    depends only on the proposal's id and action, so a retry of the same proposal replaces its
    file instead of adding one."""
    batch = build_batch(proposal_record)
    out_dir = Path(directory)
    name = f"{proposal_record.get('id', 'proposal')}-{proposal_record.get('action', 'batch')}.json"
    path = out_dir / re.sub(r"[^A-Za-z0-9._-]", "_", name)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".batch-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(batch, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise StoreError(f"cannot write Safe Transaction Builder file {path}: {exc}") from exc
    return path
