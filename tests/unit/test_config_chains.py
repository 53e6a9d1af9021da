"""``[[chains]]`` and ``[[positions]]``: several chains and positions in one configuration,
the single-chain views every stage works with, and the one-line errors for what cannot work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_settings
from agent.core.errors import ConfigError
from agent.pipeline.parts import build_parts, proposer_positions

A1 = "0x0000000000000000000000000000000000000001"
A2 = "0x0000000000000000000000000000000000000002"
A3 = "0x0000000000000000000000000000000000000003"
PAP = "0x2f39d218133AFaB8F2B819B1066c7E434Ad94E9e"
MS = "0x9641d764fc13c8B624c04430C7356C1C7C8102e2"

TWO_CHAINS = f"""
[[chains]]
name = "eth"
chain_id = 1
rpc_url = "http://127.0.0.1:1"
pool_addresses_provider = "{PAP}"
[chains.options]
pool_factory = "{A1}"
oracle_adapter = "{A1}"
erc20_router = "{A1}"
base = "{A1}"
quote = "{A1}"

[[chains]]
name = "arb"
chain_id = 42161
rpc_url_env = "TEST_ARB_RPC_URL"
pool_addresses_provider = "{PAP}"
block_lag = 3

[[positions]]
chain = "arb"
name = "arb-treasury"
account = "{A2}"
target_health_factor = "1.8"
multisend_call_only = "{MS}"

[[positions]]
chain = "eth"
account = "{A1}"
multisend_call_only = "{MS}"
"""


def _toml(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(body, encoding="utf-8")
    return p


def test_parts_carry_each_chain_and_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2/secret-key")
    s = load_settings(_toml(tmp_path, TWO_CHAINS))
    assert s.multi_chain
    parts = build_parts(s)
    eth, arb = parts.chains
    assert (eth.name, eth.chain_id, eth.fork.block_lag) == ("eth", 1, 0)
    # the URL from the named environment variable, the chain's own fork lag
    assert arb.config.rpc_url.get_secret_value() == "http://127.0.0.1:2/secret-key"
    assert "secret-key" not in repr(arb)
    assert (arb.chain_id, arb.fork.block_lag) == (42161, 3)
    p_arb, p_eth = parts.positions
    assert (p_arb.chain.name, p_arb.account, p_arb.name) == ("arb", A2, "arb-treasury")
    assert p_eth.name == "eth:0x0000..0001"  # named when not given
    assert p_eth.chain.venue.configured and not p_arb.chain.venue.configured
    # each chain's snapshot reads its positions' accounts without listing them in `accounts`
    assert (eth.config.accounts, arb.config.accounts) == ((A1,), (A2,))
    # the chain is part of every position's keys
    assert (p_eth.key_scope, p_arb.key_scope) == ("1", "42161")
    # the put ladder: the first chain with a venue, bought by its first position
    put = parts.puts
    assert put is not None
    assert (put.chain.name, put.buyer.account) == ("eth", A1) and put.buyer is p_eth


def test_the_put_venue_and_buyer_can_be_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2")
    body = TWO_CHAINS + f'\n[options]\nchain = "eth"\naccount = "{A3}"\nslippage_bps = 250\n'
    put = build_parts(load_settings(_toml(tmp_path, body))).puts
    assert put is not None and put.buyer.account == A3 and put.venue.slippage_bps == 250
    assert put.buyer.chain.name == "eth"
    # no chain with a venue: no put ladder
    off = TWO_CHAINS.replace("[chains.options]", "[chains.options]\nenabled = false")
    assert build_parts(load_settings(_toml(tmp_path, off))).puts is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[chain]\nname = "x"\n', r"\[\[chains\]\] and \[\[positions\]\] replace \[chain\]"),
        (f'[position]\naccount = "{A1}"\n', r"replace \[position\]"),
        ('[options]\nchain = "op"\n', r"options\.chain = 'op' is not a \[\[chains\]\] name"),
        (
            f'[options]\npool_factory = "{A1}"\n',
            r"a put venue's addresses go under \[chains\.options\]",
        ),
        (
            '[sinks.live]\nenabled = true\nsigner_key = "0x' + "11" * 32 + '"\n',
            r"sinks\.live\.enabled supports one chain",
        ),
    ],
)
def test_what_cannot_work_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, message: str
) -> None:
    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2")
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(_toml(tmp_path, TWO_CHAINS + "\n" + extra))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_entries_are_checked_against_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_ARB_RPC_URL", raising=False)
    with pytest.raises(ConfigError, match=r"rpc_url_env names TEST_ARB_RPC_URL, which is not set"):
        load_settings(_toml(tmp_path, TWO_CHAINS))
    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2")
    cases = {
        TWO_CHAINS.replace('chain = "arb"', 'chain = "base"'): r"positions\[0\]\.chain = 'base'",
        TWO_CHAINS.replace("chain_id = 42161", "chain_id = 1"): r"\['1'\] appear more than once",
        TWO_CHAINS.replace('name = "arb"\n', 'name = "eth"\n'): r"\['eth'\] appear more than once",
        TWO_CHAINS.split("[[positions]]")[0]: r"needs at least one \[\[positions\]\]",
        f'[[positions]]\naccount = "{A1}"\n': r"\[\[positions\]\] needs \[\[chains\]\]",
        TWO_CHAINS.replace(f'account = "{A2}"\n', ""): r"positions\[0\]\.account is required",
    }
    for body, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_settings(_toml(tmp_path, body))


def _deployment(path: Path, chain_id: int, safe: str, lean: str) -> None:
    dep: dict[str, Any] = {
        "chain_id": chain_id,
        "rpc_url": f"http://127.0.0.1:{chain_id}",
        "aave": {"pool_addresses_provider": PAP},
        "tokens": {"WETH": {"address": A3}},
        "safe": {"address": safe, "multisend_call_only": MS},
        "safe_lean": {"address": lean},
        "chainlink": {"ETH/USD": A3},
        "perps": {},
        "premia": {
            k: A3 for k in ("pool_factory", "oracle_adapter", "erc20_router", "base", "quote")
        },
        "uniswap": {
            "factory": A3,
            "swap_router02": A3,
            "quoter_v2": A3,
            "pools": {"WETH": {"fee": 500}},
        },
    }
    path.write_text(json.dumps(dep), encoding="utf-8")


def test_devnet_chains_are_filled_from_their_deployment_files(tmp_path: Path) -> None:
    _deployment(tmp_path / "d1.json", 31337, A1, A2)
    _deployment(tmp_path / "d2.json", 31338, A2, A3)
    body = f"""
[[chains]]
name = "devnet"
deployment = "{tmp_path / "d1.json"}"
[[chains]]
name = "devnet2"
deployment = "{tmp_path / "d2.json"}"
[[positions]]
chain = "devnet"
[[positions]]
chain = "devnet2"
deployment_safe = "safe_lean"
"""
    s = load_settings(_toml(tmp_path, body))
    parts = build_parts(s)
    one, two = parts.chains
    assert (one.chain_id, two.chain_id) == (31337, 31338)
    assert two.config.rpc_url.get_secret_value() == "http://127.0.0.1:31338"
    assert two.venue.configured and two.dex.configured
    p1, p2 = parts.positions
    assert (p1.account, p2.account) == (A1, A3)  # each from its own file
    assert p2.multisend_call_only == MS
    # a chain id written beside the deployment must agree with it
    wrong = body.replace('name = "devnet2"\n', 'name = "devnet2"\nchain_id = 5\n')
    with pytest.raises(ConfigError, match=r"chain\.chain_id = 5 but the deployment"):
        load_settings(_toml(tmp_path, wrong))


def test_a_single_chain_file_keeps_working(tmp_path: Path) -> None:
    s = load_settings(
        _toml(tmp_path, f'[chain]\nname = "eth"\nchain_id = 1\n[position]\naccount = "{A1}"\n')
    )
    assert not s.multi_chain
    parts = build_parts(s)
    (chain,) = parts.chains
    (position,) = parts.positions
    assert (chain.name, chain.chain_id, chain.config.accounts) == ("eth", 1, (A1,))
    assert (position.chain, position.account, position.name) == (chain, A1, "")
    assert position.key_scope == "1"  # the chain is in the keys on one chain too


def test_comet_is_read_on_the_chain_that_lists_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.pipeline.parts import lists_comet

    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2")
    comet = f'\n[[collectors.comet.markets]]\naddress = "{A3}"\nasset = "usdc"\n'
    with pytest.raises(ConfigError, match=r"collectors\.comet\.chain: name the \[\[chains\]\]"):
        load_settings(_toml(tmp_path, TWO_CHAINS + comet))
    s = load_settings(_toml(tmp_path, TWO_CHAINS + comet + '[collectors.comet]\nchain = "arb"\n'))
    eth, arb = build_parts(s).chains
    assert (lists_comet(s, eth), lists_comet(s, arb)) == (False, True)  # not the first chain
    with pytest.raises(ConfigError, match=r"comet\.chain = 'op' is not a \[\[chains\]\] name"):
        load_settings(_toml(tmp_path, TWO_CHAINS + comet + '[collectors.comet]\nchain = "op"\n'))


def test_the_spx_ticket_goes_through_the_chain_its_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2")
    parts = build_parts(load_settings(_toml(tmp_path, TWO_CHAINS)))
    assert parts.spx is not None and parts.puts is not None
    assert parts.spx is parts.puts.buyer  # default: the put ladder's buyer
    named = TWO_CHAINS.replace(
        "[[chains]]", '[sinks]\nspx_ticket_position = "arb-treasury"\n\n[[chains]]', 1
    )
    spx = build_parts(load_settings(_toml(tmp_path, named))).spx
    assert spx is not None and (spx.name, spx.chain.name) == ("arb-treasury", "arb")


def test_a_put_buyer_on_a_chain_without_positions_protects_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No position on the venue's chain (eth): the first position's account buys the ladder
    there, but none of that position's protection comes along (its guardian, autonomous
    execution, target and guard are its own chain's, arb's)."""
    monkeypatch.setenv("TEST_ARB_RPC_URL", "http://127.0.0.1:2")
    arb_only = TWO_CHAINS.split('[[positions]]\nchain = "eth"')[0].replace(
        'target_health_factor = "1.8"\n',
        'target_health_factor = "1.8"\nexecution = "autonomous"\nguardian = "g"\n',
    )
    body = arb_only + f'\n[[guardians]]\nname = "g"\naccount = "{A3}"\nkey_env = "G_KEY"\n'
    parts = build_parts(load_settings(_toml(tmp_path, body)))
    (arb,) = parts.positions
    assert (arb.execution, arb.guardian) == ("autonomous", A3)  # arb's own, untouched
    put = parts.puts
    assert put is not None and put.chain.name == "eth"
    b = put.buyer
    assert (b.name, b.chain.name, b.account) == ("eth:0x0000..0002", "eth", A2)
    assert (b.kind, b.multisend_call_only) == ("safe", MS)  # signs as the account does
    assert (b.execution, b.immediate, b.guardian, b.guardian_config, b.role) == (
        "proposal",
        False,
        None,
        None,
        None,
    )
    assert (b.guard, b.target_health_factor) == (None, None)
    assert [(p.name, ladder is put) for p, ladder in proposer_positions(parts)] == [
        ("arb-treasury", False),
        ("eth:0x0000..0002", True),
    ]
