"""Configuration: one TOML file plus ``HEDGE_AGENT_*`` environment variables (env wins;
nested keys use ``__``, e.g. ``HEDGE_AGENT_CHAIN__RPC_URL``). Unknown keys are errors, so a
typo is reported instead of silently ignored. A devnet deployment file fills chain addresses.

This module is the composition root's view of configuration: it may import the config
models of every stage.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.collectors.config import CollectorsConfig
from agent.collectors.onchain import ChainConfig
from agent.core.address import Address
from agent.core.errors import ConfigError, DevnetError
from agent.core.market import FeedConfig
from agent.planner.uniswap import UniswapConfig
from agent.policy.config import PolicyConfig
from agent.signals.config import SignalsConfig
from agent.sinks.config import SinksConfig


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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    backfill_hours: float = Field(60.0, ge=0)  # on-chain history read at start-up (archive/anvil)
    backfill_step_s: int = Field(3600, gt=0)


class WatchConfig(BaseModel):
    """What the signals watch beyond the configured chain's own market."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    protocols: tuple[str, ...] = ("aave-v3",)  # DefiLlama slugs with a tvl.<slug>.total series
    stablecoins: tuple[str, ...] = ("USDC", "USDT", "DAI")  # reserves S4 watches
    collateral_assets: tuple[str, ...] = ("eth", "btc")  # S6 prices, S7 closes, S8 betas


class PositionConfig(BaseModel):
    """The account whose position the agent protects."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    account: Address | None = None
    kind: Literal["safe", "eoa"] = "safe"
    multisend_call_only: Address | None = None
    topup_asset: str = "WETH"
    repay_asset: str | None = "USDC"  # debt asset for the repay alternative; None: top-ups only
    # On the devnet, which Safe of the deployment file this position is ("safe_lean": the
    # empty-wallet one); ignored when ``account`` is set.
    deployment_safe: Literal["safe", "safe_lean"] = "safe"


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
    sinks: SinksConfig = SinksConfig()
    collectors: CollectorsConfig = CollectorsConfig()
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


def _format_validation(origin: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return f"{origin}: invalid configuration: " + "; ".join(parts) + more


def load_settings(path: str | Path | None, *, resolve_deployment: bool = True) -> Settings:
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
    if settings.chain.deployment and resolve_deployment:
        settings = apply_deployment(settings, Path(settings.chain.deployment))
    return settings


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


def apply_deployment(settings: Settings, path: Path) -> Settings:
    """Fill chain and position addresses from a devnet deployment file; explicit values win."""
    try:
        dep = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DevnetError(
            f"devnet is not up: no deployment file at {path} (run `hedge-agent devnet up`)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path}: deployment file is not valid JSON: {exc}") from None
    try:
        c = settings.chain
        d = chain_config_from_deployment(dep, name=c.name, protocol=c.protocol)
        chain = c.model_copy(
            update={
                "rpc_url": c.rpc_url if c.rpc_url.get_secret_value() else d.rpc_url,
                "chain_id": _deployment_chain_id(c, d.chain_id, path),
                "pool_addresses_provider": c.pool_addresses_provider or d.pool_addresses_provider,
                "reserves": c.reserves or d.reserves,
                "accounts": c.accounts or d.accounts,
                "feeds": dict(c.feeds) or d.feeds,
                "perps": dict(c.perps) or d.perps,
                "multicall3": d.multicall3,
            }
        )
        pos = settings.position
        position = pos.model_copy(
            update={
                "account": pos.account or dep[pos.deployment_safe]["address"],
                "multisend_call_only": pos.multisend_call_only
                or dep["safe"]["multisend_call_only"],
            }
        )
        opt = settings.options
        premia = dep.get("premia")
        if premia and not opt.configured:
            opt = opt.model_copy(
                update={
                    k: premia[k]
                    for k in ("pool_factory", "oracle_adapter", "erc20_router", "base", "quote")
                }
            )
        uni = settings.uniswap
        if dep.get("uniswap") and not uni.configured:
            u = dep["uniswap"]
            uni = uni.model_copy(
                update={
                    "factory": u["factory"],
                    "swap_router02": u["swap_router02"],
                    "quoter_v2": u["quoter_v2"],
                    "fees": {s: p["fee"] for s, p in u["pools"].items()},
                }
            )
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
