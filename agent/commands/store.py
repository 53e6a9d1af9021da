"""``hedge-agent import-csv`` and ``hedge-agent series``: fill and read the observation store.

The database defaults to ``$HEDGE_AGENT_AGENT__STORE_PATH`` (the same variable the daemon's
settings read for ``agent.store_path``), else ``var/agent.sqlite`` relative to the working directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from agent.core.errors import ConfigError, StoreError

DEFAULT_DB = "var/agent.sqlite"
DB_ENV = "HEDGE_AGENT_AGENT__STORE_PATH"
# The real history shipped with the project (gzipped copies; data/history/PROVENANCE.md).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "history"


def default_db() -> str:
    return os.environ.get(DB_ENV) or DEFAULT_DB


def parse_when(text: str) -> int:
    """Unix seconds, ``YYYY-MM-DD`` or ISO-8601 (naive = UTC) -> unix seconds."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"not a date: {text!r} (use YYYY-MM-DD, ISO-8601 or unix seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _cmd_import_csv(args: argparse.Namespace) -> int:
    from agent.collectors.csv_import import import_dir
    from agent.store.sqlite import Store

    data_dir = Path(args.data_dir)
    results = import_dir(data_dir)
    if not results:
        raise ConfigError(f"no CSV files in {data_dir}")
    total_rows = total_changed = 0
    with Store(args.db, synchronous="NORMAL") as store:  # bulk backfill: re-runnable, no ledger
        for name, res in results.items():
            changed = store.upsert(res.observations)
            total_rows += len(res.observations)
            total_changed += changed
            keys = sorted({o.key for o in res.observations})
            print(
                f"{name}: {len(res.observations)} rows ({changed} new or changed), "
                f"{len(res.skipped)} skipped -> {', '.join(keys) or '-'}"
            )
            for reason in res.skipped[: args.show_skipped]:
                print(f"  skipped: {reason}")
    print(
        f"{total_rows} rows from {len(results)} files, {total_changed} new or changed, into {args.db}"
    )
    return 0


def _cmd_series(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.config import Settings

    if not Path(args.db).exists():
        raise StoreError(
            f"{args.db}: no such store (run `hedge-agent import-csv` or the daemon first)"
        )
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    known_by = parse_when(args.known_by) if args.known_by else None
    with App(Settings(), store_path=args.db) as app:
        store = app.store
        if args.sources:
            rows = store.observations(args.key, since, until, known_by)
            known = store.keys()
            if not rows and args.key not in known:
                raise StoreError(_unknown_key(known, args.key, args.db))
            records = [
                {
                    "time": _iso(o.ts),
                    "ts": o.ts,
                    "value": o.value,
                    "unit": o.unit,
                    "source": o.source,
                    "known_at": o.known_at,
                }
                for o in rows
            ]
        else:
            s = store.series(args.key, since, until, known_by)
            known = store.keys()
            if s.empty and args.key not in known:
                raise StoreError(_unknown_key(known, args.key, args.db))
            stamps = [int(t.timestamp()) for t in pd.DatetimeIndex(s.index)]
            records = [
                {"time": _iso(ts), "ts": ts, "value": float(v)}
                for ts, v in zip(stamps, s.tolist(), strict=True)
            ]
    if args.format == "json":
        json.dump(records, sys.stdout, indent=None)
        sys.stdout.write("\n")
    else:
        cols = list(records[0]) if records else ["time", "ts", "value"]
        print(",".join(cols))
        for r in records:
            print(",".join("" if r[c] is None else str(r[c]) for c in cols))
    return 0


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _unknown_key(keys: list[str], key: str, db: str) -> str:
    near = [k for k in keys if k.split(".")[0] == key.split(".")[0]][:8] or keys[:8]
    return f"{db}: no series {key!r}" + (
        f"; e.g. {', '.join(near)}" if near else "; the store is empty"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import-csv", help="load the real history CSVs into the store")
    p.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help="folder of CSVs (default: %(default)s)"
    )
    p.add_argument("--db", default=default_db(), help="SQLite store (default: %(default)s)")
    p.add_argument(
        "--show-skipped", type=int, default=3, metavar="N", help="skip reasons shown per file"
    )
    p.set_defaults(handler=_cmd_import_csv)

    p = sub.add_parser("series", help="print one stored series")
    p.add_argument("key", help="series key, e.g. close.btc, macro.cpi, tvl.chain.total")
    p.add_argument("--since", help="first time (YYYY-MM-DD, ISO-8601 or unix seconds)")
    p.add_argument("--until", help="last time")
    p.add_argument("--known-by", help="only values known by this time (no look-ahead)")
    p.add_argument(
        "--sources", action="store_true", help="every stored row with source and known_at"
    )
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--db", default=default_db(), help="SQLite store (default: %(default)s)")
    p.set_defaults(handler=_cmd_series)
