"""Deploy the devnet market onto a running anvil.

Real protocol code from the pinned npm packages: Aave V3 core (``@aave/core-v3``), Safe 1.4.1
(``@safe-global/safe-contracts``) and Chainlink's ``MockV3Aggregator`` (compiled by forge), plus
our own Multicall3 (placed at its canonical address), an ``ETH-PERP`` funding market, and a
Premia-v3-like put venue (``PremiaLikePoolFactory``: WETH/USDC put pools speaking Premia v3's
``IPool``/``IPoolFactory`` ABI, priced by Black-Scholes off the ETH/USD feed; the factory is the
underwriter, holding ``PREMIA_UNDERWRITER_USDC``; takers approve its ERC20Router).

Accounts (anvil's unlocked default accounts, ``eth_accounts`` order):

* ``[0]`` deployer: Aave ACL admin / pool admin, feed and perp owner;
* ``[1]``, ``[2]`` Safe owners (threshold 1: either owner can execute alone);
* ``[3..8]`` whales that supply and borrow so the market has ~$100M TVL and USDC ~70% utilised;
* ``[9]`` liquidator (used by the stress scenario and tests).

Three impersonated "leveraged" borrowers (``RISKY_BORROWERS``) sit at health factors 1.15-1.30 so
a 25% ETH drawdown liquidates them, giving the scenario real ``LiquidationCall`` events.

Uniswap V3 (``agent.devnet.uniswap``): WETH/USDC and WBTC/USDC pools at the oracle price. Two
Safes (same owners): ``safe`` (WETH collateral, spare WETH and USDC) and ``safe_lean`` (WBTC
collateral, empty wallet: protectable only by a deleverage through Uniswap).

Zodiac Roles v2.1 (``zodiac-roles-sdk``): the Roles mastercopy with its libraries, the
ModuleProxyFactory and the MultiSendUnwrapper, for the "protector" role (``agent.planner.roles``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as encode_abi
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3.contract import Contract
from web3.logs import DISCARD

from agent.core.anvil import PROJECT_ROOT
from agent.core.errors import DevnetError
from agent.core.units import MAX_UINT256, RAY, WAD
from agent.devnet.artifacts import (
    ensure_forge_artifacts,
    forge_artifact,
    npm_artifact,
    zodiac_artifact,
)
from agent.devnet.chain import Chain
from agent.devnet.pricing import devnet_pool_keys
from agent.devnet.safe import Call, encode, exec_batch
from agent.devnet.uniswap import deploy_uniswap
from agent.planner.options import PremiaV3Venue

MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
# ERC-2470's singleton factory: Zodiac Roles v2 writes each role's packed conditions as contract
# code CREATE2-deployed through it, at this address on every chain.
SINGLETON_FACTORY_ADDRESS = "0xce0042B868300000d44A59004Da54A005ffdcf9f"
DEFAULT_DEPLOYMENT_PATH = PROJECT_ROOT / "out" / "devnet" / "deployment.json"
DEVNET_CHAIN_ID = 31337  # anvil's default: chain 1; chain k runs with 31337 + k - 1
MAX_CHAINS = 3
# Chain k's deployer starts at nonce (k - 1) x this, so no contract of one chain shares its
# address with any contract of another (a reader pointed at the wrong chain then fails loudly
# instead of reading a twin). Multicall3 stays at its canonical address on every chain.
CHAIN_NONCE_STRIDE = 1_000_000
FEED_DECIMALS = 8
SAFE_HF_TARGET = Decimal("1.9")
ZERO = "0x0000000000000000000000000000000000000000"

RISKY_BORROWERS = [
    to_checksum_address("0x00000000000000000000000000000000000b0001"),
    to_checksum_address("0x00000000000000000000000000000000000b0002"),
    to_checksum_address("0x00000000000000000000000000000000000b0003"),
]


def deployment_path(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("HEDGE_AGENT_DEVNET_DEPLOYMENT", DEFAULT_DEPLOYMENT_PATH))


def devnet_chain_id(index: int) -> int:
    """The chain id of devnet chain ``index`` (1-based): 31337, 31338, ..."""
    return DEVNET_CHAIN_ID + index - 1


def chain_deployment_path(first: Path, index: int) -> Path:
    """Chain ``index``'s deployment file, beside the first chain's: ``deployment.json``,
    ``deployment-2.json``, ... (``X/foo.json`` -> ``X/foo-2.json``)."""
    if index == 1:
        return first
    return first.with_name(f"{first.stem}-{index}{first.suffix}")


def chain_log_path(first: Path, index: int) -> Path:
    """Chain ``index``'s anvil log, beside its deployment file: ``anvil.log``, ``anvil-2.log``."""
    return first.parent / ("anvil.log" if index == 1 else f"anvil-{index}.log")


def _pct_ray(pct: str) -> int:
    return int(Decimal(pct) * RAY / 100)


@dataclass(frozen=True)
class RateSpec:
    optimal: str  # percentages
    base: str
    slope1: str
    slope2: str


@dataclass(frozen=True)
class AssetSpec:
    symbol: str
    name: str
    decimals: int
    feed: str
    price: Decimal  # USD
    ltv: int  # bps
    lt: int  # bps
    bonus: int  # bps, 10500 = 5%
    reserve_factor: int  # bps
    rate: RateSpec


ASSETS = [
    AssetSpec("WETH", "Wrapped Ether", 18, "ETH/USD", Decimal(3000), 8000, 8250, 10500, 1500,
              RateSpec("80", "0", "3.3", "80")),
    AssetSpec("WBTC", "Wrapped BTC", 8, "BTC/USD", Decimal(62000), 7300, 7800, 10500, 2000,
              RateSpec("45", "0", "4", "300")),
    AssetSpec("USDC", "USD Coin", 6, "USDC/USD", Decimal(1), 7700, 8000, 10450, 1000,
              RateSpec("90", "0", "4", "60")),
]  # fmt: skip


@dataclass(frozen=True)
class WhaleSpec:
    supply: dict[str, int]  # whole tokens
    borrow: dict[str, int]


# Suppliers first, so the liquidity the borrowers take exists. ~ $99M supplied, USDC ~73% used.
WHALES = [
    WhaleSpec({"WETH": 3000, "USDC": 12_000_000}, {}),
    WhaleSpec({"WBTC": 250, "USDC": 10_000_000}, {}),
    WhaleSpec({"USDC": 8_000_000}, {"WETH": 1500}),
    WhaleSpec({"WETH": 5000}, {"USDC": 7_000_000}),
    WhaleSpec({"WBTC": 200}, {"USDC": 5_500_000}),
    WhaleSpec({"WETH": 3000, "WBTC": 100}, {"USDC": 7_000_000}),
]
RISKY = [(100, Decimal("1.15")), (150, Decimal("1.22")), (200, Decimal("1.30"))]  # WETH, HF
SAFE_COLLATERAL_WETH = 400
SAFE_SPARE_WETH = 160  # 40% of collateral: room for a later top-up
SAFE_SPARE_USDC = 150_000  # the treasury keeps stablecoins for premiums and repays
LEAN_COLLATERAL_WBTC = 10  # the second, empty-wallet Safe: ~$620k of WBTC
LEAN_HF = Decimal("1.5")
PERP_SKEW_SCALE = 100_000 * WAD  # ETH of net skew at which funding is maximal
PERP_MAX_FUNDING_PER_DAY = 5 * WAD // 1000  # 0.5%/day ≈ 182% APR
PERP_INITIAL_SKEW = 2_000 * WAD  # 0.01%/day ≈ 3.65% APR
PREMIA_VOLATILITY = 8 * WAD // 10  # 80% implied volatility
PREMIA_UNDERWRITER_USDC = 100_000_000  # collateral the factory can lock for puts it sells
# Pools listed up front: every valid maturity within 365 days x every grid strike between these
# fractions of the deploy-time ETH spot (2,000 pools would be too many; 50%-100% covers a 10-20%
# OTM ladder through a ~40% drawdown). More can be added with the permissionless `deployPool`.
PREMIA_STRIKE_RANGE = (Decimal("0.5"), Decimal("1.0"))
PREMIA_DEPLOY_BATCH = 60


def _bytes32(text: str) -> bytes:
    return text.encode().ljust(32, b"\0")


class Deployer:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        accts = chain.accounts()
        if len(accts) < 10:
            raise DevnetError(f"devnet needs 10 unlocked accounts, anvil has {len(accts)}")
        self.deployer = accts[0]
        self.owners = accts[1:3]
        self.whales = accts[3:9]
        self.liquidator = accts[9]
        self.tokens: dict[str, Contract] = {}
        self.feeds: dict[str, Contract] = {}
        self.reserves: dict[str, dict[str, str]] = {}

    def send(self, c: Contract, fn: str, *args: Any, sender: str | None = None) -> None:
        self.chain.send(c, fn, *args, sender=sender or self.deployer)

    def deploy_contract(self, artifact_name: str, *args: Any, **libs: str) -> Contract:
        return self.chain.deploy(
            npm_artifact(artifact_name), *args, sender=self.deployer, libraries=libs
        )

    # -- Aave -----------------------------------------------------------------------------

    def aave(self) -> dict[str, str]:
        d = self.deployer
        provider = self.deploy_contract("PoolAddressesProvider", "Devnet Aave V3 Market", d)
        self.send(provider, "setACLAdmin", d)  # ACLManager's constructor requires it
        acl = self.deploy_contract("ACLManager", provider.address)
        self.send(provider, "setACLManager", acl.address)
        self.send(acl, "addPoolAdmin", d)

        libs: dict[str, str] = {}
        for name in (
            "BorrowLogic",
            "BridgeLogic",
            "EModeLogic",
            "LiquidationLogic",
            "PoolLogic",
            "SupplyLogic",
            "ConfiguratorLogic",
        ):
            libs[name] = self.deploy_contract(name).address
        # FlashLoanLogic itself links BorrowLogic.
        libs["FlashLoanLogic"] = self.deploy_contract(
            "FlashLoanLogic", BorrowLogic=libs["BorrowLogic"]
        ).address
        pool_libs = {k: v for k, v in libs.items() if k != "ConfiguratorLogic"}
        pool_impl = self.deploy_contract("Pool", provider.address, **pool_libs)
        self.send(provider, "setPoolImpl", pool_impl.address)  # creates + initialises the proxy
        pool = self.chain.call(provider, "getPool")
        cfg_impl = self.deploy_contract(
            "PoolConfigurator", ConfiguratorLogic=libs["ConfiguratorLogic"]
        )
        self.send(provider, "setPoolConfiguratorImpl", cfg_impl.address)
        configurator = self.chain.at(
            self.chain.call(provider, "getPoolConfigurator"), npm_artifact("PoolConfigurator")
        )

        for spec in ASSETS:
            self.tokens[spec.symbol] = self.deploy_contract(
                "MintableERC20", spec.name, spec.symbol, spec.decimals
            )
            self.feeds[spec.feed] = self.chain.deploy(
                forge_artifact("MockV3Aggregator"),
                FEED_DECIMALS,
                int(spec.price * 10**FEED_DECIMALS),
                sender=d,
            )
        oracle = self.deploy_contract(
            "AaveOracle",
            provider.address,
            [self.tokens[s.symbol].address for s in ASSETS],
            [self.feeds[s.feed].address for s in ASSETS],  # the same feeds the scenario moves
            ZERO,
            ZERO,
            10**FEED_DECIMALS,
        )
        self.send(provider, "setPriceOracle", oracle.address)
        dp = self.deploy_contract("AaveProtocolDataProvider", provider.address)
        self.send(provider, "setPoolDataProvider", dp.address)

        a_impl = self.deploy_contract("AToken", pool)
        s_impl = self.deploy_contract("StableDebtToken", pool)
        v_impl = self.deploy_contract("VariableDebtToken", pool)
        inputs = []
        for spec in ASSETS:
            r = spec.rate
            strategy = self.deploy_contract(
                "DefaultReserveInterestRateStrategy",
                provider.address,
                _pct_ray(r.optimal),
                _pct_ray(r.base),
                _pct_ray(r.slope1),
                _pct_ray(r.slope2),
                0, 0, 0, 0,  # stable-rate params: stable borrowing stays disabled
                _pct_ray("20"),
            )  # fmt: skip
            s = spec.symbol
            inputs.append((
                a_impl.address, s_impl.address, v_impl.address, spec.decimals, strategy.address,
                self.tokens[s].address, d, ZERO,
                f"Aave Devnet {s}", f"aDev{s}", f"Aave Devnet Variable Debt {s}", f"variableDebtDev{s}",
                f"Aave Devnet Stable Debt {s}", f"stableDebtDev{s}", b"",
            ))  # fmt: skip
        self.send(configurator, "initReserves", inputs)
        pool_c = self.chain.at(pool, npm_artifact("Pool"))
        for spec in ASSETS:
            asset = self.tokens[spec.symbol].address
            self.send(
                configurator, "configureReserveAsCollateral", asset, spec.ltv, spec.lt, spec.bonus
            )
            self.send(configurator, "setReserveBorrowing", asset, True)
            self.send(configurator, "setReserveFactor", asset, spec.reserve_factor)
            rd = self.chain.call(pool_c, "getReserveData", asset)
            # ReserveData (v3.0): aToken at index 8, stable debt 9, variable debt 10.
            self.reserves[spec.symbol] = {"a_token": rd[8], "variable_debt_token": rd[10]}
        return {
            "pool_addresses_provider": provider.address,
            "pool": to_checksum_address(pool),
            "pool_configurator": configurator.address,
            "oracle": oracle.address,
            "data_provider": dp.address,
            "acl_manager": acl.address,
        }

    # -- Multicall3, perp, Safe -----------------------------------------------------------

    def multicall3(self) -> str:
        self.chain.set_code(
            MULTICALL3_ADDRESS, "0x" + forge_artifact("Multicall3").deployed_bytecode
        )
        return MULTICALL3_ADDRESS

    def perp(self) -> str:
        market = self.chain.deploy(
            forge_artifact("PerpMarket"),
            _bytes32("ETH-PERP"),
            _bytes32("ETH"),
            PERP_SKEW_SCALE,
            PERP_MAX_FUNDING_PER_DAY,
            sender=self.deployer,
        )
        self.send(market, "setSkew", PERP_INITIAL_SKEW)
        return market.address

    def premia(self) -> dict[str, Any]:
        d = self.deployer
        weth, usdc = self.tokens["WETH"], self.tokens["USDC"]
        impl = self.chain.deploy(forge_artifact("PremiaLikePutPool"), sender=d)
        factory = self.chain.deploy(
            forge_artifact("PremiaLikePoolFactory"), impl.address, PREMIA_VOLATILITY, sender=d
        )
        adapter = self.chain.deploy(forge_artifact("PremiaLikeOracleAdapter"), sender=d)
        for spec in ASSETS:
            self.send(
                adapter, "setFeed", self.tokens[spec.symbol].address, self.feeds[spec.feed].address
            )
        router = self.chain.call(factory, "router")
        self.send(usdc, "mint", factory.address, self.units("USDC", PREMIA_UNDERWRITER_USDC))
        venue = PremiaV3Venue(
            pool_factory=factory.address,
            oracle_adapter=adapter.address,
            base=weth.address,
            quote=usdc.address,
            erc20_router=to_checksum_address(router),
        )
        spot = Decimal(self.chain.call(adapter, "getPrice", weth.address, usdc.address)) / WAD
        keys = devnet_pool_keys(venue, self.chain.timestamp(), spot, *PREMIA_STRIKE_RANGE)
        for i in range(0, len(keys), PREMIA_DEPLOY_BATCH):
            self.send(factory, "deployPools", list(keys[i : i + PREMIA_DEPLOY_BATCH]))
        return {
            "pool_factory": factory.address,
            "oracle_adapter": adapter.address,
            "erc20_router": venue.erc20_router,
            "pool_implementation": impl.address,
            "base": weth.address,
            "quote": usdc.address,
            "pools_listed": len(keys),
        }

    def uniswap(self) -> dict[str, Any]:
        prices = {
            str(self.tokens[s.symbol].address): int(s.price * 10**FEED_DECIMALS) for s in ASSETS
        }
        decimals = {s.symbol: s.decimals for s in ASSETS}
        return deploy_uniswap(self.chain, self.deployer, self.tokens, decimals, prices)

    def safe(self) -> dict[str, Any]:
        singleton = self.deploy_contract("Safe")
        factory = self.deploy_contract("SafeProxyFactory")
        multisend = self.deploy_contract("MultiSendCallOnly")
        handler = self.deploy_contract("CompatibilityFallbackHandler")
        return {
            "address": self.new_safe(singleton, factory, handler.address, salt=0),
            "owners": list(self.owners),
            "threshold": 1,
            "singleton": singleton.address,
            "proxy_factory": factory.address,
            "multisend_call_only": multisend.address,
            "fallback_handler": handler.address,
        }

    def zodiac(self) -> dict[str, str]:
        """Zodiac Roles v2.1 from ``zodiac-roles-sdk``: the ``Roles`` mastercopy (linked to its
        ``Integrity`` and ``Packer`` libraries), the ``ModuleProxyFactory`` a Safe's owners
        deploy their module proxy through, and the ``MultiSendUnwrapper`` that lets the role
        check each call of a MultiSend batch. Nothing is installed on a Safe here: that is the
        owners' batch ``hedge-agent roles plan`` writes."""
        d = self.deployer
        self.chain.set_code(
            SINGLETON_FACTORY_ADDRESS, "0x" + forge_artifact("SingletonFactory").deployed_bytecode
        )
        integrity = self.chain.deploy(zodiac_artifact("Integrity"), sender=d)
        packer = self.chain.deploy(zodiac_artifact("Packer"), sender=d)
        mastercopy = self.roles_mastercopy(
            {"Integrity": integrity.address, "Packer": packer.address}
        )
        factory = self.chain.deploy(zodiac_artifact("ModuleProxyFactory"), sender=d)
        unwrapper = self.chain.deploy(zodiac_artifact("MultiSendUnwrapper"), sender=d)
        return {
            "singleton_factory": SINGLETON_FACTORY_ADDRESS,
            "roles_mastercopy": mastercopy,
            "module_proxy_factory": factory.address,
            "multisend_unwrapper": unwrapper.address,
            "integrity": integrity.address,
            "packer": packer.address,
        }

    def roles_mastercopy(self, libraries: dict[str, str]) -> str:
        """The package's build of ``Roles`` has 25,286 bytes of runtime code, over EIP-170's
        24,576 (the mainnet mastercopy is a smaller build), so a CREATE fails on a chain that
        enforces the limit. Its runtime code (``roles_runtime_code``: the slice the constructor
        returns, library addresses linked) is placed with ``anvil_setCode``, as Multicall3 is,
        and initialised with ``setUp`` as the constructor would, so nobody can take it over.
        The address is fixed per chain id (distinct on every devnet chain)."""
        addr = to_checksum_address(
            keccak(f"hedge-agent devnet zodiac roles {self.chain.chain_id()}".encode())[12:]
        )
        self.chain.set_code(addr, roles_runtime_code(libraries))
        one = "0x0000000000000000000000000000000000000001"
        roles = self.chain.at(addr, zodiac_artifact("Roles"))
        init = encode_abi(["address", "address", "address"], [one, one, one])
        self.send(roles, "setUp", init)
        return addr

    def new_safe(self, singleton: Contract, factory: Contract, handler: str, *, salt: int) -> str:
        initializer = encode(singleton, "setup", self.owners, 1, ZERO, b"", handler, ZERO, 0, ZERO)
        receipt = self.chain.send(
            factory, "createProxyWithNonce", singleton.address, initializer, salt,
            sender=self.deployer,
        )  # fmt: skip
        events = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise DevnetError("SafeProxyFactory emitted no ProxyCreation")
        return to_checksum_address(events[0]["args"]["proxy"])

    def lean_safe(self, pool: Contract, safe: dict[str, Any]) -> dict[str, Any]:
        """A second Safe (same owners) with WBTC collateral, USDC debt at HF ~1.5 and an empty
        wallet: no spare collateral, no stablecoins. Its only protection is a deleverage."""
        singleton = self.chain.at(safe["singleton"], npm_artifact("Safe"))
        factory = self.chain.at(safe["proxy_factory"], npm_artifact("SafeProxyFactory"))
        addr = self.new_safe(singleton, factory, safe["fallback_handler"], salt=1)
        wbtc, usdc = self.tokens["WBTC"], self.tokens["USDC"]
        collateral = self.units("WBTC", LEAN_COLLATERAL_WBTC)
        self.send(wbtc, "mint", addr, collateral)
        spec = next(s for s in ASSETS if s.symbol == "WBTC")
        debt_usd = LEAN_COLLATERAL_WBTC * spec.price * Decimal(spec.lt) / 10_000 / LEAN_HF
        debt = self.units("USDC", debt_usd.quantize(Decimal("0.000001"), rounding="ROUND_DOWN"))
        calls = [
            Call(wbtc.address, encode(wbtc, "approve", pool.address, collateral)),
            Call(pool.address, encode(pool, "supply", wbtc.address, collateral, addr, 0)),
            Call(pool.address, encode(pool, "borrow", usdc.address, debt, 2, 0, addr)),
            Call(usdc.address, encode(usdc, "transfer", self.deployer, debt)),  # all of it
        ]
        exec_batch(self.chain, addr, safe["owners"][0], safe["multisend_call_only"], calls)
        return {**safe, "address": addr, "collateral": "WBTC"}

    # -- positions ------------------------------------------------------------------------

    def units(self, symbol: str, amount: int | Decimal) -> int:
        spec = next(s for s in ASSETS if s.symbol == symbol)
        return int(Decimal(amount) * 10**spec.decimals)

    def supply(self, pool: Contract, who: str, symbol: str, amount: int) -> None:
        token = self.tokens[symbol]
        self.send(token, "mint", who, amount, sender=who)
        self.send(token, "approve", pool.address, MAX_UINT256, sender=who)
        self.send(pool, "supply", token.address, amount, who, 0, sender=who)

    def seed(self, pool: Contract) -> None:
        for whale, spec in zip(self.whales, WHALES, strict=True):
            for sym, amt in spec.supply.items():
                self.supply(pool, whale, sym, self.units(sym, amt))
        for whale, spec in zip(self.whales, WHALES, strict=True):
            for sym, amt in spec.borrow.items():
                self.send(
                    pool,
                    "borrow",
                    self.tokens[sym].address,
                    self.units(sym, amt),
                    2,
                    0,
                    whale,
                    sender=whale,
                )
        weth_price = ASSETS[0].price
        for who, (weth, hf) in zip(RISKY_BORROWERS, RISKY, strict=True):
            self.chain.impersonate(who)
            self.chain.set_balance(who, 10 * WAD)
            self.supply(pool, who, "WETH", self.units("WETH", weth))
            debt = Decimal(weth) * weth_price * Decimal(ASSETS[0].lt) / 10_000 / hf
            self.send(
                pool,
                "borrow",
                self.tokens["USDC"].address,
                self.units("USDC", debt.quantize(Decimal(1))),
                2,
                0,
                who,
                sender=who,
            )
        # The liquidator holds USDC to repay debt with.
        self.send(
            self.tokens["USDC"],
            "mint",
            self.liquidator,
            self.units("USDC", 5_000_000),
            sender=self.liquidator,
        )
        self.send(self.tokens["USDC"], "approve", pool.address, MAX_UINT256, sender=self.liquidator)

    def safe_position(self, pool: Contract, safe: dict[str, Any]) -> None:
        """Safe supplies WETH and borrows USDC to HF ≈ 1.9, in one MultiSendCallOnly batch."""
        addr, owner = safe["address"], safe["owners"][0]
        weth, usdc = self.tokens["WETH"], self.tokens["USDC"]
        collateral = self.units("WETH", SAFE_COLLATERAL_WETH)
        self.send(weth, "mint", addr, collateral + self.units("WETH", SAFE_SPARE_WETH))
        weth_spec = ASSETS[0]
        debt_usd = (
            SAFE_COLLATERAL_WETH * weth_spec.price * Decimal(weth_spec.lt) / 10_000 / SAFE_HF_TARGET
        )
        debt = self.units("USDC", debt_usd.quantize(Decimal("0.000001"), rounding="ROUND_DOWN"))
        spare_usdc = self.units("USDC", SAFE_SPARE_USDC)
        calls = [
            Call(weth.address, encode(weth, "approve", pool.address, collateral)),
            Call(pool.address, encode(pool, "supply", weth.address, collateral, addr, 0)),
            Call(pool.address, encode(pool, "borrow", usdc.address, debt, 2, 0, addr)),
            # The borrowed USDC was deployed elsewhere by the treasury; keep a small float.
            Call(usdc.address, encode(usdc, "transfer", self.deployer, debt - spare_usdc)),
        ]
        exec_batch(self.chain, addr, owner, safe["multisend_call_only"], calls)


def roles_runtime_code(libraries: dict[str, str]) -> str:
    """``Roles``' runtime code: what its creation code's constructor copies out and returns
    (``PUSH2 len DUP1 PUSH3 offset PUSH0 CODECOPY PUSH0 RETURN INVALID``). The contract has no
    immutables, so this is byte for byte what a CREATE leaves (a devnet test compares them)."""
    creation = zodiac_artifact("Roles").linked(libraries)[2:]
    m = re.search(r"61([0-9a-f]{4})80620([0-9a-f]{5})5f395ff3fe", creation)
    if m is None:
        raise DevnetError("Roles creation code: no constructor return of the runtime code found")
    length, offset = int(m.group(1), 16), int(m.group(2), 16)
    if 2 * (offset + length) > len(creation):
        raise DevnetError("Roles creation code: the runtime slice runs past its end")
    return "0x" + creation[2 * offset : 2 * (offset + length)]


def deploy(url: str, *, anvil_pid: int | None = None, chain_index: int = 1) -> dict[str, Any]:
    """Deploy everything onto the anvil at ``url`` and return the deployment record.

    ``chain_index`` k >= 2 deploys devnet chain k: the same market, at addresses disjoint from
    every other chain's (the deployer's nonce starts at ``(k - 1) * CHAIN_NONCE_STRIDE``)."""
    if not 1 <= chain_index <= MAX_CHAINS:
        raise DevnetError(f"devnet chain index must be 1..{MAX_CHAINS}, got {chain_index}")
    ensure_forge_artifacts()
    chain = Chain(url)
    chain_id = chain.chain_id()
    dep = Deployer(chain)
    if chain_index > 1:
        nonce = (chain_index - 1) * CHAIN_NONCE_STRIDE
        chain.rpc("anvil_setNonce", [dep.deployer, hex(nonce)])
    aave = dep.aave()
    multicall = dep.multicall3()
    perp = dep.perp()
    safe = dep.safe()
    premia = dep.premia()
    uniswap = dep.uniswap()
    pool = chain.at(aave["pool"], npm_artifact("Pool"))
    dep.seed(pool)
    dep.safe_position(pool, safe)
    safe_lean = dep.lean_safe(pool, safe)
    zodiac = dep.zodiac()  # last: every address deployed before it stays where it was
    block = chain.block_number()
    return {
        "version": 1,
        "chain_id": chain_id,
        "rpc_url": url,
        "anvil_pid": anvil_pid,
        "deployed_block": block,
        "deployed_at": chain.timestamp(block),
        "aave": aave,
        "tokens": {
            s.symbol: {
                "address": dep.tokens[s.symbol].address,
                "decimals": s.decimals,
                "a_token": to_checksum_address(dep.reserves[s.symbol]["a_token"]),
                "variable_debt_token": to_checksum_address(
                    dep.reserves[s.symbol]["variable_debt_token"]
                ),
                "feed": dep.feeds[s.feed].address,
            }
            for s in ASSETS
        },
        "chainlink": {feed: c.address for feed, c in dep.feeds.items()},
        "multicall3": multicall,
        "perps": {"ETH-PERP": perp},
        "premia": premia,
        "uniswap": uniswap,
        "safe": safe,
        "safe_lean": safe_lean,
        "zodiac": zodiac,
        "accounts": {"deployer": dep.deployer, "whales": list(dep.whales)},
    }


def health_factor(chain: Chain, deployment: dict[str, Any], user: str) -> Decimal:
    pool = chain.at(deployment["aave"]["pool"], npm_artifact("Pool"))
    data = chain.call(pool, "getUserAccountData", user)
    return Decimal(int(data[5])) / WAD


def write_deployment(deployment: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(deployment, indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def read_deployment(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DevnetError(f"devnet is not up: no deployment file at {path}") from None
    except ValueError as exc:
        raise DevnetError(f"deployment file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("version") != 1 or "rpc_url" not in raw:
        raise DevnetError(f"deployment file {path} is not a version-1 devnet deployment")
    return raw
