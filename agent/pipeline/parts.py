"""Chains and positions as typed records, built once from the parsed settings.

``Settings`` is the configuration file as parsed; :func:`build_parts` turns it into what the
stages work with: one :class:`Chain` per chain (``[chain]``, or each ``[[chains]]`` entry) with
its market, RPC URLs, fork, sinks, DEX and put venue, one :class:`Position` per protected
account, and the :class:`PutLadder` (where the put ladder is bought, by whom). The composition
root (``agent.app.App``) calls it once; every stage after configuration takes these records.

A position's chain is always part of its identity: :attr:`Position.key_scope` (the chain id)
is in every action and idempotency key of its top-ups, on one chain as on several, so adding a
chain to the configuration never changes the keys of the positions already there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from agent.collectors.onchain import ChainConfig
from agent.config import (
    ChainSection,
    OptionsConfig,
    PositionConfig,
    RolesConfig,
    Settings,
    SimulatorConfig,
)
from agent.core.errors import ConfigError
from agent.planner.uniswap import UniswapConfig
from agent.policy.guard import GuardConfig
from agent.sinks.config import SinksConfig
from agent.sinks.guardian import GuardianConfig


@dataclass(frozen=True)
class Chain:
    """One chain the agent reads and proposes on. ``config`` is what the collectors read (its
    RPC URL and fallback pool ``rpc_urls``, the market addresses, and every account to read:
    the configured ones and each position's); ``fork`` the simulator settings of its fork (its
    block lag); ``sinks`` its proposal sinks (its Safe service); ``dex`` the swap venue of a
    deleverage; ``venue`` its put venue (maybe not configured)."""

    config: ChainConfig
    dex: UniswapConfig
    venue: OptionsConfig
    fork: SimulatorConfig
    sinks: SinksConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def chain_id(self) -> int:
        return self.config.chain_id

    @property
    def has_rpc(self) -> bool:
        return bool(self.config.rpc_url.get_secret_value())


@dataclass(frozen=True)
class Position:
    """One protected account on one chain. ``account`` None: the chain's first configured
    account (a single chain without ``position.account``). ``guard``: its liquidation guard
    (``[guard]`` merged with the position's overrides)."""

    name: str
    chain: Chain
    account: str | None
    kind: Literal["safe", "eoa"] = "safe"
    multisend_call_only: str | None = None
    topup_asset: str = "WETH"
    repay_asset: str | None = "USDC"
    target_health_factor: Decimal | None = None
    guard: GuardConfig | None = None  # [guard] with the position's overrides
    execution: Literal["proposal", "autonomous"] = "proposal"
    # its protection is sent at once through the Roles module (autonomous, with [roles]):
    # mined within a block or two, so a deleverage takes the immediate slippage bound
    immediate: bool = False
    # autonomous with a guardian protecting it: the guardian's account, which pays (and sizes)
    # the top-up and repay from its own wallet
    guardian: str | None = None
    # the guardian that protects it ([[guardians]] entry it names, or [guardian] when that is
    # this position's), autonomous or not (`check`, `status` and /metrics show its balances)
    guardian_config: GuardianConfig | None = None
    # its protector role (its own [positions.roles], or [roles] when that is on this position)
    role: RolesConfig | None = None

    @property
    def key_scope(self) -> str:
        """What keeps the keys of the same account on two chains apart: its chain id, always
        (one chain or several)."""
        return str(self.chain.chain_id)


@dataclass(frozen=True)
class PutLadder:
    """Where the one put ladder is bought: the chain whose venue prices it, the buying account
    (a position, or ``options.account``) and the venue with the ladder's slippage and lot. It
    hedges every position's collateral, wherever the position is."""

    chain: Chain
    buyer: Position
    venue: OptionsConfig


@dataclass(frozen=True)
class Parts:
    """Everything :func:`build_parts` reads from the settings, in configuration order."""

    chains: tuple[Chain, ...]
    positions: tuple[Position, ...]
    puts: PutLadder | None
    # the position whose chain's sinks record the S&P 500 ticket (sinks.spx_ticket_position)
    spx: Position | None = None

    @property
    def several(self) -> bool:
        return len(self.chains) > 1

    def chain(self, name: str) -> Chain:
        for c in self.chains:
            if c.name == name:
                return c
        raise ConfigError(f"no chain named {name!r} (chains: {[c.name for c in self.chains]})")

    def position(self, name: str | None) -> Position:
        """The position named ``name``; without a name the one configured position."""
        names = ", ".join(p.name or "(unnamed)" for p in self.positions)
        if name is None:
            if len(self.positions) > 1:
                raise ConfigError(f"several positions: give --position ({names})")
            return self.positions[0]
        for p in self.positions:
            if p.name == name:
                return p
        raise ConfigError(f"no position named {name!r} (positions: {names})")


def proposer_positions(parts: Parts) -> list[tuple[Position, PutLadder | None]]:
    """Who proposes what: each position on its own chain; the put ladder goes to the position
    that buys it (``options.chain``/``options.account``), or to a proposer of its own when its
    buyer is no configured position."""
    puts = parts.puts
    out = [(p, puts if puts is not None and p == puts.buyer else None) for p in parts.positions]
    if puts is not None and puts.buyer not in parts.positions:
        out.append((puts.buyer, puts))
    return out


def lists_comet(settings: Settings, chain: Chain) -> bool:
    """Whether the configured Comet markets are read on ``chain``: the chain
    ``collectors.comet.chain`` names (the one chain when not named)."""
    name = settings.collectors.comet.chain
    return name == chain.name if name is not None else len(settings.chains) <= 1


def build_parts(settings: Settings) -> Parts:
    """The chains, positions and put ladder of the settings (``[chain]`` + ``[position]``, or
    ``[[chains]]`` + ``[[positions]]``)."""
    parts = _several(settings) if settings.chains else _single(settings)
    return replace(parts, spx=_spx_position(settings, parts))


def _spx_position(s: Settings, parts: Parts) -> Position | None:
    name = s.sinks.spx_ticket_position
    if name is not None:
        return parts.position(name)
    if parts.puts is not None:
        return parts.puts.buyer
    if len(parts.positions) == 1:
        return parts.positions[0]
    return None  # several positions, no ladder, none named: no ticket (the daemon says so)


def _accounts(c: ChainConfig, wanted: list[str]) -> ChainConfig:
    # the chain's snapshot reads every position on it (and the put buyer), listed or not
    accounts = tuple(dict.fromkeys([*c.accounts, *wanted]))
    fields = {k: getattr(c, k) for k in ChainConfig.model_fields}
    return ChainConfig.model_validate(fields | {"accounts": accounts})


def _position(s: Settings, p: PositionConfig, chain: Chain, name: str) -> Position:
    guardian = _guardian(s, p, name)
    role = _role(s, p, name)
    autonomous = p.execution == "autonomous"
    return Position(
        name=name,
        chain=chain,
        account=p.account,
        kind=p.kind,
        multisend_call_only=p.multisend_call_only,
        topup_asset=p.topup_asset,
        repay_asset=p.repay_asset,
        target_health_factor=p.target_health_factor,
        guard=s.guard.record(p.guard),
        execution=p.execution,
        immediate=autonomous and role is not None,
        guardian=str(guardian.account) if autonomous and guardian is not None else None,
        guardian_config=guardian,
        role=role,
    )


def _guardian(s: Settings, p: PositionConfig, name: str) -> GuardianConfig | None:
    """The position's guardian: the [[guardians]] entry it names; else [guardian] when it is
    this position's (the one position, or the one ``guardian.position`` names)."""
    if p.guardian is not None:
        return next(g for g in s.guardians if g.name == p.guardian)  # validated at load
    g = s.guardian
    if g.account is None:
        return None
    return g if not s.multi_chain or g.position == name else None


def _role(s: Settings, p: PositionConfig, name: str) -> RolesConfig | None:
    """The position's protector role: its own ``[positions.roles]``; else ``[roles]`` when it
    is on this position (the one position, or the one ``roles.position`` names)."""
    if p.roles is not None:
        return p.roles
    r = s.roles
    if not r.configured:
        return None
    return r if not s.multi_chain or r.position == name else None


def _single(s: Settings) -> Parts:
    wanted = [s.position.account] if s.position.account else []
    chain = Chain(
        config=_accounts(s.chain, wanted),
        dex=s.uniswap,
        venue=s.options,
        fork=s.simulator,
        sinks=s.sinks,
    )
    # one position keeps the records' single-chain shape: named only when the file names it
    position = _position(s, s.position, chain, s.position.name or "")
    o = s.options
    puts = PutLadder(chain, position, o) if o.enabled and o.configured else None
    return Parts((chain,), (position,), puts)


def _default_name(chain: str, who: str) -> str:
    short = f"{who[:6]}..{who[-4:]}" if who.startswith("0x") else who
    return f"{chain}:{short}"


def _several(s: Settings) -> Parts:
    o = s.options
    chains: list[Chain] = []
    for c in s.chains:
        wanted = [p.account for p in s.positions if p.chain == c.name and p.account]
        if o.account is not None and o.chain in (None, c.name):
            wanted.append(o.account)
        chains.append(_chain(s, c, wanted))
    by_name = {c.name: c for c in chains}
    positions = tuple(
        _position(
            s,
            p,
            by_name[str(p.chain)],
            p.name or _default_name(str(p.chain), p.account or p.deployment_safe),
        )
        for p in s.positions
    )
    return Parts(tuple(chains), positions, _ladder(s, chains, positions))


def _chain(s: Settings, c: ChainSection, wanted: list[str]) -> Chain:
    fork = s.simulator
    if c.block_lag is not None:
        fork = fork.model_copy(update={"block_lag": c.block_lag})
    sinks = s.sinks
    if c.safe_service_url is not None:
        service = sinks.safe_service.model_copy(update={"base_url": c.safe_service_url})
        sinks = sinks.model_copy(update={"safe_service": service})
    if c.private_rpc_url is not None and c.private_rpc_url.get_secret_value():
        # this chain's autonomous sends go to its own private RPC
        auto = sinks.autonomous.model_copy(update={"private_rpc_url": c.private_rpc_url})
        sinks = sinks.model_copy(update={"autonomous": auto})
    return Chain(
        config=_accounts(c, wanted), dex=c.uniswap, venue=c.options, fork=fork, sinks=sinks
    )


def _ladder(s: Settings, chains: list[Chain], positions: tuple[Position, ...]) -> PutLadder | None:
    """The chain of ``options.chain`` (default: the first chain with a configured venue) and
    its buyer (``options.account``, default the first position there)."""
    o = s.options
    chain = next(
        (
            c
            for c in chains
            if c.name == o.chain or (o.chain is None and c.venue.enabled and c.venue.configured)
        ),
        None,
    )
    if chain is None:
        return None
    venue = chain.venue.model_copy(
        update={
            "enabled": o.enabled and chain.venue.enabled,
            "slippage_bps": o.slippage_bps,
            "lot_wad": o.lot_wad,
        }
    )
    if not (venue.enabled and venue.configured):
        return None
    here = [p for p in positions if p.chain.name == chain.name]
    # no position on the venue's chain: the first position's account buys there
    buyer = here[0] if here else _buyer(positions[0], chain, positions[0].account)
    if o.account is not None and str(buyer.account).lower() != o.account.lower():
        buyer = _buyer(buyer, chain, o.account)
    return PutLadder(chain, buyer, venue)


def _buyer(like: Position, chain: Chain, account: str | None) -> Position:
    """A put buyer that is no configured position: ``account`` on ``chain``, signing as
    ``like`` does (its kind and MultiSend), and protecting nothing: none of ``like``'s guard,
    target, guardian, role or autonomous execution (those belong to ``like``'s own chain)."""
    name = _default_name(chain.name, account) if account is not None else like.name
    return Position(
        name, chain, account, kind=like.kind, multisend_call_only=like.multisend_call_only
    )
