"""The autonomous executor's rules (issue 23 item 4) without a chain: which guardian calls
may be sent (only approve-to-Pool, supply and repay on behalf of the position's Safe), where
the keys come from (environment or encrypted keystore, never the file, never echoed), and
what is never sent (puts, a deleverage without the role)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import SecretStr, ValidationError

from agent.core.errors import ConfigError
from agent.planner.draft import DeleverageConfig, Draft, ProposalHeader
from agent.planner.tx import PlannedTx, call_tx
from agent.sinks.autonomous import NotRouted, guardian_calls, load_key
from agent.sinks.config import KeySource
from agent.sinks.notify import proposal_notice

KEY = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6"
GUARDIAN = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
SAFE = "0x1111111111111111111111111111111111111111"
POOL = "0x2222222222222222222222222222222222222222"
USDC = "0x3333333333333333333333333333333333333333"
OTHER = "0x4444444444444444444444444444444444444444"


def _tx(to: str, abi: str, fn: str, *args: object) -> PlannedTx:
    return call_tx(abi, to, fn, *args, human=fn)


def _draft(*txs: PlannedTx, action: str = "repay_debt") -> Draft:
    header = ProposalHeader(
        id="p", idempotency_key="k", created_at="2026-01-01T00:00:00Z", chain="devnet",
        chain_id=31337, block_number=1, account=SAFE, explanation=(), evidence={}, policy={},
    )  # fmt: skip
    return Draft(header=header, action=action, transactions=txs)  # type: ignore[arg-type]


def test_guardian_sends_only_approve_supply_repay_for_the_safe() -> None:
    ok = _draft(
        _tx(USDC, "ERC20", "approve", POOL, 500),
        _tx(POOL, "Pool", "repay", USDC, 500, 2, SAFE),
    )
    calls, need = guardian_calls(ok, POOL, GUARDIAN)
    assert [c[0].lower() for c in calls] == [USDC.lower(), POOL.lower()]
    assert need == {USDC: 500}
    supply = _draft(_tx(POOL, "Pool", "supply", USDC, 7, SAFE, 0), action="collateral_top_up")
    assert guardian_calls(supply, POOL, GUARDIAN)[1] == {USDC: 7}
    bad = {
        "approve to another spender": _draft(
            _tx(USDC, "ERC20", "approve", OTHER, 1), _tx(POOL, "Pool", "repay", USDC, 1, 2, SAFE)
        ),
        "repay for another account": _draft(_tx(POOL, "Pool", "repay", USDC, 1, 2, OTHER)),
        "supply for another account": _draft(_tx(POOL, "Pool", "supply", USDC, 1, OTHER, 0)),
        "a transfer": _draft(_tx(USDC, "ERC20", "transfer", OTHER, 1)),
        "a borrow": _draft(_tx(POOL, "Pool", "borrow", USDC, 1, 2, 0, SAFE)),
        "repay to another pool": _draft(_tx(OTHER, "Pool", "repay", USDC, 1, 2, SAFE)),
        "only an approval": _draft(_tx(USDC, "ERC20", "approve", POOL, 1)),
    }
    for what, draft in bad.items():
        with pytest.raises(NotRouted):
            guardian_calls(draft, POOL, GUARDIAN)
        assert what


def test_key_from_environment_or_keystore_never_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("G_KEY", KEY)
    assert load_key(KeySource(key_env="G_KEY"), "guardian.key").address == GUARDIAN
    with pytest.raises(ConfigError, match="NOPE is not set"):
        load_key(KeySource(key_env="NOPE"), "guardian.key")
    monkeypatch.setenv("G_BAD", "0x1234")
    with pytest.raises(ConfigError, match="G_BAD does not hold") as e:
        load_key(KeySource(key_env="G_BAD"), "guardian.key")
    assert "1234" not in str(e.value)
    store = tmp_path / "guardian.json"
    store.write_text(json.dumps(Account.encrypt(KEY, "pw", iterations=2)))
    monkeypatch.setenv("G_PW", "pw")
    src = KeySource(keystore=str(store), password_env="G_PW")
    assert load_key(src, "guardian.key").address == GUARDIAN
    monkeypatch.setenv("G_PW", "wrong")
    with pytest.raises(ConfigError, match="could not be decrypted") as e:
        load_key(src, "guardian.key")
    assert "wrong" not in str(e.value) and KEY[2:] not in str(e.value)
    with pytest.raises(ValidationError):
        KeySource()
    with pytest.raises(ValidationError):
        KeySource(key_env="A", keystore="x.json", password_env="B")
    with pytest.raises(ValidationError):
        KeySource(keystore="x.json")  # no password variable
    assert SecretStr  # the private send URL is a SecretStr (sinks/config.py)


def test_notice_says_what_was_sent_why_hash_and_hf() -> None:
    record = {
        "id": "p", "idempotency_key": "k", "action": "repay_debt", "status": "simulated",
        "account": SAFE, "chain": "devnet", "chain_id": 31337,
        "autonomous": {"mode": "guardian", "sender": GUARDIAN, "status": "mined",
                       "tx_hashes": ["0xabc"], "why": "guard: HF 1.25 <= trigger 1.30",
                       "health_factor_before": 1.25, "health_factor_after": 1.6012},
    }  # fmt: skip
    n = proposal_notice(record)
    assert n.title.startswith("hedge-agent EXECUTED: repay_debt")
    assert "SENT autonomously by the guardian" in n.body and "tx: 0xabc" in n.body
    assert "health factor on chain: 1.250 -> 1.601" in n.body
    assert "why: guard: HF 1.25 <= trigger 1.30" in n.body and n.level == "success"
    pending = record | {"autonomous": record["autonomous"] | {"status": "pending"}}
    assert proposal_notice(pending).level == "failure"
    kept = record | {"autonomous": {"status": "not_sent", "why_not": "a deleverage needs [roles]"}}
    n = proposal_notice(kept)
    assert n.title.startswith("hedge-agent proposal:")
    assert n.body.startswith("NOT sent autonomously: a deleverage needs [roles]")


def test_an_autonomous_role_deleverage_is_planned_with_the_immediate_bound() -> None:
    """Sent at once through the role: the 3 bps bound (planner's ``immediate``), not the
    signers' 50 bps; a proposal for the signers keeps the signers' bound."""
    from agent.config import Settings
    from agent.pipeline.parts import build_parts
    from agent.pipeline.propose import deleverage_config

    def deleverage_of(s: Settings) -> DeleverageConfig | None:
        (position,) = build_parts(s).positions
        return deleverage_config(s.uniswap, immediate=position.immediate)

    router = "0x" + "55" * 20
    base = {
        "uniswap": {
            "factory": "0x" + "44" * 20,
            "swap_router02": router,
            "quoter_v2": "0x" + "66" * 20,
        },
        "position": {"account": SAFE},
    }
    signers = deleverage_of(Settings.model_validate(base))
    assert signers is not None and signers.execution == "signers"
    assert signers.bound_bps == 50
    auto = Settings.model_validate(
        base
        | {"position": {"account": SAFE, "execution": "autonomous"}}
        | {"roles": {"agent": GUARDIAN}}
    )
    cfg = deleverage_of(auto)
    assert cfg is not None and cfg.execution == "immediate" and cfg.bound_bps == 3
    no_role = Settings.model_validate(
        base | {"position": {"account": SAFE, "execution": "autonomous"}}
    )
    cfg2 = deleverage_of(no_role)
    assert cfg2 is not None and cfg2.execution == "signers"  # nothing can send it at once


def test_status_lines_show_what_was_sent_and_its_state_now() -> None:
    from agent.sinks.autonomous import status_lines

    assert status_lines([], [], {}) == [
        "autonomous execution: off (every proposal waits for the signers)"
    ]
    h = "0x" + "ab" * 32
    records = [
        {"created_at": "2026-01-01T00:00:00Z", "action": "option_put", "position": "main"},
        {"created_at": "2026-01-01T00:00:00Z", "action": "repay_debt", "position": "main",
         "autonomous": {"mode": "guardian", "status": "mined", "tx_hashes": [h],
                        "health_factor_before": 1.4311, "health_factor_after": 1.6000}},
        {"created_at": "2026-01-02T00:00:00Z", "action": "deleverage", "position": "main",
         "autonomous": {"status": "not_sent", "why_not": "a deleverage needs [roles]"}},
    ]  # fmt: skip
    lines = status_lines(["main"], records, {h: "mined"})
    assert lines == [
        "autonomous execution: on for main",
        "  2026-01-01T00:00:00Z repay_debt main by the guardian: 0xabababab.. mined; "
        "HF 1.431 -> 1.600",
        "  2026-01-02T00:00:00Z deleverage main: NOT sent: a deleverage needs [roles]",
    ]
    assert status_lines(["main"], records[:1], {}) == [
        "autonomous execution: on for main",
        "  no autonomous transaction yet",
    ]


def test_live_sending_and_an_autonomous_guardian_position_are_one_sender_too_many(
    tmp_path: Path,
) -> None:
    # Both would reach the durable live path; the guardian's calls must never go out from
    # the live key, so the file is refused at load, naming both sections.
    from agent.config import load_settings

    body = f"""
[chain]
rpc_url = "http://127.0.0.1:1"
pool_addresses_provider = "0x2f39d218133AFaB8F2B819B1066c7E434Ad94E9e"

[position]
account = "0x0000000000000000000000000000000000000001"
execution = "autonomous"

[guardian]
account = "{GUARDIAN}"
key_env = "G_KEY"
"""
    path = tmp_path / "c.toml"
    path.write_text(body + "\n[sinks.live]\nenabled = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sinks\.live\.enabled with an autonomous position"):
        load_settings(path)
    path.write_text(body, encoding="utf-8")
    assert load_settings(path).guardian.account == GUARDIAN
