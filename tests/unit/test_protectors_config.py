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


async def test_each_chain_routes_a_draft_to_its_positions_own_guardian_and_role(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One chain's executor with two roles (two Safes) and two guardians: a deleverage goes to
    the role on its own Safe (its module, its member), one on a Safe without a role and a
    top-up sized for a guardian that is not this chain's stay proposals; a member key that is
    not the role's ``agent`` is refused at start; two roles sharing a member share its sender
    (one nonce sequence)."""
    from eth_account import Account

    from agent.core.rpc import RpcClient
    from agent.planner.draft import Draft, ProposalHeader
    from agent.planner.safe import SafeTx
    from agent.sinks.autonomous import AutonomousExecutor, NotRouted, RoleTarget
    from agent.sinks.config import AutonomousConfig, KeySource
    from agent.sinks.guardian import GuardianConfig

    keys = {n: "0x" + f"{n:02x}" * 32 for n in (0x11, 0x22, 0x33, 0x44)}
    addr = {n: Account.from_key(k).address for n, k in keys.items()}
    for n, k in keys.items():
        monkeypatch.setenv(f"K{n}", k)
    mod1, mod2 = (to_checksum_address(f"0x{n:040x}") for n in (0xD1, 0xD2))
    role1 = RoleTarget(SAFE1, mod1, b"r" * 32, KeySource(key_env="K17"), "a", addr[0x11])
    role2 = RoleTarget(SAFE2, mod2, b"r" * 32, KeySource(key_env="K34"), "b", addr[0x22])
    guardians = [
        GuardianConfig(name=f"g{n}", account=addr[n], key_env=f"K{n}") for n in (0x33, 0x44)
    ]

    def draft(safe: str, action: str, *, deleverage: bool, sender: str | None = None) -> Draft:
        header = ProposalHeader(
            id="p", idempotency_key="k", created_at="2026-01-01T00:00:00Z", chain="c",
            chain_id=1, block_number=1, account=safe, explanation=(), evidence={}, policy={},
        )  # fmt: skip
        st = SafeTx(safe=safe, to=MS, value=0, data="0x8d80ff0a", operation=1)
        return Draft(header=header, action=action, transactions=(),  # type: ignore[arg-type]
                     safe_tx=st if deleverage else None,
                     deleverage={"swap": 1} if deleverage else None, sender=sender)  # fmt: skip

    async with RpcClient("http://127.0.0.1:9") as rpc:  # never reached: routing reads nothing
        ex = AutonomousExecutor(AutonomousConfig(), guardians, (role1, role2), chain_id=1, rpc=rpc)
        r = await ex.route(draft(SAFE2, "deleverage", deleverage=True))
        assert (r.mode, r.sender.address, r.calls[0][0]) == ("role", addr[0x22], mod2)
        r = await ex.route(draft(SAFE1, "deleverage", deleverage=True))
        assert (r.sender.address, r.calls[0][0]) == (addr[0x11], mod1)
        with pytest.raises(NotRouted, match="no role on"):
            await ex.route(draft(G1, "deleverage", deleverage=True))
        with pytest.raises(NotRouted, match=f"needs the position's guardian .{G2} is not one"):
            await ex.route(draft(SAFE1, "repay_debt", deleverage=False, sender=G2))
        assert {s.address for s in ex.senders()} == {addr[n] for n in keys}
        shared = RoleTarget(SAFE2, mod2, b"r" * 32, KeySource(key_env="K17"), "b", addr[0x11])
        two = AutonomousExecutor(AutonomousConfig(), (), (role1, shared), chain_id=1, rpc=rpc)
        assert len(two.senders()) == 1
        wrong = RoleTarget(SAFE2, mod2, b"r" * 32, KeySource(key_env="K17"), "b.key", addr[0x22])
        with pytest.raises(ConfigError, match=r"b\.key holds the key of .*not of the role's"):
            AutonomousExecutor(AutonomousConfig(), (), (wrong,), chain_id=1, rpc=rpc)


def test_a_private_send_url_is_one_chains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chain's autonomous sends go to that chain's private RPC (``[[chains]]
    private_rpc_url`` or ``private_rpc_url_env``); one shared ``sinks.autonomous``
    private_rpc_url with autonomous positions on two chains is refused at load (one of the
    two chains' transactions would go to the other chain's endpoint)."""
    shared = (
        CHAINS
        + GUARDIANS
        + _positions()
        + '[sinks.autonomous]\nprivate_rpc_url = "http://127.0.0.1:7"\n'
    )
    with pytest.raises(
        ConfigError, match=r"sinks\.autonomous\.private_rpc_url is one chain's.*\['arb', 'eth'\]"
    ):
        _load(tmp_path, shared)
    monkeypatch.setenv("ARB_PRIVATE", "http://127.0.0.1:8/secret-key")
    per_chain = (
        CHAINS.replace(
            'name = "eth"\n', 'name = "eth"\nprivate_rpc_url = "http://127.0.0.1:7"\n'
        ).replace('name = "arb"\n', 'name = "arb"\nprivate_rpc_url_env = "ARB_PRIVATE"\n')
        + GUARDIANS
        + _positions()
    )
    eth, arb = build_parts(_load(tmp_path, per_chain)).chains
    got = [c.sinks.autonomous.private_rpc_url for c in (eth, arb)]
    assert [u.get_secret_value() if u else None for u in got] == [
        "http://127.0.0.1:7",
        "http://127.0.0.1:8/secret-key",
    ]
    assert "secret-key" not in repr(arb)  # a SecretStr: never in a log line
    monkeypatch.delenv("ARB_PRIVATE")
    with pytest.raises(
        ConfigError, match=r"chain 'arb': private_rpc_url_env names ARB_PRIVATE, which is not set"
    ):
        _load(tmp_path, per_chain)


async def test_check_names_a_guardian_no_position_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hedge-agent check``: each guardian's key (its entry named when it does not load) and a
    ``[[guardians]]`` entry that no position names (funded for nothing) are problems; the
    balances of the one in use are read on its position's chain (here an RPC that refuses,
    named with the chain)."""
    from agent.core.rpc import RetryPolicy, RpcClient
    from agent.ops.check import Checks, _check_guardian

    monkeypatch.setenv("G_ETH", "0x" + "6a" * 32)  # another account's key
    monkeypatch.delenv("G_ARB", raising=False)
    s = _load(tmp_path, CHAINS + GUARDIANS + _positions(('guardian = "g-eth"\n', "")))
    ck, notes = Checks(), []  # type: ignore[var-annotated]
    await _check_guardian(ck, s, lambda url: RpcClient(url, retry=RetryPolicy(attempts=1)), notes)
    assert len(ck.problems) == 4, ck.problems
    key_eth, key_arb, unused, unread = ck.problems
    assert key_eth.startswith("guardians.g-eth: the environment variable G_ETH holds the key of")
    assert "6a" * 8 not in key_eth  # the key is never shown
    assert key_arb == "guardians.g-arb: guardians.g-arb.key_env names G_ARB, which is not set"
    assert unused == "guardians[1] (g-arb): no position names it (positions[i].guardian)"
    assert unread.startswith("guardians.g-eth: cannot read its balances on eth (")
    assert notes == []


async def test_check_names_the_missing_account_of_a_single_guarded_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single ``[position]`` without ``account`` (the chain's first configured account) and
    a ``[guardian]``: ``check`` says the position needs its account (the guardian's balances
    are read for a Safe, and the daemon watches only positions that name one), not that the
    guardian must name a ``[[positions]]`` entry, which a single-position file has none of."""
    from agent.core.rpc import RetryPolicy, RpcClient
    from agent.ops.check import Checks, _check_guardian

    monkeypatch.setenv("G_ETH", "0x" + "6a" * 32)
    body = (
        f'[chain]\nchain_id = 1\nrpc_url = "http://127.0.0.1:1"\npool_addresses_provider = "{PAP}"\n'
        f'accounts = ["{SAFE1}"]\n[position]\nmultisend_call_only = "{MS}"\n'
        f'[guardian]\naccount = "{G1}"\nkey_env = "G_ETH"\n'
    )
    s = _load(tmp_path, body)
    ck, notes = Checks(), []  # type: ignore[var-annotated]
    await _check_guardian(ck, s, lambda url: RpcClient(url, retry=RetryPolicy(attempts=1)), notes)
    problems = [p for p in ck.problems if not p.startswith("guardian: the environment variable")]
    assert problems == [
        "guardian: the position it protects names no account: set position.account "
        "(the Safe whose balances and top-ups the guardian covers)"
    ]
