"""Safe Transaction Builder batch files: shape, checksum (vs the worked example, an independent
Python serializer, and the app's algorithm run in node with js-sha3), round trip."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from Crypto.Hash import keccak as pycryptodome_keccak

from agent.core.abi import load_abi
from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
from agent.core.units import RAY, WAD
from agent.planner.repay import plan_repay
from agent.sinks.safe_tx_builder import (
    batch_checksum,
    build_batch,
    serialize,
    validate_checksum,
    write_batch_file,
)

ROOT = Path(__file__).resolve().parents[2]
JS_SHA3 = ROOT / "toolchain" / "node_modules" / "js-sha3"

POOL = "0x87870Bca3F3fD6335C3F4ce8392D69350B4fA4E2"
SAFE = "0x5aFE3855358E112B5647B952709E6165e1c1eEEe"
USDC = ReserveMeta("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "USDC", 6,
                   "0x98C23E9d8f34FEFb1B7BD6a91B7FF122F4e16F5c",
                   "0x72E95b8931767C79bA4EeE721354d6E99a61D004", 8000, 7700)  # fmt: skip


def proposal_record() -> dict[str, Any]:
    layout = MarketLayout("devnet", "aave-v3", POOL, POOL, POOL, (USDC,), (SAFE,), {}, {}, {})
    c, d = 20_000 * 10**8, 10_000 * 10**8
    acct = AccountState(c, d, 0, 8250, 8000, c * 8250 * WAD // (d * 10_000),
                        {"USDC": 5_000 * 10**6}, {"USDC": 0})  # fmt: skip
    plan = plan_repay(layout=layout, account_addr=SAFE, account=acct, asset=USDC,
                      reserve=ReserveState(0, 5 * RAY // 100, 0, 0, 10**8),
                      target_hf_wad=18 * WAD // 10, accrual_margin_s=0)  # fmt: skip
    return {
        "id": "a1b2c3d4e5f6",
        "idempotency_key": "repay:devnet:2026-05-01",
        "created_at": "2026-05-01T12:00:00+00:00",
        "chain": "devnet",
        "chain_id": 31337,
        "account": SAFE,
        "action": "repay_debt",
        "explanation": ["S1 fired: TVL -9.1% in 48h", "S2: CPI YoY rising — façade ✓"],
        "transactions": [t.as_dict() for t in plan.transactions],
    }


# An independent serializer: iterative, different structure from the module's recursion.
def other_serialize(root: Any) -> str:
    out: list[str] = []
    stack: list[tuple[str, Any]] = [("v", root)]
    while stack:
        kind, v = stack.pop()
        if kind == "raw":
            out.append(v)
            continue
        if isinstance(v, dict):
            ks = sorted(
                v, key=lambda k: [ord(ch) for ch in k.encode("utf-16-be").decode("latin-1")]
            )
            parts: list[tuple[str, Any]] = [
                ("raw", "{" + json.dumps(ks, ensure_ascii=False, separators=(",", ":")))
            ]
            for k in ks:
                parts += [("v", v[k]), ("raw", ",")]
            parts.append(("raw", "}"))
            stack.extend(reversed(parts))
        elif isinstance(v, list):
            parts = [("raw", "[")]
            for i, x in enumerate(v):
                if i:
                    parts.append(("raw", ","))
                parts.append(("v", x))
            parts.append(("raw", "]"))
            stack.extend(reversed(parts))
        else:
            out.append(json.dumps(v, ensure_ascii=False))
    return "".join(out)


def other_checksum(batch: dict[str, Any]) -> str:
    b = json.loads(json.dumps(batch))
    b["meta"].pop("checksum", None)
    b["meta"]["name"] = None
    h = pycryptodome_keccak.new(digest_bits=256)
    h.update(other_serialize(b).encode())
    return "0x" + h.hexdigest()


def test_worked_example() -> None:
    assert serialize({"a": 1, "b": [2, {"c": None}]}) == '{["a","b"]1,[2,{["c"]null,}],}'
    assert other_serialize({"a": 1, "b": [2, {"c": None}]}) == '{["a","b"]1,[2,{["c"]null,}],}'


def test_js_primitives_and_key_order() -> None:
    # JS sorts keys by UTF-16 code units: "B" < "a" < "é"; an astral char sorts before U+FF5E.
    assert serialize({"é": 1, "a": 2, "B": 3}) == '{["B","a","é"]3,2,1,}'
    assert serialize({"～": 0, "😀": 1}) == '{["😀","～"]1,0,}'
    assert serialize([True, False, None, 'x\ny"', 1.5, 1e21, 1e-7, 0.000001, -0.0, 10**22]) == (
        '[true,false,null,"x\\ny\\"",1.5,1e+21,1e-7,0.000001,0,1e+22]'
    )
    assert serialize("\ud800") == '"\\ud800"'  # lone surrogate escaped like JSON.stringify
    assert serialize({}) == "{[]}" and serialize([]) == "[]"


def test_batch_shape_and_values() -> None:
    rec = proposal_record()
    batch = build_batch(rec)
    assert batch["version"] == "1.0" and batch["chainId"] == "31337"
    assert batch["createdAt"] == 1_777_636_800_000  # 2026-05-01T12:00Z in ms
    meta = batch["meta"]
    assert set(meta) == {"name", "description", "txBuilderVersion", "createdFromSafeAddress",
                         "createdFromOwnerAddress", "checksum"}  # fmt: skip
    assert meta["createdFromSafeAddress"] == SAFE and meta["createdFromOwnerAddress"] == ""
    assert meta["txBuilderVersion"] == "1.18.2"
    approve, repay = batch["transactions"]
    assert approve == {
        "to": USDC.asset,
        "value": "0",
        "data": None,
        "contractMethod": {
            "inputs": [
                {"internalType": "address", "name": "spender", "type": "address"},
                {"internalType": "uint256", "name": "amount", "type": "uint256"},
            ],
            "name": "approve",
            "payable": False,
        },
        "contractInputsValues": {"spender": POOL, "amount": "833333334"},
    }
    assert repay["contractMethod"]["name"] == "repay"
    assert list(repay["contractInputsValues"].values()) == [USDC.asset, "833333334", "2", SAFE]
    # The string inputs re-encode to exactly the calldata of the proposal (what the app will sign).
    for tx, planned in zip(batch["transactions"], rec["transactions"], strict=True):
        abi = load_abi(planned["call"]["contract"])
        types = [p["type"] for p in tx["contractMethod"]["inputs"]]
        args = [int(v) if t.startswith("uint") else v
                for t, v in zip(types, tx["contractInputsValues"].values(), strict=True)]  # fmt: skip
        assert abi.encode_hex(tx["contractMethod"]["name"], *args) == planned["data"]


def test_checksum_matches_independent_and_round_trip(tmp_path: Path) -> None:
    rec = proposal_record()
    path = write_batch_file(rec, tmp_path)
    assert path.parent == tmp_path and path.name == "a1b2c3d4e5f6-repay_debt.json"
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert loaded["meta"]["checksum"] == other_checksum(loaded) == batch_checksum(loaded)
    assert validate_checksum(loaded)
    # name does not enter the checksum; anything else does
    renamed = json.loads(json.dumps(loaded))
    renamed["meta"]["name"] = "renamed by a reviewer"
    assert validate_checksum(renamed)
    tampered = json.loads(json.dumps(loaded))
    tampered["transactions"][1]["contractInputsValues"]["amount"] = "999"
    assert not validate_checksum(tampered)


# The Transaction Builder's lib/checksum.ts, transcribed to plain JS (js-sha3 for keccak256, the
# same hash web3.utils.sha3 computes). It validates as the app does on upload: delete checksum,
# recompute over {...batch, meta: {...meta, name: null}}.
CHECKSUM_JS = r"""
const fs = require('fs');
const { keccak256 } = require(process.argv[2]);
const stringifyReplacer = (_, value) => (value === undefined ? null : value);
const serializeJSONObject = (json) => {
  if (Array.isArray(json)) {
    return `[${json.map((el) => serializeJSONObject(el)).join(',')}]`;
  }
  if (typeof json === 'object' && json !== null) {
    let acc = '';
    const keys = Object.keys(json).sort();
    acc += `{${JSON.stringify(keys, stringifyReplacer)}`;
    for (let i = 0; i < keys.length; i++) {
      acc += `${serializeJSONObject(json[keys[i]])},`;
    }
    return `${acc}}`;
  }
  return `${JSON.stringify(json, stringifyReplacer)}`;
};
const calculateChecksum = (batchFile) => {
  const serialized = serializeJSONObject({ ...batchFile, meta: { ...batchFile.meta, name: null } });
  return '0x' + keccak256(Buffer.from(serialized, 'utf8'));
};
const out = [];
for (const file of process.argv.slice(3)) {
  const batch = JSON.parse(fs.readFileSync(file, 'utf8'));
  const stored = batch.meta.checksum;
  delete batch.meta.checksum;
  out.push({ file, stored, computed: calculateChecksum(batch),
             serialized: serializeJSONObject({ ...batch, meta: { ...batch.meta, name: null } }) });
}
process.stdout.write(JSON.stringify(out));
"""


def test_checksum_matches_app_algorithm_in_node(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (JS_SHA3 / "package.json").exists():
        pytest.skip("node or toolchain/node_modules/js-sha3 not available")
    files = [write_batch_file(proposal_record(), tmp_path / "a")]
    # A nasty one: unicode, escapes, key order by code unit, numbers JS formats differently.
    weird = build_batch(proposal_record())
    weird["meta"]["description"] = 'é 🚀 "q" \\ \n\t\u0001 \u2028 end'
    weird["extra"] = {
        "B": [1.5, 1e21, 1e-7, 0.000001, 10**22, True, None],
        "a": {},
        "～": [],
        "😀": "x",
    }
    weird["meta"]["checksum"] = batch_checksum(weird)
    p = tmp_path / "weird.json"
    p.write_text(json.dumps(weird, ensure_ascii=False), encoding="utf-8")
    files.append(p)
    script = tmp_path / "checksum.js"
    script.write_text(CHECKSUM_JS, encoding="utf-8")
    res = subprocess.run(
        [node, str(script), str(JS_SHA3), *map(str, files)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    results = json.loads(res.stdout)
    assert len(results) == 2
    for r, f in zip(results, files, strict=True):
        batch = json.loads(Path(f).read_text(encoding="utf-8"))
        target = {
            **batch,
            "meta": {**{k: v for k, v in batch["meta"].items() if k != "checksum"}, "name": None},
        }
        assert r["serialized"] == serialize(target)
        assert r["computed"] == r["stored"] == batch_checksum(batch)


def test_render_shows_comparison_and_file(tmp_path: Path) -> None:
    from agent.sinks.render import render_proposal

    rec = proposal_record() | {"status": "simulated", "sizing": {}}
    rec["comparison"] = {
        "chosen": "repay_debt",
        "reason": "repay_debt reaches the target for $833.33 vs $1,840.00",
        "options": [
            {"action": "collateral_top_up", "asset": "WETH", "cost_usd": 1840.0,
             "health_factor_expected": 1.8018, "reaches_target": True, "capped_by": None},
            {"action": "repay_debt", "asset": "USDC", "cost_usd": 833.33,
             "health_factor_expected": 1.8, "reaches_target": True, "capped_by": None},
        ],
    }  # fmt: skip
    rec["safe_tx_builder_file"] = str(write_batch_file(rec, tmp_path))
    text = render_proposal(rec)
    assert "options (chosen: repay_debt" in text
    assert "- repay_debt: USDC cost $833.33, expected HF 1.8000, reaches target" in text
    assert "Safe Transaction Builder file: " + str(tmp_path) in text


def test_render_shows_the_open_layer_budget_next_to_a_put_budget() -> None:
    """A put's sizing carries its own premium ``budget_usd``; the open-layer budget (B) must not
    collide with it in the record or the rendering."""
    from agent.sinks.render import render_proposal

    rec = proposal_record() | {"status": "simulated"}
    rec["sizing"] = {
        "spend_usd": 39_000.0,
        "session_spent_before_usd": 0.0,
        "session_remaining_after_usd": 211_000.0,
        "session_cap_usd": 250_000.0,
        "defined_risk_budget_usd": 1_000_000.0,
        "open_layers_usd": 760_000.0,
        "budget_room_usd": 240_000.0,
        "budget_frees_next": "$40,000.00 (put) frees on 2022-05-14T08:00:00Z",
        "horizon": "short",
        "budget_usd": "40000.00",  # the put's premium budget (a string in the record)
    }
    text = render_proposal(rec)
    assert (
        "open-layer budget: B $1,000,000.00, open before $760,000.00, room $240,000.00; "
        "$40,000.00 (put) frees on 2022-05-14T08:00:00Z" in text
    )


def test_multisend_packs_plain_calls_by_hand() -> None:
    """MultiSendCallOnly's format, byte by byte: operation 0 (a call; the CallOnly contract
    refuses 1), 20-byte target, 32-byte value, 32-byte length, data (mutation audit)."""
    from agent.planner.safe import pack_multisend
    from agent.planner.tx import PlannedTx

    a, b = "0x" + "aa" * 20, "0x" + "bb" * 20
    txs = [PlannedTx(a, 0, "0x1234", None, "x"), PlannedTx(b, 5, "0x", None, "y")]  # type: ignore[arg-type]
    hand = (
        "00" + "aa" * 20 + "00" * 32 + "00" * 31 + "02" + "1234"
        + "00" + "bb" * 20 + "00" * 31 + "05" + "00" * 32
    )  # fmt: skip
    assert pack_multisend(txs).hex() == hand


def test_the_prevalidated_signature_is_r_owner_s_zero_v_one() -> None:
    from agent.sinks.live import prevalidated_signature

    owner = "0x" + "c0" * 20
    sig = prevalidated_signature(owner)
    assert len(sig) == 65
    assert sig[:32] == bytes(12) + bytes.fromhex("c0" * 20)  # r: the owner, left-padded
    assert sig[32:64] == bytes(32) and sig[64] == 1  # s = 0, v = 1 (approved by msg.sender)


def test_builder_transaction_keeps_the_value_and_the_target() -> None:
    from agent.sinks.safe_tx_builder import batch_transaction

    to = "0x" + "ab" * 20
    item = batch_transaction({"to": to, "value": 12_345_678_901_234_567_890, "data": "0x"})
    assert item["value"] == "12345678901234567890"  # wei, as a decimal string, not rounded
    assert item["to"].lower() == to
