from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.backtest.data import CALENDAR_FILES
from agent.collectors.csv_import import IMPORTERS, SHIPPED_DIR, import_dir, import_file
from agent.commands.store import parse_when, register
from agent.core.errors import AgentError, ConfigError, SourceError, StoreError
from agent.store import Store

DATA = SHIPPED_DIR  # the history shipped with the project (gzipped)


def ts(s: str) -> int:
    return parse_when(s)


def test_every_shipped_csv_has_an_importer() -> None:
    # the release calendar is not observations: it sets the macro prints' known_at
    assert {p.name.removesuffix(".gz") for p in DATA.glob("*.csv.gz")} == set(IMPORTERS) | set(
        CALENDAR_FILES
    )


def test_shipped_history_matches_its_provenance_checksums() -> None:
    """The gzipped copies decompress to exactly the files PROVENANCE.md describes (SHA256SUMS is
    the source folder's own list), so the shipped history is the documented one, byte for byte."""
    import gzip
    import hashlib

    sums = dict(
        reversed(line.split()) for line in (DATA / "SHA256SUMS").read_text().splitlines() if line
    )
    shipped = {p.name.removesuffix(".gz"): p for p in DATA.glob("*.csv.gz")}
    assert set(sums) == set(shipped)
    for name, path in shipped.items():
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == sums[name], name


def test_plain_and_gzipped_copies_import_identically(tmp_path: Path) -> None:
    import gzip

    src = DATA / "vix3m_vxvcls_daily_fred.csv.gz"
    plain = tmp_path / "vix3m_vxvcls_daily_fred.csv"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    a, b = import_file(src), import_file(plain)
    assert a.observations == b.observations and a.observations
    assert a.observations[0].source == "csv:vix3m_vxvcls_daily_fred.csv"
    first = a.observations[0]
    assert (first.key, first.value) == ("close.vix3m", 24.65)
    # a FRED daily close is known only when its UTC day has ended
    assert first.available_at == first.ts + 86_400 - 1


def test_import_dir_keys_units_and_values() -> None:
    res = import_dir(DATA)
    by_key: dict[str, list] = {}
    for r in res.values():
        for o in r.observations:
            by_key.setdefault(o.key, []).append(o)
    for key in [
        "close.btc",
        "close.eth",
        "close.spx",
        "tvl.chain.total",
        "macro.cpi",
        "macro.ppi",
        "funding.binance.BTCUSDT",
        "funding.bybit.BTCUSDT",
        "rate.aave-v2.ethereum.usdc.supply_apy",
        "rate.aave-v2.ethereum.usdt.supply_apy",
        "funding.dydx-daily.BTCUSD",
        "supply.stablecoins.total",
    ]:
        assert key in by_key, key
    # units
    assert {o.unit for o in by_key["close.btc"]} == {"usd"}
    assert {o.unit for o in by_key["funding.binance.BTCUSDT"]} == {"apr"}
    assert {o.unit for o in by_key["macro.cpi"]} == {"index"}
    # Binance 0.01%/8h = 0.0001 x 1095 = 10.95% APR; first UTC settlement 2019-09-10 08:00
    utc = {o.ts: o.value for o in res["binance_btcusdt_funding_8h_utc.csv"].observations}
    assert utc[ts("2019-09-10T08:00:00")] == pytest.approx(0.1095)
    # the UTC+8 export, shifted and converted from "%", gives the same rows
    orig = {o.ts: o.value for o in res["binance_btcusdt_funding_8h_original_utc8.csv"].observations}
    assert orig.keys() == utc.keys()
    assert max(abs(orig[t] - utc[t]) for t in utc) < 1e-12
    assert min(utc.values()) == pytest.approx(-0.003 * 1095)  # the -0.30% cap on 2020-03-13
    # CPI: ts = month start, known_at = 15th of the next month; 2025-10 is blank and skipped
    cpi = {o.ts: o for o in res["cpi_cpiaucsl_monthly_fred.csv"].observations}
    jan = cpi[ts("2024-01-01")]
    assert jan.known_at == ts("2024-02-15")
    assert ts("2025-10-01") not in cpi and any(
        "2025-10-01" in s for s in res["cpi_cpiaucsl_monthly_fred.csv"].skipped
    )
    dec = cpi[ts("2024-12-01")]
    assert dec.known_at == ts("2025-01-15")
    # Yahoo: the partial last bar is dropped; closes are at UTC day start
    btc = res["btc_usd_daily_yahoo.csv"].observations
    assert (
        max(o.ts for o in btc) == ts("2025-08-02") - 86400
    )  # 08-02 is the known gap, 08-03 dropped
    assert all(o.ts % 86400 == 0 for o in btc)
    # Aave rate: percent -> fraction
    usdc = res["aave_usdc_lending_rate_daily_dune.csv"].observations
    assert usdc[0].value == pytest.approx(0.03236145827308532 / 100) and usdc[0].unit == "apy"
    # Coinalyze: percent per period; dYdX (hourly) x 8760, Binance (8h) x 1095
    c = res["btc_perp_funding_daily_multivenue_coinalyze.csv"].observations
    d = next(o for o in c if o.key == "funding.dydx-daily.BTCUSD" and o.ts == ts("2022-10-19"))
    assert d.value == pytest.approx(0.00027459 / 100 * 8760)
    b = next(o for o in c if o.key == "funding.binance-daily.BTCUSDT" and o.ts == ts("2022-10-19"))
    assert b.value == pytest.approx(0.01 / 100 * 1095)
    assert any(o.key == "funding.kraken-daily.BTCUSD-2" for o in c)
    assert all(o.source.startswith("csv:") for r in res.values() for o in r.observations)


def test_cli_import_and_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd", required=True))
    db = tmp_path / "agent.sqlite"

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        code: int = args.handler(args)
        return code

    assert run("import-csv", "--data-dir", str(DATA), "--db", str(db)) == 0
    out = capsys.readouterr().out
    assert "cpi_cpiaucsl_monthly_fred.csv: 808 rows" in out
    assert run("import-csv", "--data-dir", str(DATA), "--db", str(db)) == 0
    assert " 0 new or changed, into" in capsys.readouterr().out  # idempotent
    assert (
        run(
            "series",
            "macro.cpi",
            "--since",
            "2024-11-01",
            "--known-by",
            "2025-01-14",
            "--db",
            str(db),
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "time,ts,value" and len(lines) == 2  # Dec 2024 not known before Jan 15
    assert (
        run(
            "series",
            "close.btc",
            "--since",
            "2025-07-30",
            "--until",
            "2025-07-31",
            "--format",
            "json",
            "--db",
            str(db),
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["time"] for r in rows] == ["2025-07-30T00:00:00Z", "2025-07-31T00:00:00Z"]
    assert (
        run(
            "series",
            "close.btc",
            "--since",
            "2025-07-31",
            "--until",
            "2025-07-31",
            "--sources",
            "--db",
            str(db),
        )
        == 0
    )
    srcs = capsys.readouterr().out
    assert "csv:btc_usd_daily_yahoo.csv" in srcs and "csv:btc_usd_daily_coinbase_close.csv" in srcs
    with pytest.raises(StoreError, match=r"no series 'close\.bt'"):
        run("series", "close.bt", "--db", str(db))
    with pytest.raises(StoreError, match=r"no such store"):
        run("series", "close.btc", "--db", str(tmp_path / "none.sqlite"))
    with pytest.raises(ConfigError):
        run("series", "close.btc", "--since", "yesterday", "--db", str(db))
    with Store(db) as s:
        assert s.integrity_check() == "ok"


def test_missing_dir_and_unknown_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        import_dir(tmp_path / "nope")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    res = import_dir(tmp_path)
    assert res["other.csv"].observations == [] and res["other.csv"].skipped
    with pytest.raises(SourceError, match=r"csv:other\.csv"):
        import_file(tmp_path / "other.csv")


def test_bad_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    p = tmp_path / "btc_usd_daily_coinbase_close.csv"
    p.write_text(
        "as_of,value,status\n2020-01-01,7200.5,ok\n2020-01-02,,ok\n2020-01-03,nan,ok\n2020-01-04,7300,stale\nbad-date,1,ok\n2020-01-05,7400,ok\n"
    )
    res = import_file(p)
    assert [(o.ts, o.value) for o in res.observations] == [
        (ts("2020-01-01"), 7200.5)
    ]  # last row dropped
    assert len(res.skipped) == 5
    p2 = tmp_path / "binance_btcusdt_funding_8h_utc.csv"
    p2.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SourceError, match=r"csv:binance_btcusdt_funding_8h_utc\.csv: cannot read"):
        import_file(p2)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(IMPORTERS)),
    text=st.text(alphabet=st.sampled_from(list('0123456789-:., %"\nabTUCok')), max_size=300),
)
def test_arbitrary_csv_content_never_crashes(name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        header = {
            "btc_perp_funding_daily_multivenue_coinalyze.csv": "t,BTC/USD - dYdX,BTC/USDT - Binance\n",
        }.get(name, "")
        p.write_text(header + text)
        try:
            res = import_file(p)
        except AgentError as e:
            assert isinstance(e, SourceError) and e.source == f"csv:{name}"
            return
        assert all(isinstance(o.value, float) for o in res.observations)


def test_a_daily_close_is_not_known_before_its_day_ends(tmp_path: Path) -> None:
    from agent.collectors.csv_import import import_file
    from agent.store.sqlite import Store

    f = tmp_path / "btc_usd_daily_yahoo.csv"
    f.write_text(
        "Date,Close,High,Low,Open,Volume\n"
        "2024-03-01,61000,1,1,1,1\n2024-03-02,62000,1,1,1,1\n2024-03-03,63000,1,1,1,1\n"
    )
    res = import_file(f)
    with Store(tmp_path / "s.sqlite") as store:
        store.upsert(res.observations)
        noon_0302 = 1709337600 + 12 * 3600  # 2024-03-02 12:00 UTC
        seen = store.series("close.btc", known_by=noon_0302)
        assert list(seen.values) == [61000.0]  # 03-02's close is not final at noon
        assert len(store.series("close.btc", known_by=1709337600 + 86_399)) == 2
