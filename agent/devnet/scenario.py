"""Play a scenario file (``config/scenarios/<name>.toml``) on the devnet.

Chain time advances one simulated hour at a time (``evm_increaseTime`` then at least one
block), so the agent can backfill history by reading state at past blocks. Feeds are updated
every hour, so their ``updatedAt`` stays fresh. Off-chain series the scenario carries (macro
prints, daily closes) are written to a feed file with absolute timestamps anchored at the
chain time when play starts. All of it is scenario data (``data_origin="scenario"``).
"""

from __future__ import annotations

import json
import time
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import structlog

from agent.core.anvil import PROJECT_ROOT
from agent.core.errors import DevnetError
from agent.core.units import MAX_UINT256, RAY, WAD
from agent.devnet.artifacts import forge_artifact, npm_artifact
from agent.devnet.chain import Chain
from agent.devnet.deploy import FEED_DECIMALS, RISKY_BORROWERS
from agent.devnet.uniswap import sync_pools
from agent.planner.uniswap import price_in_out_wad

log = structlog.get_logger(__name__)

SCENARIO_DIR = PROJECT_ROOT / "config" / "scenarios"
DEFAULT_FEED_PATH = PROJECT_ROOT / "out" / "devnet" / "scenario_feed.json"
HOUR = 3600
DAY = 86400
ACTIONS = ("withdraw", "set_skew", "borrow_to_utilisation")
INDEX_CLOSES = ("vix", "vix3m")  # daily index closes with no weekend session, like spx
INDEX_PATHS = ("spx", *INDEX_CLOSES)  # indices whose closes continue during the scenario


@dataclass(frozen=True)
class Event:
    hour: int
    action: str
    params: dict[str, Any]


@dataclass(frozen=True)
class MacroPrint:
    value: float
    released_hours_before_start: float


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str
    duration_hours: int
    prices: dict[str, list[tuple[float, float]]]  # feed -> [(hour, usd)]
    events: list[Event]
    liquidate: bool
    cpi: list[MacroPrint]
    ppi: list[MacroPrint]
    closes: dict[str, list[float]]  # btc/eth/spx/vix/vix3m, oldest first
    # S&P 500/VIX/VIX3M during the scenario: index -> [(hour, level)] (S8-S11 and the ticket)
    index_paths: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def price_at(self, feed: str, hour: float) -> float:
        return _interp(self.prices[feed], hour)


def scenario_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml":
        return p
    return SCENARIO_DIR / f"{name_or_path}.toml"


def load_scenario(name_or_path: str) -> Scenario:
    path = scenario_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DevnetError(f"no scenario file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DevnetError(f"scenario file {path} is not valid TOML: {exc}") from None
    try:
        return _parse(raw, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise DevnetError(f"scenario file {path} is malformed: {exc!r}") from None


def _parse(raw: dict[str, Any], path: Path) -> Scenario:
    def bad(msg: str) -> DevnetError:
        return DevnetError(f"scenario file {path}: {msg}")

    duration = int(raw["duration_hours"])
    if duration <= 0:
        raise bad("duration_hours must be positive")
    prices: dict[str, list[tuple[float, float]]] = {}
    for feed, pts in raw.get("prices", {}).items():
        parsed = [(float(h), float(p)) for h, p in pts]
        if not parsed or any(b[0] <= a[0] for a, b in pairwise(parsed)):
            raise bad(f"prices.{feed}: hours must be strictly increasing")
        if any(p <= 0 for _, p in parsed):
            raise bad(f"prices.{feed}: prices must be positive")
        prices[feed] = parsed
    events = []
    for ev in raw.get("events", []):
        params = dict(ev)
        hour, action = int(params.pop("hour")), str(params.pop("action"))
        if action not in ACTIONS:
            raise bad(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
        if not 0 <= hour <= duration:
            raise bad(f"event at hour {hour} is outside 0..{duration}")
        events.append(Event(hour, action, params))
    macro = raw.get("macro", {})
    closes = {
        k: [float(v) for v in raw.get("closes", {}).get(k, [])]
        for k in ("btc", "eth", "spx", *INDEX_CLOSES)
    }
    index_paths: dict[str, list[tuple[float, float]]] = {}
    for k, pts in raw.get("index_paths", {}).items():
        if k not in INDEX_PATHS:
            raise bad(f"index_paths.{k}: unknown index (expected one of {', '.join(INDEX_PATHS)})")
        parsed = [(float(h), float(v)) for h, v in pts]
        if not parsed or any(b[0] <= a[0] for a, b in pairwise(parsed)):
            raise bad(f"index_paths.{k}: hours must be strictly increasing")
        index_paths[k] = parsed
    return Scenario(
        name=str(raw.get("name", path.stem)),
        path=path,
        description=str(raw.get("description", "")),
        duration_hours=duration,
        prices=prices,
        events=sorted(events, key=lambda e: e.hour),
        liquidate=bool(raw.get("keeper", {}).get("liquidate", False)),
        cpi=[
            MacroPrint(float(p["value"]), float(p["released_hours_before_start"]))
            for p in macro.get("cpi", [])
        ],
        ppi=[
            MacroPrint(float(p["value"]), float(p["released_hours_before_start"]))
            for p in macro.get("ppi", [])
        ],
        closes=closes,
        index_paths=index_paths,
    )


# -- the feed file ------------------------------------------------------------------------


def _month_start(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp())


def _prev_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _macro_observations(key: str, prints: list[MacroPrint], start: int) -> list[dict[str, Any]]:
    """A print refers to the calendar month before the month it is released in (UTC).
    Walking newest to oldest, each month is also forced strictly before the next one's, so
    months never collide whatever the start date."""
    ordered = sorted(prints, key=lambda p: -p.released_hours_before_start)  # oldest first
    out: list[dict[str, Any]] = []
    limit: tuple[int, int] | None = None
    for p in reversed(ordered):
        released = int(start - p.released_hours_before_start * HOUR)
        rel = datetime.fromtimestamp(released, tz=UTC)
        ym = _prev_month(rel.year, rel.month)
        if limit is not None and ym >= limit:
            ym = _prev_month(*limit)
        limit = ym
        out.append(
            {
                "key": key,
                "ts": _month_start(*ym),
                "value": p.value,
                "unit": "index",
                "known_at": released,
            }
        )
    return out[::-1]


def _weekend(ts: int) -> bool:
    return datetime.fromtimestamp(ts, tz=UTC).weekday() >= 5


def _interp(pts: list[tuple[float, float]], hour: float) -> float:
    hours = [h for h, _ in pts]
    i = bisect_right(hours, hour)
    if i == 0:
        return pts[0][1]
    if i == len(pts):
        return pts[-1][1]
    (h0, p0), (h1, p1) = pts[i - 1], pts[i]
    return p0 + (p1 - p0) * (hour - h0) / (h1 - h0)


def build_feed(scenario: Scenario, start: int) -> dict[str, Any]:
    """Every off-chain observation the scenario carries, with absolute unix timestamps."""
    obs = _macro_observations("macro.cpi", scenario.cpi, start)
    obs += _macro_observations("macro.ppi", scenario.ppi, start)
    day0 = start - start % DAY
    units = {"btc": "usd", "eth": "usd", "spx": "index", "vix": "index", "vix3m": "index"}
    for asset, values in scenario.closes.items():
        n = len(values)
        for i, v in enumerate(values):
            ts = day0 - (n - i) * DAY  # the last close is the day before the start day
            if asset in ("spx", *INDEX_CLOSES) and _weekend(ts):
                continue  # no S&P 500 session on weekends
            # A daily close is known once its day has ended.
            obs.append(
                {
                    "key": f"close.{asset}",
                    "ts": ts,
                    "value": v,
                    "unit": units[asset],
                    "known_at": ts + DAY,
                }
            )
    # Crypto closes for days that end during the scenario, from the scenario's own price paths,
    # so daily series continue through the episode (known only when each day ends).
    for asset, feed in (("btc", "BTC/USD"), ("eth", "ETH/USD")):
        if feed not in scenario.prices:
            continue
        boundary = day0 + DAY
        while boundary <= start + scenario.duration_hours * HOUR:
            price = scenario.price_at(feed, (boundary - start) / HOUR)
            obs.append(
                {
                    "key": f"close.{asset}",
                    "ts": boundary - DAY,
                    "value": round(price, 2),
                    "unit": "usd",
                    "known_at": boundary,
                }
            )
            boundary += DAY
    # S&P 500/VIX/VIX3M closes for weekdays that end during the scenario, from its index paths.
    for index, pts in scenario.index_paths.items():
        boundary = day0 + DAY
        while boundary <= start + scenario.duration_hours * HOUR:
            if not _weekend(boundary - DAY):
                level = _interp(pts, (boundary - start) / HOUR)
                obs.append(
                    {
                        "key": f"close.{index}",
                        "ts": boundary - DAY,
                        "value": round(level, 2),
                        "unit": "index",
                        "known_at": boundary,
                    }
                )
            boundary += DAY
    obs.sort(key=lambda o: (o["key"], o["ts"]))
    return {
        "scenario": scenario.name,
        "source": f"scenario:{scenario.name}",
        "started_at": start,
        "observations": obs,
    }


def write_feed(feed: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(feed, indent=1) + "\n")
    tmp.replace(path)


# -- market state -------------------------------------------------------------------------


@dataclass(frozen=True)
class MarketState:
    block: int
    timestamp: int
    prices: dict[str, float]  # symbol -> USD (Aave oracle)
    tvl_usd: float  # sum of aToken supply x oracle price
    tvl_tokens: dict[str, float]  # aToken supply per reserve, whole tokens
    utilisation: dict[str, float]
    borrow_apr: dict[str, float]
    funding_per_day: dict[str, float]
    safe_health_factor: float
    lean_safe_health_factor: float | None = None  # the empty-wallet Safe, when deployed
    pool_prices: dict[str, float] = field(default_factory=dict)  # Uniswap V3, in USDC


def market_state(chain: Chain, dep: dict[str, Any], block: int | str = "latest") -> MarketState:
    blk = chain.block_number() if block == "latest" else int(block)
    pool = chain.at(dep["aave"]["pool"], npm_artifact("Pool"))
    oracle = chain.at(dep["aave"]["oracle"], npm_artifact("AaveOracle"))
    dp = chain.at(dep["aave"]["data_provider"], npm_artifact("AaveProtocolDataProvider"))
    erc20 = npm_artifact("MintableERC20")
    prices, tvl_tokens, util, apr = {}, {}, {}, {}
    tvl = 0.0
    for sym, t in dep["tokens"].items():
        price = (
            int(chain.call(oracle, "getAssetPrice", t["address"], block=blk)) / 10**FEED_DECIMALS
        )
        supply = int(chain.call(chain.at(t["a_token"], erc20), "totalSupply", block=blk))
        rd = chain.call(dp, "getReserveData", t["address"], block=blk)
        total_a, debt = int(rd[2]), int(rd[3]) + int(rd[4])
        prices[sym] = price
        tvl_tokens[sym] = supply / 10 ** t["decimals"]
        tvl += tvl_tokens[sym] * price
        util[sym] = debt / total_a if total_a else 0.0
        apr[sym] = int(rd[6]) / RAY
    funding = {
        name: int(
            chain.call(
                chain.at(addr, forge_artifact("PerpMarket")), "currentFundingRate", block=blk
            )
        )
        / WAD
        for name, addr in dep["perps"].items()
    }
    acct = chain.call(pool, "getUserAccountData", dep["safe"]["address"], block=blk)
    pool_prices = {}
    for sym, info in (dep.get("uniswap") or {}).get("pools", {}).items():
        pool_c = chain.at(info["address"], npm_artifact("UniswapV3Pool"))
        sqrt_p = int(chain.call(pool_c, "slot0", block=blk)[0])
        is0 = info["token0"] == dep["tokens"][sym]["address"]
        dec = dep["tokens"][sym]["decimals"], dep["tokens"]["USDC"]["decimals"]
        pool_prices[sym] = price_in_out_wad(sqrt_p, is0, *dec) / WAD
    lean = dep.get("safe_lean")
    lean_hf = (
        int(chain.call(pool, "getUserAccountData", lean["address"], block=blk)[5]) / WAD
        if lean
        else None
    )
    return MarketState(
        block=blk,
        timestamp=chain.timestamp(blk),
        prices=prices,
        tvl_usd=tvl,
        tvl_tokens=tvl_tokens,
        utilisation=util,
        borrow_apr=apr,
        funding_per_day=funding,
        safe_health_factor=int(acct[5]) / WAD,
        lean_safe_health_factor=lean_hf,
        pool_prices=pool_prices,
    )


# -- playing ------------------------------------------------------------------------------


@dataclass
class PlayResult:
    scenario: str
    started_at: int
    ended_at: int
    first_block: int
    last_block: int
    before: MarketState
    after: MarketState
    liquidations: list[dict[str, Any]] = field(default_factory=list)
    feed_path: Path | None = None
    chain_id: int = 0


class Player:
    def __init__(self, chain: Chain, dep: dict[str, Any], scenario: Scenario) -> None:
        self.chain, self.dep, self.sc = chain, dep, scenario
        self.deployer = dep["accounts"]["deployer"]
        self.whales = dep["accounts"]["whales"]
        self.pool = chain.at(dep["aave"]["pool"], npm_artifact("Pool"))
        self.dp = chain.at(dep["aave"]["data_provider"], npm_artifact("AaveProtocolDataProvider"))
        self.oracle = chain.at(dep["aave"]["oracle"], npm_artifact("AaveOracle"))
        self.erc20 = npm_artifact("MintableERC20")
        self.feeds = {
            n: chain.at(a, forge_artifact("MockV3Aggregator")) for n, a in dep["chainlink"].items()
        }
        self.perps = {n: chain.at(a, forge_artifact("PerpMarket")) for n, a in dep["perps"].items()}
        accounts = chain.accounts()
        self.liquidator = accounts[9] if len(accounts) > 9 else self.deployer
        self.liquidations: list[dict[str, Any]] = []
        # Several chains may play at once: every line names its chain.
        self.log = log.bind(chain_id=dep.get("chain_id"))
        for feed in scenario.prices:
            if feed not in self.feeds:
                raise DevnetError(f"scenario {scenario.name}: feed {feed!r} is not deployed")

    def token(self, symbol: str) -> dict[str, Any]:
        try:
            return dict(self.dep["tokens"][symbol])
        except KeyError:
            raise DevnetError(f"scenario {self.sc.name}: unknown asset {symbol!r}") from None

    def whale(self, idx: int) -> str:
        try:
            return str(self.whales[idx])
        except IndexError:
            raise DevnetError(f"scenario {self.sc.name}: no whale #{idx}") from None

    def hour(self, h: int) -> int:
        """Apply hour ``h``; return how many transactions it sent."""
        sent = 0
        for feed in self.sc.prices:
            answer = round(Decimal(str(self.sc.price_at(feed, h))) * 10**FEED_DECIMALS)
            self.chain.send(self.feeds[feed], "updateAnswer", int(answer), sender=self.deployer)
            sent += 1
        # A market maker swaps the Uniswap pools back to the new oracle price, so DEX quotes
        # follow the scenario instead of going stale.
        sent += sync_pools(self.chain, self.dep, self.oracle_prices())
        for ev in self.sc.events:
            if ev.hour == h:
                sent += self.apply(ev)
        if self.sc.liquidate:
            sent += self.keeper(h)
        return sent

    def oracle_prices(self) -> dict[str, int]:
        return {
            t["address"]: int(self.chain.call(self.oracle, "getAssetPrice", t["address"]))
            for t in self.dep["tokens"].values()
        }

    def apply(self, ev: Event) -> int:
        p = ev.params
        if ev.action == "withdraw":
            t, who = self.token(str(p["asset"])), self.whale(int(p["whale"]))
            want = int(Decimal(str(p["amount"])) * 10 ** t["decimals"])
            # Capped by the whale's deposit and the reserve's free liquidity, so replaying a
            # scenario on an already stressed market does not abort half-way.
            balance = int(
                self.chain.call(self.chain.at(t["a_token"], self.erc20), "balanceOf", who)
            )
            rd = self.chain.call(self.dp, "getReserveData", t["address"])
            free = int(rd[2]) - int(rd[3]) - int(rd[4])
            amount = min(want, balance, max(free, 0))
            if amount <= 0:
                self.log.info(
                    "devnet.scenario.withdraw_skipped",
                    hour=ev.hour,
                    whale=who,
                    asset=p["asset"],
                    data_origin="scenario",
                )
                return 0
            self.chain.send(self.pool, "withdraw", t["address"], amount, who, sender=who)
            self.log.info(
                "devnet.scenario.withdraw",
                hour=ev.hour,
                whale=who,
                asset=p["asset"],
                amount=amount / 10 ** t["decimals"],
                capped=amount < want,
                data_origin="scenario",
            )
            return 1
        if ev.action == "set_skew":
            market = self.perps.get(str(p["market"]))
            if market is None:
                raise DevnetError(f"scenario {self.sc.name}: unknown perp market {p['market']!r}")
            skew = int(Decimal(str(p["skew"])) * WAD)
            self.chain.send(market, "setSkew", skew, sender=self.deployer)
            self.log.info(
                "devnet.scenario.set_skew",
                hour=ev.hour,
                market=p["market"],
                skew=p["skew"],
                data_origin="scenario",
            )
            return 1
        # borrow_to_utilisation: borrow X so that (debt + X) / aToken supply = target.
        t, who = self.token(str(p["asset"])), self.whale(int(p["whale"]))
        target = Decimal(str(p["utilisation"]))
        rd = self.chain.call(self.dp, "getReserveData", t["address"])
        supply, debt = int(rd[2]), int(rd[3]) + int(rd[4])
        want = int(target * supply) - debt
        # Cap by the whale's borrowing power (base currency, 8 decimals) with a 1% margin.
        avail_base = int(self.chain.call(self.pool, "getUserAccountData", who)[2])
        price = int(self.chain.call(self.oracle, "getAssetPrice", t["address"]))
        cap = avail_base * 10 ** t["decimals"] * 99 // (price * 100)
        amount = min(want, cap, supply - debt)
        if amount <= 0:
            self.log.info(
                "devnet.scenario.borrow_skipped",
                hour=ev.hour,
                asset=p["asset"],
                utilisation=debt / supply if supply else 0.0,
                data_origin="scenario",
            )
            return 0
        self.chain.send(self.pool, "borrow", t["address"], amount, 2, 0, who, sender=who)
        self.log.info(
            "devnet.scenario.borrow",
            hour=ev.hour,
            whale=who,
            asset=p["asset"],
            amount=amount / 10 ** t["decimals"],
            target_utilisation=float(target),
            data_origin="scenario",
        )
        return 1

    def keeper(self, h: int) -> int:
        sent = 0
        weth, usdc = self.token("WETH")["address"], self.token("USDC")["address"]
        for user in RISKY_BORROWERS:
            acct = self.chain.call(self.pool, "getUserAccountData", user)
            debt, hf = int(acct[1]), int(acct[5])
            if debt == 0 or hf >= WAD:
                continue
            receipt = self.chain.send(
                self.pool,
                "liquidationCall",
                weth,
                usdc,
                user,
                MAX_UINT256,
                False,
                sender=self.liquidator,
            )
            self.liquidations.append(
                {
                    "hour": h,
                    "user": user,
                    "health_factor": hf / WAD,
                    "tx": receipt["transactionHash"].to_0x_hex(),
                }
            )
            self.log.info(
                "devnet.scenario.liquidation",
                hour=h,
                user=user,
                health_factor=hf / WAD,
                data_origin="scenario",
            )
            sent += 1
        return sent


def play(
    dep: dict[str, Any],
    scenario: Scenario,
    feed_path: Path | None = DEFAULT_FEED_PATH,
    *,
    pace: float = 0.0,
    on_hour: Callable[[int, MarketState], None] | None = None,
) -> PlayResult:
    """Run the scenario to the end. ``pace`` sleeps that many real seconds per simulated hour
    (for watching a live agent); ``on_hour`` gets the state after each hour."""
    hook = None if on_hour is None else (lambda h, _i, state: on_hour(h, state))
    return play_chains([dep], scenario, feed_path, pace=pace, on_hour=hook)[0]


def play_chains(
    deps: Sequence[dict[str, Any]],
    scenario: Scenario,
    feed_path: Path | None = DEFAULT_FEED_PATH,
    *,
    pace: float = 0.0,
    on_hour: Callable[[int, int, MarketState], None] | None = None,
) -> list[PlayResult]:
    """Play the scenario on several devnet chains in lockstep: every chain applies hour ``h``
    (concurrently, one thread per chain: each has its own anvil and client) before any applies
    ``h + 1``, so a paced run moves the chains together. The feed file holds chain-independent
    series (macro prints, daily closes): written once (``None``: not at all), anchored at the
    first chain's time. ``on_hour(h, i, state)`` gets chain ``deps[i]``'s state after hour h."""
    if not deps:
        raise DevnetError("no devnet chain to play the scenario on")
    chains = []
    for dep in deps:
        chain = Chain(dep["rpc_url"])
        try:
            chain.chain_id()
        except DevnetError:
            raise DevnetError(f"devnet at {dep['rpc_url']} does not answer") from None
        chains.append(chain)
    # Every player checks the deployment against the scenario before any chain moves.
    players = [Player(c, d, scenario) for c, d in zip(chains, deps, strict=True)]
    befores = [market_state(c, d) for c, d in zip(chains, deps, strict=True)]
    start = befores[0].timestamp
    feed = build_feed(scenario, start)
    if feed_path is not None:
        write_feed(feed, feed_path)
    for p, b in zip(players, befores, strict=True):
        p.log.info(
            "devnet.scenario.start",
            scenario=scenario.name,
            started_at=b.timestamp,
            block=b.block,
            observations=len(feed["observations"]),
            feed=str(feed_path),
            data_origin="scenario",
        )

    def step(i: int, h: int) -> None:
        chain = chains[i]
        if h > 0:
            chain.rpc("evm_increaseTime", [HOUR])
        if players[i].hour(h) == 0:
            chain.mine()  # one block per simulated hour at least
        if on_hour is not None:
            on_hour(h, i, market_state(chain, deps[i]))

    with ThreadPoolExecutor(max_workers=len(deps), thread_name_prefix="devnet-play") as pool:
        for h in range(scenario.duration_hours + 1):
            if len(deps) == 1:
                step(0, h)
            else:
                # list() re-raises the first chain's error, after every chain's hour ended.
                list(pool.map(step, range(len(deps)), [h] * len(deps)))
            if pace > 0:
                time.sleep(pace)
    results = []
    for chain, dep, player, before in zip(chains, deps, players, befores, strict=True):
        after = market_state(chain, dep)
        player.log.info(
            "devnet.scenario.end",
            scenario=scenario.name,
            block=after.block,
            eth_usd=after.prices.get("WETH"),
            tvl_usd=after.tvl_usd,
            usdc_utilisation=after.utilisation.get("USDC"),
            liquidations=len(player.liquidations),
            data_origin="scenario",
        )
        results.append(
            PlayResult(
                scenario=scenario.name,
                started_at=before.timestamp,
                ended_at=after.timestamp,
                first_block=before.block,
                last_block=after.block,
                before=before,
                after=after,
                liquidations=player.liquidations,
                feed_path=feed_path,
                chain_id=int(dep["chain_id"]),
            )
        )
    return results
