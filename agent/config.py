"""Configuration: one TOML file plus ``HEDGE_AGENT_*`` environment variables (env wins;
nested keys use ``__``, e.g. ``HEDGE_AGENT_CHAIN__RPC_URL``). Unknown keys are errors, so a
typo is reported instead of silently ignored. A devnet deployment file fills chain addresses.

This module is the composition root's view of configuration: it may import the config
models of every stage.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.collectors.config import CollectorsConfig
from agent.collectors.onchain import ChainConfig
from agent.core.address import Address
from agent.core.errors import ConfigError, DevnetError
from agent.core.market import FeedConfig
from agent.planner.uniswap import UniswapConfig
from agent.policy.config import PolicyConfig
from agent.policy.guard_config import GuardOverrides, GuardSection
from agent.signals.config import SignalsConfig
from agent.sinks.config import KeySource, SinksConfig
from agent.sinks.guardian import GuardianConfig


class HttpEndpointConfig(BaseModel):
    """``/metrics``, ``/healthz`` and ``/readyz``; off when ``listen`` is empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    listen: str = Field("", pattern=r"^$|^(\[[0-9a-fA-F:]+\]|[^:\s]+):[0-9]{1,5}$")


class AgentSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tick_interval_s: float = Field(15.0, gt=0)
    store_path: str = "var/agent.sqlite"
    journal_path: str = "var/proposals.jsonl"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # The daemon halts when ticks have failed `error_budget` times in a row AND for at least
    # `error_budget_s` seconds: a burst of failures at a short interval is not an outage.
    error_budget: int = Field(5, ge=1)
    error_budget_s: float = Field(120.0, ge=0)
    tick_timeout_s: float = Field(300.0, gt=0)  # a whole tick's deadline
    # /readyz: a dependency checked every tick (the chain RPC, the store) whose last check is
    # older than this is not ready (a hung tick checks nothing). None: max(30, 2 ticks).
    readiness_max_age_s: float | None = Field(None, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    backfill_hours: float = Field(60.0, ge=0)  # on-chain history read at start-up (archive/anvil)
    backfill_step_s: int = Field(3600, gt=0)
    http: HttpEndpointConfig = HttpEndpointConfig()


class WatchConfig(BaseModel):
    """What the signals watch beyond the configured chain's own market."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    protocols: tuple[str, ...] = ("aave-v3",)  # DefiLlama slugs with a tvl.<slug>.total series
    stablecoins: tuple[str, ...] = ("USDC", "USDT", "DAI")  # reserves S4 watches
    collateral_assets: tuple[str, ...] = ("eth", "btc")  # S6 prices, S7 closes, S8 betas


class RolesConfig(BaseModel):
    """The "protector" role (Zodiac Roles v2.1, ``hedge-agent roles plan``/``check``): the
    agent's key may withdraw, swap and repay for the Safe within a daily allowance, nothing
    else. Off unless ``agent`` is set. A role is one Safe's: ``[roles]`` (the one position, or
    ``roles.position``), or a position's own ``[positions.roles]``. The devnet deployment fills the three Zodiac addresses;
    elsewhere give the chain's Roles v2.1 mastercopy, ModuleProxyFactory and MultiSendUnwrapper."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: Address | None = None  # the agent's key: the role's only member
    # [roles] with [[positions]]: the position (its Safe) the role is on; a position's own
    # [positions.roles] table is that position's and leaves this unset
    position: str | None = None
    # the member's signing key for autonomous sends (default: sinks.autonomous.role_key)
    key: KeySource | None = None
    role_key: str = Field("hedge-agent-protector", min_length=1, max_length=31)
    # Collateral (the position's topup_asset) that may leave Aave, and be swapped, per UTC day,
    # in whole tokens: the daily cap the chain enforces.
    allowance: Decimal | None = Field(None, gt=0)
    module: Address | None = None  # an installed module elsewhere than where `roles plan` puts it
    salt_nonce: int = Field(0, ge=0)  # CREATE2 salt of the module proxy
    from_block: int = Field(0, ge=0)  # `roles check` reads the module's events from here
    mastercopy: Address | None = None
    module_proxy_factory: Address | None = None
    multisend_unwrapper: Address | None = None

    @property
    def configured(self) -> bool:
        return self.agent is not None


class PositionConfig(BaseModel):
    """The account whose position the agent protects (``[position]``, or one entry of
    ``[[positions]]``, where ``chain`` names its chain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")  # default: chain:account
    chain: str | None = None  # [[positions]]: the [[chains]] entry the position is on
    # The health factor a protection restores for this position (default: policy's).
    target_health_factor: Decimal | None = Field(None, gt=1)
    account: Address | None = None
    kind: Literal["safe", "eoa"] = "safe"
    multisend_call_only: Address | None = None
    topup_asset: str = "WETH"
    repay_asset: str | None = "USDC"  # debt asset for the repay alternative; None: top-ups only
    # On the devnet, which Safe of the deployment file this position is ("safe_lean": the
    # empty-wallet one); ignored when ``account`` is set.
    deployment_safe: Literal["safe", "safe_lean"] = "safe"
    # "autonomous": this position's protection (guard and layer rule: top-up, repay,
    # deleverage; never puts) is SENT at once by [guardian] or the [roles] member, through the
    # durable live path (sinks/autonomous.py). Default: proposals for the signers only.
    execution: Literal["proposal", "autonomous"] = "proposal"
    # this position's liquidation guard, where it differs from [guard]
    guard: GuardOverrides | None = None
    # autonomous: the [[guardians]] entry (by name) that pays this position's top-ups and
    # repays; unset: [guardian] when it protects this position (the one position, or the one
    # guardian.position names)
    guardian: str | None = None
    # this position's own protector role (its Safe's); unset: [roles] when it is on this position
    roles: RolesConfig | None = None


class OptionsConfig(BaseModel):
    """The options venue for deeper out-of-the-money puts (Premia v3 pool interface). The devnet
    deployment fills the addresses; on a chain without a venue leave it disabled."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    venue: Literal["premia-v3"] = "premia-v3"
    pool_factory: Address | None = None
    oracle_adapter: Address | None = None
    erc20_router: Address | None = None
    base: Address | None = None
    quote: Address | None = None
    quote_decimals: int = Field(6, ge=0, le=36)
    slippage_bps: int = Field(100, ge=0, le=5_000)  # premiumLimit = quote x (1 + bps/1e4)
    lot_wad: int = Field(10**16, gt=0)  # contract sizes round down to this (18 decimals)
    # With [[chains]]: the chain whose venue buys the put ladder (default: the first chain with
    # a venue) and the buying account (default: the first position on that chain). The ladder
    # hedges every position's collateral, wherever the position is.
    chain: str | None = None
    account: Address | None = None

    @property
    def configured(self) -> bool:
        return None not in (
            self.pool_factory,
            self.oracle_adapter,
            self.erc20_router,
            self.base,
            self.quote,
        )


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    block_lag: int = Field(0, ge=0)  # fork this many blocks behind the tip
    call_timeout_s: float = Field(20.0, gt=0)  # a fork call; a frozen fork is then replaced
    # Restart the fork anvil between ticks once its resident memory passes this (anvil's memory
    # grows on a long-lived fork that is reset every tick); 0 = never.
    recycle_rss_mb: int = Field(1024, ge=0)
    # At start-up, plan and simulate each position's protection once on its fork and discard
    # it, so the fork's relay knows the position's working set and the first trigger's proposal
    # is as warm as the later ones (issue 23: autonomous protection within a block or two).
    warm_up: bool = True


class ChainSection(ChainConfig):
    """One entry of ``[[chains]]``: a chain and the venues on it. ``rpc_url_env`` names the
    environment variable holding the URL (a provider key stays out of files)."""

    rpc_url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    uniswap: UniswapConfig = UniswapConfig()  # the DEX a deleverage on this chain swaps through
    options: OptionsConfig = OptionsConfig()  # the put venue on this chain (if any)
    block_lag: int | None = Field(None, ge=0)  # this chain's fork lag (default: simulator's)
    safe_service_url: str | None = Field(None, pattern=r"^https?://")  # this chain's service
    # where this chain's autonomous sends go instead of its RPC (a private mempool; the URL may
    # embed a key): a private RPC is one chain's, so with several chains it is set per chain,
    # directly or from the environment variable ``private_rpc_url_env`` names
    private_rpc_url: SecretStr | None = None
    private_rpc_url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class ScenarioConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    feed: str | None = None  # scenario feed written by `hedge-agent devnet play`


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HEDGE_AGENT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )
    agent: AgentSection = AgentSection()
    chain: ChainConfig = ChainConfig()
    position: PositionConfig = PositionConfig()
    watch: WatchConfig = WatchConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    options: OptionsConfig = OptionsConfig()
    uniswap: UniswapConfig = UniswapConfig()  # the DEX a deleverage swaps through
    scenario: ScenarioConfig = ScenarioConfig()
    signals: SignalsConfig = SignalsConfig()
    policy: PolicyConfig = PolicyConfig()
    guard: GuardSection = GuardSection()  # the liquidation guard of every position
    sinks: SinksConfig = SinksConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    roles: RolesConfig = RolesConfig()
    # the protection-budget EOA (sinks/guardian.py); sends autonomous top-ups and repays
    guardian: GuardianConfig = GuardianConfig()
    # several guardians, each named; a position names its own (positions[i].guardian)
    guardians: tuple[GuardianConfig, ...] = ()
    # Several chains and positions under one budget (instead of [chain] and [position]).
    chains: tuple[ChainSection, ...] = ()
    positions: tuple[PositionConfig, ...] = ()
    # Where the values came from, for messages ("config/devnet.toml").
    origin: str = "defaults"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _chains_or_chain(self) -> Settings:
        """``[[chains]]`` + ``[[positions]]`` replace ``[chain]`` + ``[position]``; mixing them
        would leave one of the two silently unused."""
        if not self.chains:
            if self.positions:
                raise ValueError("[[positions]] needs [[chains]] (one chain: use [position])")
            return self
        clash = sorted({"chain", "position", "uniswap"} & self.model_fields_set)
        if clash:
            sections = ", ".join(f"[{c}]" for c in clash)
            raise ValueError(
                f"[[chains]] and [[positions]] replace {sections}: move them into the entries"
            )
        if self.options.configured or self.options.pool_factory:
            raise ValueError("with [[chains]], a put venue's addresses go under [chains.options]")
        names = [c.name for c in self.chains]
        # a devnet chain's id comes from its deployment file (checked once it is filled)
        ids = [
            str(c.chain_id)
            for c in self.chains
            if not c.deployment or "chain_id" in c.model_fields_set
        ]
        for seen in (names, ids):
            dup = {x for x in seen if seen.count(x) > 1}
            if dup:
                raise ValueError(f"[[chains]]: {sorted(dup)} appear more than once")
        if not self.positions:
            raise ValueError("[[chains]] needs at least one [[positions]] entry")
        for i, p in enumerate(self.positions):
            if p.chain not in names:
                raise ValueError(
                    f"positions[{i}].chain = {p.chain!r} is not a [[chains]] name ({names})"
                )
        with_deployment = {c.name for c in self.chains if c.deployment}
        for i, p in enumerate(self.positions):
            if p.account is None and p.chain not in with_deployment:
                raise ValueError(
                    f"positions[{i}].account is required (chain {p.chain!r} has no "
                    "deployment file to take it from)"
                )
        given = [p.name for p in self.positions if p.name]
        if len(given) != len(set(given)):
            raise ValueError("[[positions]]: two positions have the same name")
        comet = self.collectors.comet
        if comet.enabled and comet.markets:
            if comet.chain is None and len(names) > 1:
                raise ValueError(
                    "collectors.comet.chain: name the [[chains]] entry the Comet markets are on"
                )
            if comet.chain is not None and comet.chain not in names:
                raise ValueError(
                    f"collectors.comet.chain = {comet.chain!r} is not a [[chains]] name"
                )
        if self.options.chain is not None and self.options.chain not in names:
            raise ValueError(f"options.chain = {self.options.chain!r} is not a [[chains]] name")
        if len(self.chains) > 1:
            if self.sinks.live.enabled:
                raise ValueError(
                    "sinks.live.enabled supports one chain: its signer and private RPC are one "
                    "chain's; propose through Safe files or the Safe service for several"
                )
            auto = {p.chain for p in self.positions if p.execution == "autonomous"}
            shared = self.sinks.autonomous.private_rpc_url
            if len(auto) > 1 and shared is not None and shared.get_secret_value():
                raise ValueError(
                    "sinks.autonomous.private_rpc_url is one chain's, and autonomous positions "
                    f"are on {sorted(str(c) for c in auto)}: give each [[chains]] entry its "
                    "private_rpc_url (or private_rpc_url_env)"
                )
            if self.sinks.safe_service.enabled and any(
                c.safe_service_url is None for c in self.chains
            ):
                raise ValueError(
                    "sinks.safe_service with several chains: give each [[chains]] entry its "
                    "safe_service_url (the service is per chain)"
                )
        return self

    @model_validator(mode="after")
    def _one_sender(self) -> Settings:
        """Live sending signs the proposals' Safe batches with its own key; an autonomous
        position with a guardian sends the guardian's calls: on one daemon both would reach
        the live path, and the guardian's calls could go out from the live key."""
        positions = self.positions or (self.position,)
        guardians = self.guardian.account is not None or bool(self.guardians)
        if (
            self.sinks.live.enabled
            and guardians
            and any(p.execution == "autonomous" for p in positions)
        ):
            raise ValueError(
                "sinks.live.enabled with an autonomous position and a guardian: choose one "
                "sender (live signs Safe batches; autonomous sends the guardian's calls)"
            )
        return self

    @model_validator(mode="after")
    def _protectors(self) -> Settings:
        """Each position's guardian and role: ``[[guardians]]`` entries are named and each
        position names its own; ``[guardian]``/``[roles]`` stay the one position's (or the one
        their ``position`` names). Errors name the entry (``positions[i].guardian``)."""
        many = bool(self.positions)

        def where(i: int, key: str) -> str:
            return f"positions[{i}].{key}" if many else f"position.{key}"

        if self.guardians and self.guardian.account is not None:
            raise ValueError(
                "[guardian] and [[guardians]]: use one (with [[guardians]] each position "
                "names its guardian: positions[i].guardian)"
            )
        names: list[str] = []
        for i, g in enumerate(self.guardians):
            if not g.name:
                raise ValueError(f"guardians[{i}].name: each [[guardians]] entry needs a name")
            if g.account is None:
                raise ValueError(f"guardians[{i}].account: not set")
            if g.position is not None:
                raise ValueError(
                    f"guardians[{i}].position: a position names its guardian "
                    f"(positions[i].guardian = {g.name!r}), not the other way round"
                )
            names.append(g.name)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"[[guardians]]: {dup} appear more than once")
        position_names = [p.name for p in self.positions if p.name]
        for i, p in enumerate(self.positions or (self.position,)):
            if p.guardian is not None and p.guardian not in names:
                raise ValueError(
                    f"{where(i, 'guardian')} = {p.guardian!r} is not a [[guardians]] name ({names})"
                )
            if p.roles is not None:
                if p.roles.position is not None:
                    raise ValueError(
                        f"{where(i, 'roles.position')}: a position's own role is on that "
                        "position; leave it out"
                    )
                if not p.roles.configured:
                    raise ValueError(f"{where(i, 'roles.agent')}: the role member's address")
                if self.roles.configured and (
                    not many or (p.name is not None and self.roles.position == p.name)
                ):
                    raise ValueError(
                        f"{where(i, 'roles')} and [roles] both put a role on this position: "
                        "keep one"
                    )
        r = self.roles
        # default names (chain:account) are allowed too: checked when the parts are built
        if (
            many
            and r.position is not None
            and r.position not in position_names
            and (":" not in r.position)
        ):
            raise ValueError(
                f"roles.position = {r.position!r} is not a [[positions]] name ({position_names})"
            )
        return self

    @model_validator(mode="after")
    def _guards(self) -> Settings:
        """Each position's guard (``[guard]`` with its overrides) must be coherent."""
        for i, p in enumerate(self.positions or (self.position,)):
            try:
                self.guard.record(p.guard)
            except ValueError as e:
                where = f"positions[{i}].guard" if self.positions else "position.guard"
                raise ValueError(f"{where}: {e}") from None
        return self

    # The typed chains and positions the stages take are built from these settings once, by
    # the composition root (agent.pipeline.parts.build_parts).

    @property
    def multi_chain(self) -> bool:
        """Whether the file uses ``[[chains]]`` (labels then name ``chains.NAME``)."""
        return bool(self.chains)


ENV_PREFIX = "HEDGE_AGENT_"


def _env_naming(loc: tuple[int | str, ...]) -> str | None:
    """The ``HEDGE_AGENT_*`` variable that set the key at ``loc`` (or a key under it)."""
    want = (ENV_PREFIX + "__".join(str(x) for x in loc)).upper()
    return next((n for n in os.environ if n.upper().startswith(want)), None)


def _unknown_env_sections() -> None:
    """pydantic-settings reads only the variables of known sections: a misspelt one
    (``HEDGE_AGENT_SINKZ__NOTIFY__URLS``) would be ignored without a word. Variables without
    ``__`` are left alone: the tools' own (``HEDGE_AGENT_ANVIL``, ...) look like that."""
    sections = sorted(set(Settings.model_fields) - {"origin"})
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or "__" not in upper:
            continue
        section = upper[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if section not in sections:
            close = difflib.get_close_matches(section, sections, n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}__...?" if close else ""
            raise ConfigError(
                f"environment variable {name}: there is no configuration section "
                f"[{section}]{hint} (sections: {', '.join(sections)})"
            )


def _format_validation(origin: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        env = _env_naming(tuple(err["loc"]))
        parts.append(f"{loc}: {err['msg']}" + (f" (environment variable {env})" if env else ""))
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"{origin}: invalid configuration: " + "; ".join(parts) + more


def load_settings(path: str | Path | None, *, resolve_deployment: bool = True) -> Settings:
    _unknown_env_sections()
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        origin = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        settings = Settings(**data, origin=origin)
    except ValidationError as exc:
        raise ConfigError(_format_validation(origin, exc)) from None
    if settings.chains:
        settings = _chain_urls_from_env(settings)
        if resolve_deployment:
            settings = apply_chain_deployments(settings)
    elif settings.chain.deployment and resolve_deployment:
        settings = apply_deployment(settings, Path(settings.chain.deployment))
    return settings


def _chain_urls_from_env(settings: Settings) -> Settings:
    chains = []
    for c in settings.chains:
        for env, field in ((c.rpc_url_env, "rpc_url"), (c.private_rpc_url_env, "private_rpc_url")):
            if env:
                url = os.environ.get(env, "")
                if not url:
                    raise ConfigError(
                        f"{settings.origin}: chain {c.name!r}: {field}_env names "
                        f"{env}, which is not set in the environment"
                    )
                c = c.model_copy(update={field: SecretStr(url)})
        chains.append(c)
    return settings.model_copy(update={"chains": tuple(chains)})


def chain_config_from_deployment(dep: dict[str, Any], **overrides: Any) -> ChainConfig:
    """The chain section a devnet deployment file describes (every reserve, the Safe, every
    feed with a 1h heartbeat, every perp)."""
    return ChainConfig(
        **{
            "name": "devnet",
            "chain_id": int(dep["chain_id"]),
            "rpc_url": SecretStr(dep["rpc_url"]),
            "pool_addresses_provider": dep["aave"]["pool_addresses_provider"],
            "reserves": tuple(t["address"] for t in dep["tokens"].values()),
            "accounts": tuple(
                dep[k]["address"] for k in ("safe", "safe_lean") if isinstance(dep.get(k), dict)
            ),
            "feeds": {
                name: FeedConfig(address=addr, heartbeat_s=3600, asset=name.split("/")[0].lower())
                for name, addr in dep["chainlink"].items()
            },
            "perps": dict(dep["perps"]),
            "multicall3": dep.get("multicall3", ChainConfig().multicall3),
            **overrides,
        }
    )


def _deployment_chain_id(c: ChainConfig, deployed: int, path: Path) -> int:
    # A chain_id written beside `deployment =` must agree with it, not be silently replaced.
    if "chain_id" in c.model_fields_set and c.chain_id != deployed:
        raise ConfigError(
            f"chain.chain_id = {c.chain_id} but the deployment {path} is on chain {deployed}"
        )
    return deployed


def _read_deployment(path: Path) -> dict[str, Any]:
    try:
        dep: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DevnetError(
            f"devnet is not up: no deployment file at {path} (run `hedge-agent devnet up`)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path}: deployment file is not valid JSON: {exc}") from None
    return dep


def _filled_chain(c: ChainConfig, dep: dict[str, Any], path: Path) -> dict[str, Any]:
    """The chain fields a deployment fills (explicit values win), as an update."""
    d = chain_config_from_deployment(dep, name=c.name, protocol=c.protocol)
    return {
        "rpc_url": c.rpc_url if c.rpc_url.get_secret_value() else d.rpc_url,
        "chain_id": _deployment_chain_id(c, d.chain_id, path),
        "pool_addresses_provider": c.pool_addresses_provider or d.pool_addresses_provider,
        "reserves": c.reserves or d.reserves,
        "accounts": c.accounts or d.accounts,
        "feeds": dict(c.feeds) or d.feeds,
        "perps": dict(c.perps) or d.perps,
        "multicall3": d.multicall3,
    }


def _filled_position(pos: PositionConfig, dep: dict[str, Any]) -> PositionConfig:
    return pos.model_copy(
        update={
            "account": pos.account or dep[pos.deployment_safe]["address"],
            "multisend_call_only": pos.multisend_call_only or dep["safe"]["multisend_call_only"],
        }
    )


def _filled_options(opt: OptionsConfig, dep: dict[str, Any]) -> OptionsConfig:
    premia = dep.get("premia")
    if premia and not opt.configured:
        return opt.model_copy(
            update={
                k: premia[k]
                for k in ("pool_factory", "oracle_adapter", "erc20_router", "base", "quote")
            }
        )
    return opt


def _filled_uniswap(uni: UniswapConfig, dep: dict[str, Any]) -> UniswapConfig:
    if dep.get("uniswap") and not uni.configured:
        u = dep["uniswap"]
        return uni.model_copy(
            update={
                "factory": u["factory"],
                "swap_router02": u["swap_router02"],
                "quoter_v2": u["quoter_v2"],
                "fees": {s: p["fee"] for s, p in u["pools"].items()},
            }
        )
    return uni


def apply_chain_deployments(settings: Settings) -> Settings:
    """``[[chains]]`` entries with a ``deployment`` file (a devnet chain) get their addresses,
    venues and positions filled from it, like ``apply_deployment`` for ``[chain]``."""
    chains: list[ChainSection] = []
    positions = list(settings.positions)
    for c in settings.chains:
        if not c.deployment:
            chains.append(c)
            continue
        path = Path(c.deployment)
        dep = _read_deployment(path)
        try:
            update = _filled_chain(c, dep, path) | {
                "options": _filled_options(c.options, dep),
                "uniswap": _filled_uniswap(c.uniswap, dep),
            }
            positions = [_filled_position(p, dep) if p.chain == c.name else p for p in positions]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: deployment file lacks {exc}") from None
        chains.append(c.model_copy(update=update))
    try:  # re-validated so the filled values are checked like hand-written ones
        return Settings(
            **settings.model_dump(exclude={"chains", "positions"}, exclude_unset=True),
            chains=[
                c.model_dump() | {"rpc_url": c.rpc_url, "private_rpc_url": c.private_rpc_url}
                for c in chains
            ],
            positions=[p.model_dump() for p in positions],
        )
    except ValidationError as exc:
        raise ConfigError(_format_validation(settings.origin, exc)) from None


def apply_deployment(settings: Settings, path: Path) -> Settings:
    """Fill chain and position addresses from a devnet deployment file; explicit values win."""
    dep = _read_deployment(path)
    try:
        c = settings.chain
        chain = c.model_copy(update=_filled_chain(c, dep, path))
        position = _filled_position(settings.position, dep)
        opt = _filled_options(settings.options, dep)
        uni = _filled_uniswap(settings.uniswap, dep)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: deployment file lacks {exc}") from None
    # Re-validate so the filled values are checked like hand-written ones.
    try:
        return Settings(
            **{
                **settings.model_dump(exclude={"chain", "position", "options", "uniswap"}),
                "options": opt.model_dump(),
                "uniswap": uni.model_dump(),
                "chain": chain.model_dump() | {"rpc_url": chain.rpc_url},
                "position": position.model_dump(),
            }
        )
    except ValidationError as exc:
        raise ConfigError(_format_validation(str(path), exc)) from None
