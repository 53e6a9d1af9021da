"""BLS API v2 ``POST {base}/timeseries/data/``: CPI/PPI prints (fallback to FRED).

* The HTTP status is 200 even on failure: ``status`` != ``REQUEST_SUCCEEDED`` -> SourceError with
  BLS's message (e.g. REQUEST_NOT_PROCESSED, daily threshold reached).
* Per-series problems come as ``message`` entries with a success status ("No Data Available for
  Series ...", "Series does not exist ..."): recorded as skip reasons.
* Rows ``{year, period:"M01".."M12", value}`` (strings, newest first). ``M13`` (annual average) and
  non-monthly periods are skipped; non-numeric values ("-") are skipped with a reason.
* ts = first day of the reference month 00:00 UTC. BLS answers with the *current* (revised)
  values and no vintage, so a value is known only from when it was fetched: known_at = the fetch
  time, never earlier than the 15th of the following month (the DESIGN S2 release fallback).
  Stamping the revised value at its first-release date would let a backtest or a ``--known-by``
  query see a revision before it was published.
* Key and unit from config (``{"CUSR0000SA0": "macro.cpi", "WPUFD4": "macro.ppi"}``, unit "index");
  source ``bls:<seriesID>``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from agent.collectors import (
    HttpCollector,
    ParseResult,
    month_start,
    need,
    obs,
    parse_rows,
    release_fallback,
)
from agent.collectors.config import BlsConfig
from agent.core.errors import ConfigError, SourceError
from agent.core.http import HttpClient, expect_dict, expect_list, num, redact
from agent.core.models import Observation

SOURCE = "bls"
_PERIOD = re.compile(r"^M(0[1-9]|1[0-2])$")


def parse_timeseries(
    body: Any,
    series_keys: dict[str, str],
    unit: str = "index",
    secrets: tuple[str, ...] = (),
    fetched_at: int | None = None,
) -> ParseResult:
    """``fetched_at``: when the body was fetched (known_at is never earlier); None only for
    parsing a stored body whose fetch time is unknown (then the release fallback alone)."""
    d = expect_dict(SOURCE, body, "timeseries/data")
    status = d.get("status")
    messages = d.get("message")
    msg_list = (
        [redact(str(m)[:300], secrets) for m in messages] if isinstance(messages, list) else []
    )
    if status != "REQUEST_SUCCEEDED":
        raise SourceError(SOURCE, f"{str(status)[:60]}: {' | '.join(msg_list) or 'no message'}")
    results = expect_dict(SOURCE, d.get("Results"), "timeseries/data Results")
    series_list = expect_list(SOURCE, results.get("series", []), "timeseries/data Results.series")
    out = ParseResult(skipped=[f"message: {m}" for m in msg_list])
    for i, s in enumerate(series_list):
        if not isinstance(s, dict) or not isinstance(s.get("seriesID"), str):
            out.skipped.append(f"series[{i}]: no seriesID")
            continue
        sid = s["seriesID"]
        key = series_keys.get(sid)
        if key is None:
            out.skipped.append(f"series {sid}: not configured")
            continue
        source = f"bls:{sid}"

        def row(r: Any, key: str = key, source: str = source) -> list[Observation]:
            period = need(r, "period")
            if period == "M13":
                return []  # annual average, not a monthly print
            if not isinstance(period, str) or not _PERIOD.match(period):
                raise ValueError(f"period {period!r} is not monthly")
            year_raw = need(r, "year")
            year = int(num(year_raw))
            if not 1900 <= year <= 2200 or float(num(year_raw)) != year:
                raise ValueError(f"bad year {year_raw!r}")
            month = int(period[1:])
            v = num(need(r, "value"))
            known = release_fallback(year, month)
            if fetched_at is not None:
                known = max(known, fetched_at)
            return [obs(key, month_start(year, month), v, unit, source, known)]

        data = s.get("data")
        if not isinstance(data, list):
            out.skipped.append(f"series {sid}: data is {type(data).__name__}")
            continue
        out.extend(parse_rows(data, f"{sid} data", row))
    return out


class BlsCollector(HttpCollector):
    name = SOURCE

    def __init__(self, config: BlsConfig, **kw: Any) -> None:
        super().__init__(**kw)
        self.config = config

    async def collect(self, http: HttpClient, since: int | None = None) -> list[Observation]:
        self.reset()
        c = self.config
        if not c.series:
            raise ConfigError("bls.series is empty")
        end_year = datetime.fromtimestamp(self.now(), UTC).year
        start_year = (
            datetime.fromtimestamp(since, UTC).year
            if since is not None
            else end_year - c.lookback_years + 1
        )
        start_year = max(start_year, end_year - 19)  # v2 answers at most 20 years per query
        body: dict[str, Any] = {
            "seriesid": list(c.series),
            "startyear": str(start_year),
            "endyear": str(end_year),
        }
        secrets: tuple[str, ...] = ()
        if c.api_key is not None and c.api_key.get_secret_value():
            body["registrationkey"] = c.api_key.get_secret_value()
            secrets = (c.api_key.get_secret_value(),)
        answer = await http.post_json(
            SOURCE,
            f"{c.base_url.rstrip('/')}/timeseries/data/",
            body,
            label="timeseries/data",
            secrets=secrets,
        )
        result = parse_timeseries(answer, dict(c.series), secrets=secrets, fetched_at=self.now())
        if since is not None:
            result.observations = [o for o in result.observations if o.ts >= since]
        return self.take(result, "timeseries/data")
