"""The guardian account's configuration and key (from an environment variable or an encrypted
keystore, never the config file, never in a message) and the price of one guard action, by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import ValidationError

from agent.core.errors import ConfigError
from agent.core.units import WAD
from agent.planner.guardian import actions_covered, guard_action_base
from agent.sinks.guardian import GuardianConfig, load_guardian_key

KEY = "0x" + "6a" * 32
ADDR = "0xB763F1270693c8586184A5BEb6f3249640273fFE"


def test_the_key_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G_KEY", KEY)
    key = load_guardian_key(GuardianConfig(account=ADDR, key_env="G_KEY"))
    assert key.get_secret_value() == KEY
    assert KEY not in repr(key) and KEY[2:] not in str(key)  # a SecretStr


def test_the_key_from_an_encrypted_keystore(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ks = tmp_path / "guardian.json"
    ks.write_text(json.dumps(Account.encrypt(KEY, "pw", iterations=2)))
    cfg = GuardianConfig(account=ADDR, keystore=str(ks), keystore_password_env="G_PW")
    monkeypatch.setenv("G_PW", "pw")
    assert load_guardian_key(cfg).get_secret_value() == KEY
    monkeypatch.setenv("G_PW", "wrong")
    with pytest.raises(ConfigError, match="the password does not decrypt it") as ei:
        load_guardian_key(cfg)
    assert "wrong" not in str(ei.value)
    monkeypatch.delenv("G_PW")
    with pytest.raises(ConfigError, match="keystore_password_env names G_PW, which is not set"):
        load_guardian_key(cfg)


def test_errors_name_the_source_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = GuardianConfig(account=ADDR, key_env="G_KEY")
    with pytest.raises(ConfigError, match="key_env names G_KEY, which is not set"):
        load_guardian_key(cfg)
    monkeypatch.setenv("G_KEY", "0x1234")
    with pytest.raises(ConfigError, match="G_KEY is not a valid 32-byte hex private key"):
        load_guardian_key(cfg)
    other = "0x" + "5b" * 32
    monkeypatch.setenv("G_KEY", other)
    with pytest.raises(ConfigError, match=f"not of guardian.account {ADDR}") as ei:
        load_guardian_key(cfg)
    assert other[2:] not in str(ei.value)


def test_the_key_never_comes_from_the_config_file() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        GuardianConfig.model_validate({"account": ADDR, "key": KEY})
    with pytest.raises(ValidationError, match="exactly one of key_env"):
        GuardianConfig(account=ADDR)
    with pytest.raises(ValidationError, match="exactly one of key_env"):
        GuardianConfig(account=ADDR, key_env="A", keystore="k.json", keystore_password_env="B")
    with pytest.raises(ValidationError, match="keystore needs keystore_password_env"):
        GuardianConfig(account=ADDR, keystore="k.json")
    assert not GuardianConfig().enabled


def test_one_guard_action_priced_by_hand() -> None:
    # $100,000 of debt (1e8 base units per USD), trigger 1.30, target 1.60.
    d = 100_000 * 10**8
    trigger, target = 13 * WAD // 10, 16 * WAD // 10
    # repay: D * (1 - 1.3/1.6) = 100,000 * 0.1875 = $18,750 exactly
    assert guard_action_base(d, trigger, target, "repay") == 18_750 * 10**8
    # top-up in an asset with LT 82.5%: 100,000 * 0.3 / 0.825 = $36,363.6363... (rounded up)
    assert guard_action_base(d, trigger, target, "top_up", 8_250) == 3_636_363_636_364
    assert guard_action_base(0, trigger, target, "repay") == 0  # no debt, nothing to protect
    with pytest.raises(ValueError, match="liquidation threshold"):
        guard_action_base(d, trigger, target, "top_up")
    # $50,000 of USDC covers 2 repays of $18,750 (not 2.67, not 3)
    assert actions_covered(50_000 * 10**8, 18_750 * 10**8) == 2
    assert actions_covered(18_749 * 10**8, 18_750 * 10**8) == 0
    assert actions_covered(10**8, 0) is None


def test_the_guardians_top_up_and_repay_credit_the_safe() -> None:
    """The guardian pays from its own wallet, but the collateral and the repaid debt are the
    Safe's: ``supply`` and ``repay`` name the Safe as onBehalfOf, the amounts are sized from the
    Safe's account data and the guardian's balance (mutation audit: wrong onBehalfOf). One sizing
    path: the Safe's own ``plan_topup``/``plan_repay`` with the guardian's wallet in place of
    the Safe's (which is empty here: sized from it, nothing would be planned)."""
    from eth_utils.address import to_checksum_address

    from agent.core.market import AccountState, MarketLayout, ReserveMeta, ReserveState
    from agent.core.units import WAD
    from agent.planner.guardian import with_guardian_wallet
    from agent.planner.repay import plan_repay
    from agent.planner.topup import plan_topup

    pool, safe = "0x" + "44" * 20, "0x" + "5a" * 20
    weth = ReserveMeta("0x" + "11" * 20, "WETH", 18, "0x" + "22" * 20, "0x" + "33" * 20, 8250, 8000)
    usdc = ReserveMeta("0x" + "12" * 20, "USDC", 6, "0x" + "23" * 20, "0x" + "34" * 20, 0, 0)
    layout = MarketLayout("t", "aave-v3", pool, pool, pool, (weth, usdc), (safe,), {}, {}, {})
    c, d = 20_000 * 10**8, 10_000 * 10**8  # HF 1.65 at LT 82.5%
    acct = AccountState(c, d, 0, 8250, 8000, c * 8250 * WAD // (d * 10_000), {}, {})
    target = 18 * WAD // 10

    def paid_by_guardian(balances: dict[str, int]) -> AccountState:
        return with_guardian_wallet(acct, balances, {})

    top = plan_topup(layout=layout, account_addr=safe, account=paid_by_guardian({"WETH": 10**21}),
                     asset=weth, reserve=ReserveState(0, 0, 0, 0, 2000 * 10**8),
                     target_hf_wad=target, max_spend_base=None)  # fmt: skip
    supply = top.transactions[-1]
    assert list(supply.decoded.args.values()) == [
        to_checksum_address(weth.asset), top.amount, to_checksum_address(safe), 0,
    ]  # fmt: skip
    # aimed 10 bps above 1.8: (1.8018 * $10,000 - $20,000 * 0.825) / 0.825 = $1,840 = 0.92 WETH
    assert top.amount == 920_000_000_000_000_000 and top.capped_by is None
    # a guardian holding 0.5 WETH: the plan is cut to what the GUARDIAN holds
    short = plan_topup(layout=layout, account_addr=safe,
                       account=paid_by_guardian({"WETH": 5 * 10**17}), asset=weth,
                       reserve=ReserveState(0, 0, 0, 0, 2000 * 10**8), target_hf_wad=target,
                       max_spend_base=None)  # fmt: skip
    assert (short.amount, short.capped_by) == (5 * 10**17, "wallet")
    rep = plan_repay(layout=layout, account_addr=safe, account=paid_by_guardian({"USDC": 10**12}),
                     asset=usdc, reserve=ReserveState(0, 0, 0, 0, 10**8),
                     target_hf_wad=target)  # fmt: skip
    call = rep.transactions[-1]
    assert list(call.decoded.args.values()) == [
        to_checksum_address(usdc.asset), rep.amount, 2, to_checksum_address(safe),
    ]  # fmt: skip
    # by hand (no borrow rate, so no accrual): the largest debt at 1.8 is $16,500 / 1.8 =
    # $9,166.66666666 (floored to base units), so $833.33333334 is repaid: 833.333334 USDC
    assert rep.amount == 833_333_334 and rep.capped_by is None
