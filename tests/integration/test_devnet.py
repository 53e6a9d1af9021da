"""The devnet against a real anvil: Aave V3 + Safe + feeds + Multicall3 + perp, and the stress
scenario."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from eth_typing import ChecksumAddress, HexAddress, HexStr
from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak
from web3.logs import DISCARD

from agent.collectors.scenario import load_scenario_feed
from agent.core.units import MAX_UINT256, WAD
from agent.devnet.artifacts import forge_artifact, forge_build, npm_artifact
from agent.devnet.chain import Chain
from agent.devnet.deploy import MULTICALL3_ADDRESS, health_factor, read_deployment, write_deployment
from agent.devnet.scenario import load_scenario, market_state, play

pytestmark = pytest.mark.integration


def _pool(chain: Chain, dep: dict[str, Any]) -> Any:
    return chain.at(dep["aave"]["pool"], npm_artifact("Pool"))


def _addresses(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _addresses(v)]
    if isinstance(obj, list):
        return [a for v in obj for a in _addresses(v)]
    if isinstance(obj, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", obj):
        return [obj]
    return []


def test_deployment_record_shape(devnet: dict[str, Any], tmp_path: Path) -> None:
    assert set(devnet) == {
        "version",
        "chain_id",
        "rpc_url",
        "anvil_pid",
        "deployed_block",
        "deployed_at",
        "aave",
        "tokens",
        "chainlink",
        "multicall3",
        "perps",
        "premia",
        "uniswap",
        "safe",
        "safe_lean",
        "zodiac",
        "accounts",
    }
    assert set(devnet["zodiac"]) == {
        "singleton_factory", "roles_mastercopy", "module_proxy_factory", "multisend_unwrapper",
        "integrity", "packer",
    }  # fmt: skip
    assert {"pool_factory", "oracle_adapter", "erc20_router", "base", "quote"} <= set(
        devnet["premia"]
    )
    assert devnet["premia"]["base"] == devnet["tokens"]["WETH"]["address"]
    assert devnet["premia"]["quote"] == devnet["tokens"]["USDC"]["address"]
    assert devnet["version"] == 1 and devnet["chain_id"] == 31337
    assert set(devnet["aave"]) == {
        "pool_addresses_provider",
        "pool",
        "pool_configurator",
        "oracle",
        "data_provider",
        "acl_manager",
    }
    assert set(devnet["tokens"]) == {"WETH", "WBTC", "USDC"}
    assert {s: t["decimals"] for s, t in devnet["tokens"].items()} == {
        "WETH": 18,
        "WBTC": 8,
        "USDC": 6,
    }
    for t in devnet["tokens"].values():
        assert set(t) == {"address", "decimals", "a_token", "variable_debt_token", "feed"}
    assert set(devnet["chainlink"]) == {"ETH/USD", "BTC/USD", "USDC/USD"}
    assert devnet["tokens"]["WETH"]["feed"] == devnet["chainlink"]["ETH/USD"]
    assert devnet["multicall3"] == MULTICALL3_ADDRESS
    assert set(devnet["uniswap"]) == {
        "factory", "position_manager", "swap_router02", "quoter_v2", "market_maker", "pools",
    }  # fmt: skip
    assert set(devnet["uniswap"]["pools"]) == {"WETH", "WBTC"}
    assert set(devnet["safe_lean"]) == set(devnet["safe"]) | {"collateral"}
    assert devnet["safe_lean"]["address"] != devnet["safe"]["address"]
    assert set(devnet["safe"]) == {
        "address",
        "owners",
        "threshold",
        "singleton",
        "proxy_factory",
        "multisend_call_only",
        "fallback_handler",
    }
    assert (
        set(devnet["accounts"]) == {"deployer", "whales"} and len(devnet["accounts"]["whales"]) >= 3
    )
    addrs = _addresses(devnet)
    assert len(addrs) > 25 and all(is_checksum_address(a) for a in addrs)
    path = tmp_path / "deployment.json"
    write_deployment(devnet, path)
    assert read_deployment(path) == json.loads(json.dumps(devnet))


def test_wiring_matches_provider_and_oracle(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    c = devnet_chain
    provider = c.at(
        devnet["aave"]["pool_addresses_provider"], npm_artifact("PoolAddressesProvider")
    )
    assert c.call(provider, "getPool") == devnet["aave"]["pool"]
    assert c.call(provider, "getPriceOracle") == devnet["aave"]["oracle"]
    assert c.call(provider, "getPoolDataProvider") == devnet["aave"]["data_provider"]
    oracle = c.at(devnet["aave"]["oracle"], npm_artifact("AaveOracle"))
    for t in devnet["tokens"].values():
        assert c.call(oracle, "getSourceOfAsset", t["address"]) == t["feed"]
    dp = c.at(devnet["aave"]["data_provider"], npm_artifact("AaveProtocolDataProvider"))
    cfg = c.call(dp, "getReserveConfigurationData", devnet["tokens"]["WETH"]["address"])
    assert (cfg[1], cfg[2], cfg[3]) == (8000, 8250, 10500)
    cfg = c.call(dp, "getReserveConfigurationData", devnet["tokens"]["USDC"]["address"])
    assert (cfg[1], cfg[2], cfg[3]) == (7700, 8000, 10450) and cfg[6]  # borrowing enabled


def test_market_is_realistic(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    s = market_state(devnet_chain, devnet)
    assert 50e6 <= s.tvl_usd <= 110e6
    assert 0.60 <= s.utilisation["USDC"] <= 0.75
    assert 0.02 < s.borrow_apr["USDC"] < 0.06


def test_safe_position(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    c, safe = devnet_chain, devnet["safe"]
    hf = health_factor(c, devnet, safe["address"])
    assert 1.85 <= hf <= 1.95
    safe_c = c.at(safe["address"], npm_artifact("Safe"))
    assert c.call(safe_c, "getThreshold") == 1
    assert c.call(safe_c, "getOwners") == safe["owners"]
    data = c.call(_pool(c, devnet), "getUserAccountData", safe["address"])
    collateral_usd, debt_usd = data[0] / 1e8, data[1] / 1e8
    assert collateral_usd > 1e6 and debt_usd > 0
    weth = c.at(devnet["tokens"]["WETH"]["address"], npm_artifact("MintableERC20"))
    usdc = c.at(devnet["tokens"]["USDC"]["address"], npm_artifact("MintableERC20"))
    spare_weth_usd = c.call(weth, "balanceOf", safe["address"]) / 1e18 * 3000
    assert 0.3 <= spare_weth_usd / collateral_usd <= 0.5  # room for a top-up
    assert c.call(usdc, "balanceOf", safe["address"]) > 0


def test_feed_drop_allows_liquidation(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    c = devnet_chain
    safe, pool = devnet["safe"]["address"], _pool(c, devnet)
    feed = c.at(devnet["chainlink"]["ETH/USD"], forge_artifact("MockV3Aggregator"))
    price = 3000
    while health_factor(c, devnet, safe) >= 1:
        price -= 100
        c.send(feed, "updateAnswer", price * 10**8, sender=devnet["accounts"]["deployer"])
    assert price >= 1400  # HF 1.9 falls below 1 near a 47% drop
    debt_before = c.call(pool, "getUserAccountData", safe)[1]
    liquidator = c.accounts()[9]
    t = devnet["tokens"]
    receipt = c.send(
        pool,
        "liquidationCall",
        t["WETH"]["address"],
        t["USDC"]["address"],
        safe,
        MAX_UINT256,
        False,
        sender=liquidator,
    )
    events = pool.events.LiquidationCall().process_receipt(receipt, errors=DISCARD)
    assert len(events) == 1 and events[0]["args"]["user"] == safe
    debt_after = c.call(pool, "getUserAccountData", safe)[1]
    assert debt_after < debt_before


def test_multicall3_at_canonical_address(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    c = devnet_chain
    assert len(c.w3.eth.get_code(ChecksumAddress(HexAddress(HexStr(MULTICALL3_ADDRESS))))) > 100
    mc = c.at(MULTICALL3_ADDRESS, forge_artifact("Multicall3"))
    pool = _pool(c, devnet)
    safe = devnet["safe"]["address"]
    calls = [
        (MULTICALL3_ADDRESS, False, mc.encode_abi("getBlockNumber", args=[])),
        (
            MULTICALL3_ADDRESS,
            False,
            mc.encode_abi("getEthBalance", args=[devnet["accounts"]["deployer"]]),
        ),
        (pool.address, False, pool.encode_abi("getUserAccountData", args=[safe])),
        (safe, True, b"\xde\xad\xbe\xef"),  # fails, allowed
    ]
    results = mc.functions.aggregate3(calls).call()
    assert [ok for ok, _ in results] == [True, True, True, False]
    assert decode(["uint256"], results[0][1])[0] == c.block_number()
    assert decode(["uint256"], results[1][1])[0] > 0
    hf = decode(["uint256"] * 6, results[2][1])[5]
    assert 1.85 * WAD <= hf <= 1.95 * WAD
    block, data = mc.functions.aggregate(
        [(MULTICALL3_ADDRESS, mc.encode_abi("getCurrentBlockTimestamp", args=[]))]
    ).call()
    assert block == c.block_number() and decode(["uint256"], data[0])[0] > 0


def test_perp_funding_follows_skew(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    c = devnet_chain
    perp = c.at(devnet["perps"]["ETH-PERP"], forge_artifact("PerpMarket"))
    owner = devnet["accounts"]["deployer"]
    assert c.call(perp, "marketKey").rstrip(b"\0") == b"ETH-PERP"
    assert c.call(perp, "baseAsset").rstrip(b"\0") == b"ETH"
    max_rate = c.call(perp, "maxFundingRatePerDay")
    scale = c.call(perp, "skewScale")
    start = c.call(perp, "currentFundingRate")
    assert 0 < start < max_rate
    c.send(perp, "setSkew", scale // 2, sender=owner)
    assert c.call(perp, "currentFundingRate") == max_rate // 2
    c.send(perp, "setSkew", -scale // 4, sender=owner)
    assert c.call(perp, "currentFundingRate") == -max_rate // 4
    c.send(perp, "setSkew", scale * 10, sender=owner)
    assert c.call(perp, "currentFundingRate") == max_rate  # clamped
    with pytest.raises(Exception, match="revert"):
        c.send(perp, "setSkew", 0, sender=devnet["accounts"]["whales"][0])


def test_stress_scenario(devnet: dict[str, Any], devnet_chain: Chain, tmp_path: Path) -> None:
    c = devnet_chain
    scenario = load_scenario("stress")
    feed_path = tmp_path / "scenario_feed.json"
    result = play(devnet, scenario, feed_path)
    b, a = result.before, result.after

    eth_ratio = a.prices["WETH"] / b.prices["WETH"]
    assert 0.72 <= eth_ratio <= 0.78
    # aToken-based TVL: down in USD, and down >= 10% in tokens valued at start prices (outflows).
    assert a.tvl_usd < b.tvl_usd * 0.85
    outflow = sum(a.tvl_tokens[s] * b.prices[s] for s in a.tvl_tokens) / b.tvl_usd - 1
    assert -0.18 <= outflow <= -0.10
    assert a.utilisation["USDC"] > 0.92 and a.borrow_apr["USDC"] > 0.15 > b.borrow_apr["USDC"]
    assert a.funding_per_day["ETH-PERP"] * 365 >= 0.5
    assert result.liquidations

    # One block at least per simulated hour, spanning the whole episode.
    assert result.last_block - result.first_block >= scenario.duration_hours
    assert a.timestamp - b.timestamp >= scenario.duration_hours * 3600
    # Intermediate states are readable at past blocks (the agent backfills that way).
    mid = market_state(c, devnet, block=(result.first_block + result.last_block) // 2)
    assert b.prices["WETH"] > mid.prices["WETH"] > a.prices["WETH"]
    feed = c.at(devnet["chainlink"]["ETH/USD"], forge_artifact("MockV3Aggregator"))
    assert a.timestamp - c.call(feed, "latestRoundData")[3] < 3600  # fresh updatedAt

    raw = json.loads(feed_path.read_text())
    assert raw["scenario"] == "stress" and raw["source"] == "scenario:stress"
    assert raw["started_at"] == b.timestamp
    obs = load_scenario_feed(feed_path)
    keys = {o.key for o in obs}
    assert keys == {
        "macro.cpi",
        "macro.ppi",
        "close.btc",
        "close.eth",
        "close.spx",
        "close.vix",
        "close.vix3m",
    }
    assert all(o.source == "scenario:stress" for o in obs)
    cpi = [o for o in obs if o.key == "macro.cpi" and o.available_at <= raw["started_at"]]
    assert len(cpi) >= 14
    yoy = [cpi[i].value / cpi[i - 12].value - 1 for i in (len(cpi) - 2, len(cpi) - 1)]
    assert yoy[1] > yoy[0]
    # The market maker kept the Uniswap pools at the oracle price (in USDC) all the way down.
    for sym in ("WETH", "WBTC"):
        usd = Decimal(str(a.prices[sym])) / Decimal(str(a.prices["USDC"]))
        assert abs(_pool_price(c, devnet, sym) / usd - 1) < Decimal("0.0001")


def _pool_price(chain: Chain, dep: dict[str, Any], sym: str) -> Decimal:
    """The pool's marginal price of the collateral in USDC, from slot0, by Decimal arithmetic
    (independent of the integer helpers the planner uses)."""
    info = dep["uniswap"]["pools"][sym]
    pool = chain.at(info["address"], npm_artifact("UniswapV3Pool"))
    sqrt_p = Decimal(int(chain.call(pool, "slot0")[0])) / Decimal(2**96)
    raw = sqrt_p * sqrt_p  # token1 per token0, raw units
    dec = Decimal(10) ** (dep["tokens"][sym]["decimals"] - 6)
    return raw * dec if info["token0"] == dep["tokens"][sym]["address"] else dec / raw


def test_uniswap_pools_at_oracle_price(devnet: dict[str, Any], devnet_chain: Chain) -> None:
    """Real Uniswap V3 code: the periphery finds the pools by its compiled-in init code hash,
    the pools sit at the oracle price, and a QuoterV2 quote pays fee plus a modest impact."""
    c, uni = devnet_chain, devnet["uniswap"]
    # The pool artifact's creation code hashes to the POOL_INIT_CODE_HASH the periphery (and
    # every mainnet integration) compiles in, so addresses computed off-chain match.
    init_hash = keccak(hexstr=npm_artifact("UniswapV3Pool").bytecode).hex()
    assert init_hash.removeprefix("0x") == (
        "e34f199b19b2b4f47f68442619d555527d244f78a3297ea89325f843f87b8b54"
    )
    factory = c.at(uni["factory"], npm_artifact("UniswapV3Factory"))
    quoter = c.at(uni["quoter_v2"], npm_artifact("QuoterV2"))
    usdc = devnet["tokens"]["USDC"]["address"]
    for sym, oracle_usd in (("WETH", Decimal(3000)), ("WBTC", Decimal(62000))):
        info = uni["pools"][sym]
        token = devnet["tokens"][sym]["address"]
        assert c.call(factory, "getPool", token, usdc, info["fee"]) == info["address"]
        salt = keccak(encode(["address", "address", "uint24"],
                             [info["token0"], info["token1"], info["fee"]]))  # fmt: skip
        create2 = keccak(b"\xff" + bytes.fromhex(uni["factory"][2:]) + salt
                         + bytes.fromhex(init_hash.removeprefix("0x")))[12:]  # fmt: skip
        assert to_checksum_address(create2) == info["address"]
        assert abs(_pool_price(c, devnet, sym) / oracle_usd - 1) < Decimal("0.0001")
        pool = c.at(info["address"], npm_artifact("UniswapV3Pool"))
        assert c.call(pool, "liquidity") > 0
        amount = 10 ** devnet["tokens"][sym]["decimals"]  # one whole token
        out = quoter.functions.quoteExactInputSingle((token, usdc, amount, info["fee"], 0)).call()
        fee = Decimal(info["fee"]) / 1_000_000
        got = Decimal(out[0]) / 10**6
        assert oracle_usd * (1 - fee) * Decimal("0.995") < got < oracle_usd * (1 - fee)


def test_forge_build_with_solcjs_wrapper(tmp_path: Path) -> None:
    """A clean build (fresh out/ and cache) of every contract: large outputs once came back
    truncated through the solcjs CLI, which an incremental build did not show."""
    import subprocess

    from agent.core.anvil import find_tool
    from agent.devnet.artifacts import PROJECT_ROOT, tool_env

    proc = subprocess.run(
        [find_tool("forge"), "build", "--root", str(PROJECT_ROOT), "--out", str(tmp_path / "out"),
         "--cache-path", str(tmp_path / "cache")],
        cwd=PROJECT_ROOT, env=tool_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for f, contract in (
        ("Multicall3.sol", "Multicall3"),
        ("PerpMarket.sol", "PerpMarket"),
        ("MockV3Aggregator.sol", "MockV3Aggregator"),
        ("PremiaLikePutPool.sol", "PremiaLikePutPool"),
    ):
        art = json.loads((tmp_path / "out" / f / f"{contract}.json").read_text())
        assert art["abi"] and len(art["deployedBytecode"]["object"]) > 100
    forge_build()  # and the project's own build stays usable
