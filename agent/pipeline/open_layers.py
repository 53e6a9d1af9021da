"""The open layers (what still counts against B) from the proposals journal.

A proposal that could be executed (``simulated`` or ``planned``; a failed simulation or planning
spent nothing, like the spend ledger) is an open layer: a put's premium until the put's maturity,
a top-up or repay for ``policy.layer_hold_days`` after it was proposed. The policy adds them up
(:func:`agent.policy.budget.budget_state`); this module only reads the records.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_CEILING, Decimal
from typing import Any

from agent.policy.budget import OpenLayer, protection_layer, put_layer

_SPENT = ("simulated", "planned")
_CENT = Decimal("0.01")


def _usd(x: Any) -> Decimal:
    # The journal carries the spend as a JSON number; rounded up to cents so B is never
    # under-counted.
    return Decimal(str(x)).quantize(_CENT, rounding=ROUND_CEILING)


def open_layers_from_journal(records: Iterable[dict[str, Any]], hold_days: int) -> list[OpenLayer]:
    out: list[OpenLayer] = []
    for r in records:
        sizing, pol = r.get("sizing"), r.get("policy")
        if r.get("status") not in _SPENT or not isinstance(sizing, dict):
            continue
        if not isinstance(pol, dict) or "at" not in pol or sizing.get("spend_usd") is None:
            continue
        if str(pol.get("action_key", "")).startswith("guard:"):
            continue  # the guard spends its own budget, not B (agent/pipeline/guarding.py)
        at, spend = int(pol["at"]), _usd(sizing["spend_usd"])
        key = str(r.get("idempotency_key", ""))
        if r.get("action") == "option_put":
            opt = r.get("option") or {}
            maturity = opt.get("maturity")
            # without a maturity the premium is held like a protection layer
            out.append(
                put_layer(key, spend, at, int(maturity))
                if maturity is not None
                else protection_layer(key, spend, at, hold_days)
            )
        else:
            out.append(protection_layer(key, spend, at, hold_days))
    return out
