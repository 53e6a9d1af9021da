"""Delegate registration: the EIP-712 ``Delegate(delegateAddress, totp)`` message and hash
against eth-account's typed-data encoder and signer (independent of our eth-abi code), and
``hedge-agent safe add-delegate`` printing the message and posting an owner's signature to a
local service shaped like the v2 one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from fake_safe_service import FakeSafeService, delegate_reference_hash, serve_in_thread

from agent.cli import main
from agent.core.errors import ConfigError
from agent.sinks.safe_delegate import (
    DelegateRegistration,
    check_signature,
    delegate_hash,
    delegate_typed_data,
    totp,
)

OWNER_KEY = "0x" + "11" * 32
OWNER = Account.from_key(OWNER_KEY).address
OTHER_KEY = "0x" + "22" * 32
DELEGATE_KEY = "0x" + "4c" * 32
DELEGATE = Account.from_key(DELEGATE_KEY).address
SAFE = to_checksum_address("0x5afe3855358e112b5647b952709e6165e1c1eeee")
API_KEY = "sk_test_delegate_0123456789"
NOW = 1_764_504_000 + 1234  # 2025-11-30T12:20:34Z


def service_typed_data(delegate: str, chain_id: int, t: int) -> dict[str, Any]:
    """The payload exactly as the service's docstring (views_v2.DelegateListView.post) shows it."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Delegate": [
                {"name": "delegateAddress", "type": "address"},
                {"name": "totp", "type": "uint256"},
            ],
        },
        "primaryType": "Delegate",
        "domain": {"name": "Safe Transaction Service", "version": "1.0", "chainId": chain_id},
        "message": {"delegateAddress": delegate, "totp": t},
    }


@pytest.mark.parametrize("chain_id", [1, 42161, 31337])
def test_message_and_hash_match_eth_account(chain_id: int) -> None:
    t = NOW // 3600
    assert totp(NOW) == t == 490140
    assert delegate_typed_data(DELEGATE, chain_id, t) == service_typed_data(DELEGATE, chain_id, t)
    assert delegate_hash(DELEGATE, chain_id, t) == delegate_reference_hash(DELEGATE, chain_id, t)
    # A different hour, chain or delegate is a different message.
    assert delegate_hash(DELEGATE, chain_id, t - 1) != delegate_hash(DELEGATE, chain_id, t)
    assert delegate_hash(OWNER, chain_id, t) != delegate_hash(DELEGATE, chain_id, t)


def sign(key: str, chain_id: int, t: int, delegate: str = DELEGATE) -> str:
    signed = Account.sign_typed_data(key, full_message=service_typed_data(delegate, chain_id, t))
    return "0x" + bytes(signed.signature).hex()


def test_owner_signature_is_checked_locally() -> None:
    reg = DelegateRegistration(SAFE, DELEGATE, OWNER, sign(OWNER_KEY, 1, totp(NOW)), "x")
    check_signature(reg, 1, NOW)
    # The previous hour is still accepted (as the service does); two hours ago is not.
    check_signature(reg, 1, NOW + 3600)
    with pytest.raises(ConfigError, match="was not made by --delegator"):
        check_signature(reg, 1, NOW + 7200)
    with pytest.raises(ConfigError, match="on chain 10"):
        check_signature(reg, 10, NOW)
    other = DelegateRegistration(SAFE, DELEGATE, OWNER, sign(OTHER_KEY, 1, totp(NOW)), "x")
    with pytest.raises(ConfigError) as ei:
        check_signature(other, 1, NOW)
    assert f"recovers to {Account.from_key(OTHER_KEY).address}" in str(ei.value)
    with pytest.raises(ConfigError, match="65 bytes"):
        check_signature(DelegateRegistration(SAFE, DELEGATE, OWNER, "0x1234", "x"), 1, NOW)
    # v as a recovery id (0/1), as some signers return it, is normalised to 27/28.
    raw = bytes.fromhex(reg.signature[2:])
    v01 = "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()
    check_signature(DelegateRegistration(SAFE, DELEGATE, OWNER, v01, "x"), 1, NOW)
    assert (
        DelegateRegistration(SAFE, DELEGATE, OWNER, v01, "x").body()["signature"] == reg.signature
    )


def write_config(tmp_path: Path, base: str, *, delegate_key: bool = True) -> Path:
    p = tmp_path / "agent.toml"
    lines = [
        "[chain]", "chain_id = 1", f'accounts = ["{SAFE}"]', "",
        "[sinks.safe_service]", f'base_url = "{base}"', f'api_key = "{API_KEY}"',
    ]  # fmt: skip
    if delegate_key:
        lines.append(f'delegate_key = "{DELEGATE_KEY}"')
    p.write_text("\n".join(lines) + "\n")
    return p


def test_cli_prints_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9/tx-service/eth")
    out_file = tmp_path / "delegate.json"
    assert main(["safe", "add-delegate", "--config", str(cfg), "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    t = int(time.time()) // 3600
    written = json.loads(out_file.read_text())
    # The delegate is the configured key's address; the message is the service's, this hour.
    assert written == service_typed_data(DELEGATE, 1, t) or written == service_typed_data(
        DELEGATE, 1, t - 1
    )  # the hour may turn between the command and this line
    wt = written["message"]["totp"]
    assert f"Delegate {DELEGATE} for Safe {SAFE} on chain 1" in out
    assert f"EIP-712 hash: 0x{delegate_reference_hash(DELEGATE, 1, wt).hex()}" in out
    assert f"cast wallet sign --data --from-file {out_file}" in out
    assert DELEGATE_KEY[2:] not in out and API_KEY not in out


def test_cli_picks_the_position_of_a_multichain_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "0x0000000000000000000000000000000000000002"
    p = tmp_path / "multi.toml"
    p.write_text(
        '[[chains]]\nname = "eth"\nchain_id = 1\n'
        '[[chains]]\nname = "arb"\nchain_id = 42161\n'
        f'[[positions]]\nchain = "eth"\nname = "main"\naccount = "{SAFE}"\n'
        f'[[positions]]\nchain = "arb"\nname = "l2"\naccount = "{other}"\n'
        f'[sinks.safe_service]\napi_key = "{API_KEY}"\ndelegate_key = "{DELEGATE_KEY}"\n'
    )
    # two positions: which one must be said
    assert main(["safe", "add-delegate", "--config", str(p)]) == 2
    assert "several positions: give --position (main, l2)" in capsys.readouterr().err
    assert main(["safe", "add-delegate", "--config", str(p), "--position", "l2"]) == 0
    assert f"Delegate {DELEGATE} for Safe {other} on chain 42161" in capsys.readouterr().out
    assert main(["safe", "add-delegate", "--config", str(p), "--position", "x"]) == 2
    assert "no position named 'x' (positions: main, l2)" in capsys.readouterr().err


def test_cli_posts_the_owner_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svc = FakeSafeService(owners=[OWNER], api_key=API_KEY)
    with serve_in_thread(svc) as base:
        cfg = write_config(tmp_path, base, delegate_key=False)
        sig = sign(OWNER_KEY, 1, int(time.time()) // 3600)
        args = ["safe", "add-delegate", "--config", str(cfg), "--delegate", DELEGATE,
                "--delegator", OWNER, "--signature", sig, "--label", "hedge agent"]  # fmt: skip
        assert main(args) == 0
        assert f"registered {DELEGATE} as a delegate of Safe {SAFE}" in capsys.readouterr().out
        assert svc.delegates == {DELEGATE}
        (path, headers, body) = svc.posts()[0]
        assert path == "/tx-service/eth/api/v2/delegates/"
        assert headers["Authorization"] == f"Bearer {API_KEY}"
        assert body == {"safe": SAFE, "delegate": DELEGATE, "delegator": OWNER,
                        "signature": sig, "label": "hedge agent"}  # fmt: skip

        # A signature by someone else is refused before anything is sent.
        n = len(svc.received)
        bad = sign(OTHER_KEY, 1, int(time.time()) // 3600)
        assert main([*args[:-4], "--signature", bad, "--label", "x"]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith("error: --signature was not made by --delegator")
            and err.count("\n") == 1
        )
        assert len(svc.received) == n

        # The service's own refusal (not an owner) comes back as one line naming the field.
        svc.owners = [Account.from_key(OTHER_KEY).address]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "HTTP 400: delegator: Provided delegator=" in err and err.count("\n") == 1
        assert API_KEY not in err
