"""``collect --once`` against the real devnet (Aave V3, Chainlink mocks, perp, a real
liquidation) plus the local API server for every HTTP collector: every series is stored with the
right unit and the hand-computed value; a broken source (a Comet address with no code) fails
alone."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from app_collect import collect_via_app
from devnet_rpc import rpc_call_sync
from test_liquidations import HOUR, liquidate_safe, usd_by_hand

from agent.commands.collect import register
from agent.config import load_settings
from agent.core.abi import load_abi
from agent.devnet.artifacts import forge_artifact
from agent.devnet.chain import Chain
from agent.devnet.deploy import write_deployment
from agent.store.sqlite import Store

pytestmark = pytest.mark.integration

NO_CODE = "0x000000000000000000000000000000000000c0DE"


def call(url: str, to: str, abi_name: str, fn: str, *args: Any) -> tuple[Any, ...]:
    abi = load_abi(abi_name)
    raw = rpc_call_sync(url, "eth_call", [{"to": to, "data": abi.encode_hex(fn, *args)}, "latest"])
    assert isinstance(raw, str)
    return abi.decode_output(fn, bytes.fromhex(raw[2:]))


def toml_value(v: Any) -> str:
    return json.dumps(v)


def write_config(path: Path, dep_path: Path, store: Path, collectors: dict[str, Any]) -> Path:
    lines = [
        "[agent]",
        f"store_path = {toml_value(str(store))}",
        "[chain]",
        'name = "devnet"',
        f"deployment = {toml_value(str(dep_path))}",
    ]

    def section(prefix: str, d: dict[str, Any]) -> None:
        lines.append(f"[{prefix}]")
        lines.extend(
            f"{k} = {toml_value(v)}" for k, v in d.items() if not isinstance(v, dict | list)
        )
        for k, v in d.items():
            if isinstance(v, dict):
                section(f"{prefix}.{k}", v)

    section("collectors", collectors)
    lines += ["[[collectors.comet.markets]]", f'address = "{NO_CODE}"', 'asset = "usdc"']
    path.write_text("\n".join(lines) + "\n")
    return path


def refresh_feeds(c: Chain, dep: dict[str, Any]) -> dict[str, int]:
    """Re-post each feed's answer so none is stale after time was moved forward."""
    answers = {}
    for name, addr in dep["chainlink"].items():
        feed = c.at(addr, forge_artifact("MockV3Aggregator"))
        answer = c.call(feed, "latestRoundData")[1]
        c.send(feed, "updateAnswer", answer, sender=dep["accounts"]["deployer"])
        answers[name] = int(answer)
    return answers


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hedge-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


async def test_collect_once_on_devnet_with_every_http_source(
    devnet: dict[str, Any],
    devnet_chain: Chain,
    devnet_url: str,
    market_apis: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    c = devnet_chain
    event = liquidate_safe(c, devnet)
    liquidation_usd = usd_by_hand(c, devnet, event)
    liquidation_hour = c.timestamp(event["block"]) // HOUR * HOUR
    c.mine(HOUR)  # the liquidation's hour is complete
    answers = refresh_feeds(c, devnet)

    dep_path = tmp_path / "deployment.json"
    write_deployment(devnet, dep_path)
    collectors = market_apis.collectors_config() | {"liquidations": {"lookback_blocks": 100_000}}
    db = tmp_path / "agent.sqlite"
    config = write_config(tmp_path / "devnet.toml", dep_path, db, collectors)
    settings = load_settings(config)

    with Store(db) as store:
        report = await collect_via_app(settings, store)

    # Only Comet fails (no contract at its address), and it says so; every other source stored.
    assert len(report.errors) == 1 and report.errors[0].startswith("comet: devnet: Comet usdc at")
    assert NO_CODE in report.errors[0]
    assert set(report.sources) == {
        "onchain",
        "liquidations",
        "comet",
        "defillama",
        "hyperliquid",
        "dydx",
        "fred",
        "bls",
        "subgraph",
        "closes",
    }
    assert all(r.ok for n, r in report.sources.items() if n != "comet")
    assert (
        report.sources["onchain"].problems == [] and report.sources["liquidations"].problems == []
    )

    with Store(db) as store:
        keys = store.keys()
        stored = {k: store.observations(k) for k in keys}
    units = {k: {o.unit for o in rows} for k, rows in stored.items()}
    assert all(len(u) == 1 for u in units.values())
    unit = {k: next(iter(u)) for k, u in units.items()}

    # HTTP series: counts, latest values and units computed by hand from the served data
    for key, (n, value, u) in market_apis.expected().items():
        assert len(stored[key]) == n and unit[key] == u, key
        last = max(stored[key], key=lambda o: (o.ts, o.available_at))
        assert last.value == pytest.approx(value, rel=1e-12), key

    # Liquidations: the exact debt covered, in USD, at the event's hour; other hours are 0
    liq = {o.ts: o for o in stored["liquidations.aave-v3.devnet"]}
    assert unit["liquidations.aave-v3.devnet"] == "usd"
    assert liq[liquidation_hour].value == float(liquidation_usd)
    assert sum(o.value for o in liq.values()) == float(liquidation_usd)

    # On-chain snapshot, against direct reads of the same contracts
    safe = devnet["safe"]["address"]
    acct = call(devnet_url, devnet["aave"]["pool"], "Pool", "getUserAccountData", safe)
    if acct[1]:  # still in debt (a liquidation below HF 0.95 may repay all of it)
        (hf,) = stored[f"position.{safe}.health_factor"]
        assert hf.unit == "ratio" and hf.value == acct[5] / 10**18
    else:
        assert f"position.{safe}.health_factor" not in stored
    assert stored[f"position.{safe}.debt_usd"][0].value == acct[1] / 10**8
    assert stored[f"position.{safe}.collateral_usd"][0].value == acct[0] / 10**8
    assert unit[f"position.{safe}.debt_usd"] == unit[f"position.{safe}.collateral_usd"] == "usd"
    for name, answer in answers.items():
        key = f"price.{name.split('/')[0].lower()}.usd"
        assert unit[key] == "usd" and stored[key][0].value == answer / 10**8
    rate = call(devnet_url, devnet["perps"]["ETH-PERP"], "PerpMarket", "currentFundingRate")[0]
    (funding,) = stored["funding.onchain.ETH-PERP"]
    assert funding.unit == "apr" and funding.value == pytest.approx(rate * 365 / 10**18, rel=1e-12)
    rates_differ = 0
    for sym, tok in devnet["tokens"].items():
        prefix = f"rate.aave-v3.devnet.{sym.lower()}"
        assert (unit[f"{prefix}.supply_apy"], unit[f"{prefix}.borrow_apy"]) == ("apy", "apy")
        # The rates from another contract (the data provider, named outputs), compounded per
        # second by hand: supply from liquidityRate, borrow from variableBorrowRate.
        (supply_obs,) = stored[f"{prefix}.supply_apy"]
        block = int(supply_obs.source.rsplit("block=", 1)[1])  # the snapshot's block
        dp = load_abi("AaveProtocolDataProvider")
        raw = rpc_call_sync(
            devnet_url,
            "eth_call",
            [
                {
                    "to": devnet["aave"]["data_provider"],
                    "data": dp.encode_hex("getReserveData", tok["address"]),
                },
                hex(block),
            ],
        )
        assert isinstance(raw, str)
        rd = dp.decode_output("getReserveData", bytes.fromhex(raw[2:]))
        liquidity_rate, borrow_rate = rd[5], rd[6]
        rates_differ += liquidity_rate != borrow_rate
        year = 365 * 24 * 3600
        for field, rate in (("supply_apy", liquidity_rate), ("borrow_apy", borrow_rate)):
            by_hand = math.expm1(year * math.log1p(rate / 10**27 / year))
            (o,) = stored[f"{prefix}.{field}"]
            assert o.value == pytest.approx(by_hand, rel=1e-9), (sym, field)
        assert unit[f"{prefix}.utilization"] == "ratio"
        supply = call(devnet_url, tok["a_token"], "ERC20", "totalSupply")[0]
        debt = call(devnet_url, tok["variable_debt_token"], "ERC20", "totalSupply")[0]
        assert stored[f"{prefix}.utilization"][0].value == pytest.approx(debt / supply, rel=1e-12)
        assert unit[f"tvl.aave-v3.devnet.{sym.lower()}"] == "usd"
    assert unit["tvl.aave-v3.devnet"] == "usd"
    assert rates_differ, "no reserve with supply rate != borrow rate: a swap would pass unseen"

    # Every stored key belongs to a known family (nothing unexpected, nothing unitless)
    families = (
        "tvl.",
        "funding.",
        "macro.",
        "close.",
        "rate.",
        "position.",
        "price.",
        "liquidations.",
    )
    assert all(k.startswith(families) for k in stored)

    # The CLI: same run, same rows (idempotent), and a line per key with count, value, unit, source
    code = await asyncio.to_thread(run_cli, ["collect", "--config", str(config), "--once"])
    out, err = capsys.readouterr()
    assert code == 1 and "error: comet: devnet: Comet usdc" in err
    # The liquidation scan resumes from its stored checkpoint: no hour completed since the
    # first run, so no log is read again and nothing is re-stored.
    assert not any(x.startswith("liquidations.aave-v3.devnet ") for x in out.splitlines())
    with sqlite3.connect(db) as conn:
        n_liq = conn.execute(
            "SELECT COUNT(*) FROM observations WHERE key = 'liquidations.aave-v3.devnet'"
        ).fetchone()[0]
    assert n_liq == len(liq)  # the first run's rows stay, never duplicated
