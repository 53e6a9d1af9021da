"""A guardian and a role per position (issue 23: "one guardian and one role per daemon" lifted):
``[[guardians]]`` entries are named and each autonomous position names its own
(``positions[i].guardian``); a position's own ``[positions.roles]`` is its Safe's role. The
single-position ``[guardian]``/``[roles]`` keep working unchanged. Errors name the entry."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_utils.address import to_checksum_address

from agent.commands.roles import role_config, role_module, role_positions
from agent.config import Settings, load_settings
from agent.core.errors import ConfigError
from agent.pipeline.parts import build_parts
from agent.sinks.guardian import load_guardian_key

PAP = "0x2f39d218133AFaB8F2B819B1066c7E434Ad94E9e"
MS = "0x9641d764fc13c8B624c04430C7356C1C7C8102e2"
SAFE1, SAFE2, G1, G2, AGENT1, AGENT2 = (
    to_checksum_address(f"0x{n:040x}") for n in (0x5AFE01, 0x5AFE02, 0xA1, 0xA2, 0xB1, 0xB2)
)
ZODIAC = (
    'mastercopy = "0x00000000000000000000000000000000000000c1"\n'
    'module_proxy_factory = "0x00000000000000000000000000000000000000c2"\n'
    'multisend_unwrapper = "0x00000000000000000000000000000000000000c3"\n'
)

CHAINS = "".join(
    f'[[chains]]\nname = "{n}"\nchain_id = {i}\nrpc_url = "http://127.0.0.1:{i}"\n'
    f'pool_addresses_provider = "{PAP}"\n'
    for n, i in (("eth", 1), ("arb", 42161))
)
GUARDIANS = (
    f'[[guardians]]\nname = "g-eth"\naccount = "{G1}"\nkey_env = "G_ETH"\n'
    f'[[guardians]]\nname = "g-arb"\naccount = "{G2}"\nkey_env = "G_ARB"\n'
)


def _positions(extra: tuple[str, str] = ("", "")) -> str:
    return "".join(
        f'[[positions]]\nname = "{n}"\nchain = "{c}"\naccount = "{a}"\n'
        f'multisend_call_only = "{MS}"\nexecution = "autonomous"\n{x}'
        for (n, c, a), x in zip(
            (("main", "eth", SAFE1), ("side", "arb", SAFE2)), extra, strict=True
        )
    )


def _load(tmp_path: Path, body: str) -> Settings:
    p = tmp_path / "c.toml"
    p.write_text(body, encoding="utf-8")
    return load_settings(p, resolve_deployment=False)


def test_each_position_gets_the_guardian_and_role_it_names(tmp_path: Path) -> None:
    body = (
        CHAINS
        + GUARDIANS
        + _positions(
            (
                f'guardian = "g-eth"\n[positions.roles]\nagent = "{AGENT1}"\nallowance = "2"\n'
                f'{ZODIAC}[positions.roles.key]\nkey_env = "MEMBER_ETH"\n',
                f'guardian = "g-arb"\n[positions.roles]\nagent = "{AGENT2}"\nallowance = "3"\n'
                f"{ZODIAC}",
            )
        )
        + '[sinks.autonomous.role_key]\nkey_env = "MEMBER_DEFAULT"\n'
    )
    s = _load(tmp_path, body)
    main, side = build_parts(s).positions
    assert (main.guardian, side.guardian) == (G1, G2)  # each sized from its own wallet
    assert main.guardian_config is not None and main.guardian_config.name == "g-eth"
    assert side.guardian_config is not None and side.guardian_config.name == "g-arb"
    assert main.role is not None and side.role is not None
    assert (main.role.agent, side.role.agent) == (AGENT1, AGENT2)
    assert main.immediate and side.immediate
    # `roles check` without --position: every position with a role, each on its own Safe
    checked = role_positions(s, None)
    assert [(p.name, p.chain.name) for p in checked] == [("main", "eth"), ("side", "arb")]
    assert str(role_config(s, side).allowance) == "3"
    t1, t2 = role_module(s, main), role_module(s, side)
    assert (t1.safe, t2.safe) == (SAFE1, SAFE2) and t1.module != t2.module
    # the member's key: the position's own, else sinks.autonomous.role_key
    assert t1.key is not None and t1.key.key_env == "MEMBER_ETH"
    assert t1.key_label == "positions[main].roles.key"
    assert t2.key is not None and t2.key.key_env == "MEMBER_DEFAULT"
    assert (t1.agent, t2.agent) == (AGENT1, AGENT2)  # the key must be the member's


def test_a_position_without_its_own_takes_none_of_the_others(tmp_path: Path) -> None:
    s = _load(tmp_path, CHAINS + GUARDIANS + _positions(('guardian = "g-arb"\n', "")))
    main, side = build_parts(s).positions
    assert main.guardian == G2 and side.guardian is None and side.guardian_config is None
    assert not main.immediate and main.role is None


def test_the_single_position_sections_keep_working(tmp_path: Path) -> None:
    body = (
        f'[chain]\nchain_id = 1\nrpc_url = "http://127.0.0.1:1"\npool_addresses_provider = "{PAP}"\n'
        f'[position]\naccount = "{SAFE1}"\nmultisend_call_only = "{MS}"\nexecution = "autonomous"\n'
        f'[guardian]\naccount = "{G1}"\nkey_env = "G_ETH"\n'
        f'[roles]\nagent = "{AGENT1}"\nallowance = "2"\n{ZODIAC}'
    )
    s = _load(tmp_path, body)
    (p,) = build_parts(s).positions
    assert p.guardian == G1 and p.guardian_config == s.guardian
    assert p.role == s.roles and p.immediate
    assert role_module(s, p).key_label == "sinks.autonomous.role_key"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            CHAINS + GUARDIANS + _positions(("", 'guardian = "g-op"\n')),
            r"positions\[1\]\.guardian = 'g-op' is not a \[\[guardians\]\] name "
            r"\(\['g-eth', 'g-arb'\]\)",
        ),
        (
            CHAINS + f'[[guardians]]\naccount = "{G1}"\nkey_env = "G"\n' + _positions(),
            r"guardians\[0\]\.name: each \[\[guardians\]\] entry needs a name",
        ),
        (
            CHAINS + GUARDIANS + f'[guardian]\naccount = "{G1}"\nkey_env = "G"\n' + _positions(),
            r"\[guardian\] and \[\[guardians\]\]: use one",
        ),
        (
            CHAINS + GUARDIANS.replace('name = "g-arb"', 'name = "g-eth"') + _positions(),
            r"\[\[guardians\]\]: \['g-eth'\] appear more than once",
        ),
        (  # the key never comes from the file
            CHAINS
            + f'[[guardians]]\nname = "g"\naccount = "{G1}"\nkey = "0x{"11" * 32}"\n'
            + _positions(),
            r"guardians\.0\.key: Extra inputs are not permitted",
        ),
        (
            CHAINS
            + _positions(("", f'[positions.roles]\nagent = "{AGENT2}"\n'))
            + f'[roles]\nagent = "{AGENT1}"\nposition = "side"\n',
            r"positions\[1\]\.roles and \[roles\] both put a role on this position",
        ),
        (
            CHAINS + _positions(("", f'[positions.roles]\nagent = "{AGENT2}"\nposition = "x"\n')),
            r"positions\[1\]\.roles\.position: a position's own role is on that position",
        ),
        (
            CHAINS + _positions() + f'[roles]\nagent = "{AGENT1}"\nposition = "sidee"\n',
            r"roles\.position = 'sidee' is not a \[\[positions\]\] name",
        ),
    ],
)
def test_errors_name_the_entry(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, body)


def test_a_named_guardians_key_errors_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _load(tmp_path, CHAINS + GUARDIANS + _positions())
    monkeypatch.delenv("G_ARB", raising=False)
    with pytest.raises(ConfigError, match=r"^guardians\.g-arb\.key_env names G_ARB, which is not"):
        load_guardian_key(s.guardians[1])
    secret = "0x" + "6a" * 32
    monkeypatch.setenv("G_ARB", secret)
    with pytest.raises(ConfigError) as e:  # another account's key: named, never shown
        load_guardian_key(s.guardians[1])
    assert "guardians.g-arb.account" in str(e.value) and secret[2:] not in str(e.value)
