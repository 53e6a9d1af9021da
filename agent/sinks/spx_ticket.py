"""The advisory S&P 500 put ticket as a CSV a person can read and key into a broker's order
ticket: one row per leg, appended (a header when the file is new), never the same ticket twice.

The agent never trades equity options itself; the premium columns are Black-Scholes
**estimates** (VIX as volatility) and say so in every row.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from agent.core.errors import StoreError

COLUMNS = (
    "ticket_id",
    "created_at",
    "session_id",
    "horizon",
    "side",
    "quantity",
    "symbol",
    "expiry",
    "settlement",
    "dte",
    "strike",
    "type",
    "order_type",
    "limit_price",
    "est_premium_per_option",
    "est_cost_usd",
    "max_cost_usd_at_limit",
    "multiplier",
    "reference_spx_close",
    "vix_used_as_vol",
    "note",
)
NOTE = "ESTIMATE (Black-Scholes, VIX as vol); check the broker's quote"


def ticket_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows (one per leg) of a ``spx_put_ticket`` proposal record."""
    t = record["ticket"]
    return [
        {
            "ticket_id": record["id"],
            "created_at": record["created_at"],
            "session_id": t["session_id"],
            "horizon": leg["horizon"],
            "side": leg["side"],
            "quantity": leg["contracts"],
            "symbol": leg["symbol"],
            "expiry": leg["expiry"],
            "settlement": leg["settlement"],
            "dte": leg["dte"],
            "strike": leg["strike"],
            "type": leg["type"],
            "order_type": leg["order_type"],
            "limit_price": leg["limit_price"],
            "est_premium_per_option": f"{leg['est_premium']:.2f}",
            "est_cost_usd": leg["est_cost_usd"],
            "max_cost_usd_at_limit": leg["max_cost_usd"],
            "multiplier": leg["multiplier"],
            "reference_spx_close": f"{leg['reference_spot']:.2f}",
            "vix_used_as_vol": f"{leg['vol_used'] * 100:.2f}",
            "note": NOTE,
        }
        for leg in t["legs"]
    ]


def _ids_in(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open(encoding="utf-8", newline="") as fh:
        return {row.get("ticket_id", "") for row in csv.DictReader(fh)}


def append_ticket_csv(record: dict[str, Any], path: str | Path) -> Path:
    """Append the ticket's legs to ``path`` (fsynced). A ticket already in the file is skipped."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if record["id"] in _ids_in(p):
            return p
        new = not p.exists() or p.stat().st_size == 0
        with p.open("a", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerows(ticket_rows(record))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise StoreError(f"cannot write the SPX ticket CSV {p}: {exc}") from exc
    return p


def render_ticket(record: dict[str, Any]) -> list[str]:
    """Readable lines for ``proposals show`` (appended to the common header)."""
    t = record["ticket"]
    lines = [
        "  ADVISORY ticket for your broker (the agent places nothing): buy S&P 500 index puts",
        f"    budget ${float(t['budget_usd']):,.2f}; max cost at the limits ${float(t['spend_usd']):,.2f}; "
        f"estimated cost ${float(t['est_cost_usd']):,.2f}",
    ]
    for leg in t["legs"]:
        lines.append(
            f"    - {leg['side']} {leg['contracts']} {leg['symbol']} {leg['expiry']} {leg['strike']} PUT "
            f"({leg['horizon']}, {leg['dte']} DTE, {leg['settlement']}-settled) LIMIT {leg['limit_price']}; "
            f"est. {leg['est_premium']:.2f} (${float(leg['est_cost_usd']):,.2f}), "
            f"max ${float(leg['max_cost_usd']):,.2f}, capped by {leg['capped_by']}"
        )
    for s in t.get("suppressed", []):
        lines.append(f"    - {s['horizon']}: not proposed ({s['reason']})")
    lines.append(f"    {t['estimate_note']}")
    if t.get("csv"):
        lines.append(f"  CSV: {t['csv']}")
    return lines
