"""Scenario files and the feed file they produce (no chain needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from agent.collectors.scenario import load_scenario_feed
from agent.core.errors import DevnetError, MalformedResponse, SourceError
from agent.devnet.scenario import build_feed, load_scenario, write_feed

START = int(datetime(2025, 3, 1, 0, 30, tzinfo=UTC).timestamp())  # a month-start edge case


def test_stress_scenario_file_parses() -> None:
    sc = load_scenario("stress")
    assert sc.name == "stress" and sc.duration_hours >= 40
    eth = sc.price_at("ETH/USD", 36) / sc.price_at("ETH/USD", 0)
    assert 0.73 <= eth <= 0.77
    assert sc.price_at("ETH/USD", 3) == pytest.approx(2977.5)  # linear between points
    assert sc.price_at("ETH/USD", 1000) == sc.prices["ETH/USD"][-1][1]
    actions = {e.action for e in sc.events}
    assert actions == {"withdraw", "set_skew", "borrow_to_utilisation"}
    assert len(sc.cpi) == len(sc.ppi) == 14
    assert all(len(v) >= 120 for v in sc.closes.values())


@pytest.mark.parametrize(
    "start", [START, START + 17 * 86400, int(datetime(2026, 12, 31, 23, tzinfo=UTC).timestamp())]
)
def test_feed_shape_and_no_look_ahead(start: int) -> None:
    feed = build_feed(load_scenario("stress"), start)
    assert feed["scenario"] == "stress" and feed["source"] == "scenario:stress"
    assert feed["started_at"] == start
    by_key: dict[str, list[dict[str, Any]]] = {}
    for o in feed["observations"]:
        by_key.setdefault(str(o["key"]), []).append(o)
    assert set(by_key) == {
        "macro.cpi",
        "macro.ppi",
        "close.btc",
        "close.eth",
        "close.spx",
        "close.vix",
        "close.vix3m",
    }
    for key in ("macro.cpi", "macro.ppi"):
        rows = by_key[key]
        months = [datetime.fromtimestamp(int(r["ts"]), tz=UTC) for r in rows]
        assert all(m.day == 1 and m.hour == 0 for m in months)
        assert all(b > a for a, b in pairwise(months))  # distinct, ordered
        for r, m in zip(rows, months, strict=True):
            assert r["unit"] == "index"
            nxt = datetime(m.year + (m.month == 12), m.month % 12 + 1, 1, tzinfo=UTC).timestamp()
            assert r["known_at"] >= nxt  # released after its month
            assert int(r["known_at"]) < start
    cpi = [float(r["value"]) for r in by_key["macro.cpi"]]
    assert cpi[-1] / cpi[-13] > cpi[-2] / cpi[-14]  # latest YoY above previous
    for key in ("close.spx", "close.vix", "close.vix3m"):
        for r in by_key[key]:
            assert datetime.fromtimestamp(int(r["ts"]), tz=UTC).weekday() < 5
    day0 = start - start % 86400
    hist = [r for r in by_key["close.btc"] if int(r["ts"]) < day0]
    assert len(hist) >= 120 and max(int(r["ts"]) for r in hist) == day0 - 86400
    for rows in by_key.values():
        for r in rows:
            if r["key"].startswith("close"):
                assert r["ts"] % 86400 == 0
            assert int(r["known_at"]) >= int(r["ts"])


@pytest.mark.parametrize("weekday_offset", range(7))
def test_spx_closes_cover_the_evaluation_so_s8_decides(weekday_offset: int) -> None:
    """The S&P 500 closes reach the chain time the scenario advances to (whatever weekday it
    starts on), so at the end of the scenario S8 computes both betas and decides (the demo's
    beta check), instead of reporting a stale latest pair."""
    import pandas as pd

    from agent.signals import S8Config, s8_beta

    sc = load_scenario("stress")
    start = START + weekday_offset * 86400
    feed = build_feed(sc, start)
    end = start + sc.duration_hours * 3600

    def series(key: str) -> pd.Series:
        rows = [o for o in feed["observations"] if o["key"] == key and o["known_at"] <= end]
        idx = pd.DatetimeIndex([pd.Timestamp(int(o["ts"]), unit="s", tz="UTC") for o in rows])
        return pd.Series([float(o["value"]) for o in rows], index=idx, name=key)

    spx = series("close.spx")
    during = spx[spx.index >= pd.Timestamp(start - start % 86400, unit="s", tz="UTC")]
    assert len(during) >= 1 or all(
        datetime.fromtimestamp(d, tz=UTC).weekday() >= 5
        for d in (start - start % 86400, start - start % 86400 + 86400)
    )
    results = s8_beta(
        {"btc": series("close.btc"), "eth": series("close.eth")},
        spx,
        pd.Timestamp(end, unit="s", tz="UTC"),
        S8Config(),
    )
    for r in results:
        assert r.status in ("firing", "quiet"), r.detail
        assert r.metric("beta_short") is not None and r.metric("beta_long") is not None
    assert any(r.firing for r in results)  # the scenario's beta is rising: DeFi first


def test_load_scenario_feed_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "feed.json"
    write_feed(build_feed(load_scenario("stress"), START), path)
    obs = load_scenario_feed(path)
    assert obs and all(o.source == "scenario:stress" for o in obs)
    assert {o.unit for o in obs if o.key == "close.spx"} == {"index"}
    assert {o.unit for o in obs if o.key == "close.eth"} == {"usd"}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("not json", MalformedResponse),
        ("[]", MalformedResponse),
        ('{"scenario": "x", "observations": {}}', MalformedResponse),
        ('{"scenario": "x", "source": "fred", "observations": []}', MalformedResponse),
        (
            '{"scenario": "x", "observations": [{"key": "a", "ts": 1, "value": "1", "unit": "u"}]}',
            MalformedResponse,
        ),
        (
            '{"scenario": "x", "observations": [{"key": "a", "ts": 1.5, "value": 1, "unit": "u"}]}',
            MalformedResponse,
        ),
        (
            '{"scenario": "x", "observations": [{"key": "a", "ts": 1, "value": 1, "unit": "u", "known_at": "x"}]}',
            MalformedResponse,
        ),
    ],
)
def test_malformed_feed_names_the_file(
    tmp_path: Path, content: str, error: type[Exception]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(error, match=str(path)):
        load_scenario_feed(path)


def test_missing_feed(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file not found"):
        load_scenario_feed(tmp_path / "none.json")


def test_bad_scenario_files(tmp_path: Path) -> None:
    with pytest.raises(DevnetError, match="no scenario file"):
        load_scenario(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text('duration_hours = 10\n[[events]]\nhour = 1\naction = "explode"\n')
    with pytest.raises(DevnetError, match="unknown action 'explode'"):
        load_scenario(str(bad))
    bad.write_text("duration_hours = \n")
    with pytest.raises(DevnetError, match="not valid TOML"):
        load_scenario(str(bad))
    bad.write_text('duration_hours = 10\n[prices]\n"ETH/USD" = [[0, 1], [0, 2]]\n')
    with pytest.raises(DevnetError, match="strictly increasing"):
        load_scenario(str(bad))


def test_feed_file_is_json(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_feed({"scenario": "s", "source": "scenario:s", "started_at": 1, "observations": []}, path)
    assert json.loads(path.read_text())["observations"] == []


def test_vix_closes_before_and_during_the_scenario() -> None:
    # Start on a Tuesday 00:30: the days ending during the 48 h are Tue and Wed (both weekdays).
    start = int(datetime(2025, 3, 4, 0, 30, tzinfo=UTC).timestamp())
    sc = load_scenario("stress")
    feed = build_feed(sc, start)
    day0 = start - start % 86400
    rows = {
        k: [o for o in feed["observations"] if o["key"] == k] for k in ("close.vix", "close.vix3m")
    }
    hist = [o for o in rows["close.vix"] if o["ts"] < day0]
    assert len(hist) >= 90  # S10's window
    assert hist[-1]["ts"] == day0 - 86400 and hist[-1]["value"] == sc.closes["vix"][-1]
    during = {o["ts"]: o for o in rows["close.vix"] if o["ts"] >= day0}
    during3m = {o["ts"]: o for o in rows["close.vix3m"] if o["ts"] >= day0}
    assert sorted(during) == sorted(during3m) == [day0, day0 + 86400]
    # Tuesday's close at its day's end (hour 23.5), between the points (12, 24.0) and
    # (24, 27.5): 24.0 + 3.5 x 11.5 / 12 = 27.354
    assert during[day0]["value"] == round(24.0 + 3.5 * 11.5 / 12, 2)
    assert during[day0]["known_at"] == day0 + 86400
    assert during3m[day0]["value"] == round(23.4 + 1.5 * 11.5 / 12, 2)
    # backwardation (VIX above VIX3M) on the scenario's days, contango before
    assert all(during[t]["value"] > during3m[t]["value"] for t in during)
    v3 = {o["ts"]: o["value"] for o in rows["close.vix3m"]}
    assert all(o["value"] < v3[o["ts"]] for o in hist[-30:])
    # A scenario starting on a Saturday emits no weekend closes during it.
    sat = int(datetime(2025, 3, 8, 0, 30, tzinfo=UTC).timestamp())
    weekend = [o for o in build_feed(sc, sat)["observations"] if o["key"] == "close.vix"]
    assert max(o["ts"] for o in weekend) < sat - sat % 86400
