"""``hedge-agent backtest --sweep KEY=V1,V2,...``: the backtest over a grid of settings.

KEY is a configuration path under ``signals.`` or ``policy.`` (``signals.s1.drawdown_fraction``,
``policy.gate_mode``, ``signals.s3.direction``, ``policy.layer_hold_days``, ...); each value is
validated by the same models a config file goes through. The data is loaded once and the
signals of each day are computed once per signal config (:class:`agent.backtest.engine.Replay`),
so a setting that changes only the policy costs one pass of ``decide`` over the days.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.backtest.data import HistoricalData
from agent.backtest.engine import BacktestPosition, Replay, build_inputs, replay_decisions
from agent.core.errors import ConfigError
from agent.policy import Decision, PolicyConfig
from agent.signals import SignalsConfig

# The named stress episodes the table reports (inclusive UTC days).
NAMED_EPISODES: tuple[tuple[str, date, date], ...] = (
    ("Mar2020", date(2020, 3, 9), date(2020, 3, 20)),
    ("May2022", date(2022, 5, 7), date(2022, 5, 20)),
    ("Jun2022", date(2022, 6, 10), date(2022, 6, 20)),
    ("Nov2022", date(2022, 11, 7), date(2022, 11, 16)),
    ("Aug2024", date(2024, 8, 2), date(2024, 8, 9)),
)
CALM_YEAR = 2023


@dataclass(frozen=True)
class SweepAxis:
    key: str
    values: tuple[str, ...]


def parse_axis(text: str) -> SweepAxis:
    key, sep, vals = text.partition("=")
    key = key.strip()
    values = tuple(v.strip() for v in vals.split(",") if v.strip())
    if not sep or not key or not values:
        raise ConfigError(f"--sweep {text!r}: expected KEY=V1,V2,...")
    root = key.split(".", 1)[0]
    if root not in ("signals", "policy") or "." not in key:
        raise ConfigError(f"--sweep {text!r}: KEY must start with signals. or policy.")
    return SweepAxis(key, values)


def _set(model: BaseModel, path: Sequence[str], value: str, full_key: str) -> BaseModel:
    """A copy of ``model`` with ``path`` set to ``value``, validated like a config file."""
    data: dict[str, Any] = model.model_dump()
    node = data
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            raise ConfigError(f"--sweep: unknown key {full_key}")
        node = nxt
    if path[-1] not in node:
        raise ConfigError(f"--sweep: unknown key {full_key}")
    node[path[-1]] = value
    try:
        return type(model).model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"--sweep {full_key}={value}: {err['msg']}") from None


def apply_setting(
    scfg: SignalsConfig, pcfg: PolicyConfig, key: str, value: str
) -> tuple[SignalsConfig, PolicyConfig]:
    root, *path = key.split(".")
    if root == "signals":
        s = _set(scfg, path, value, key)
        assert isinstance(s, SignalsConfig)
        return s, pcfg
    p = _set(pcfg, path, value, key)
    assert isinstance(p, PolicyConfig)
    return scfg, p


@dataclass(frozen=True)
class SweepRow:
    setting: tuple[tuple[str, str], ...]
    trigger_days: int
    acted_days: int
    calm_acted_per_year: float | None  # acted days per year in CALM_YEAR (None: not in range)
    episodes_acted: tuple[str, ...]
    proposed_usd: Decimal
    max_open_usd: Decimal  # the largest open-layer total after any day

    def record(self) -> dict[str, Any]:
        return {
            "setting": dict(self.setting),
            "trigger_days": self.trigger_days,
            "acted_days": self.acted_days,
            f"acted_per_year_{CALM_YEAR}": self.calm_acted_per_year,
            "episodes_acted": list(self.episodes_acted),
            "proposed_usd": str(self.proposed_usd),
            "max_open_layers_usd": str(self.max_open_usd),
        }


def summarize(
    replay: Replay, decisions: Sequence[Decision], setting: tuple[tuple[str, str], ...]
) -> SweepRow:
    """The row of one setting from its trigger days' decisions (every other day proposes
    nothing)."""
    trig = [d for d in decisions if d.trigger]
    acted = [date.fromisoformat(d.session_id) for d in decisions if d.acted]
    calm_days = sum(1 for d in replay.days if d.year == CALM_YEAR)
    calm_acted = sum(1 for d in acted if d.year == CALM_YEAR)
    calm_rate = calm_acted * 365 / calm_days if calm_days else None
    eps = tuple(name for name, lo, hi in NAMED_EPISODES if any(lo <= d <= hi for d in acted))
    proposed = sum((d.proposed_spend_usd for d in decisions), Decimal(0))
    max_open = max(
        (d.open_layers_usd + d.proposed_spend_usd for d in decisions), default=Decimal(0)
    )
    return SweepRow(setting, len(trig), len(acted), calm_rate, eps, proposed, max_open)


def run_sweep(
    data: HistoricalData,
    start: date,
    end: date,
    axes: Sequence[SweepAxis],
    *,
    signals_cfg: SignalsConfig | None = None,
    policy_cfg: PolicyConfig | None = None,
    position: BacktestPosition | None = None,
    options_enabled: bool = True,
    replay: Replay | None = None,
) -> list[SweepRow]:
    """One row per point of the grid (the product of the axes, in the order given)."""
    base_s = signals_cfg or SignalsConfig()
    base_p = policy_cfg or PolicyConfig()
    settings = [
        tuple(zip((a.key for a in axes), combo, strict=True))
        for combo in itertools.product(*(a.values for a in axes))
    ]
    # validate the whole grid before the first replay, so a typo fails fast
    configs = []
    for setting in settings:
        s, p = base_s, base_p
        for key, value in setting:
            s, p = apply_setting(s, p, key, value)
        configs.append((setting, s, p))
    if replay is None:
        replay = Replay(build_inputs(data), start, end)
    pos = (position or BacktestPosition()).snapshot()
    rows = []
    for setting, s, p in configs:
        decisions = [
            dec
            for _, _, _, dec in replay_decisions(
                replay, s, p, pos, options_enabled, trigger_days_only=True
            )
        ]
        rows.append(summarize(replay, decisions, setting))
    return rows


def sweep_table(rows: Sequence[SweepRow]) -> list[str]:
    if not rows:
        return ["(empty sweep)"]
    keys = [k for k, _ in rows[0].setting]
    labels = [k.split(".")[-1] for k in keys]
    widths = [
        max(len(lab), *(len(dict(r.setting)[k]) for r in rows))
        for lab, k in zip(labels, keys, strict=True)
    ]
    ep_w = len(",".join(n for n, _, _ in NAMED_EPISODES))
    head = (
        "  ".join(f"{lab:<{w}}" for lab, w in zip(labels, widths, strict=True))
        + f"  {'trig':>4}  {'acted':>5}  {f'{CALM_YEAR}/yr':>7}  {'episodes acted in':<{ep_w}}"
        + f"  {'proposed':>12}  {'max open':>12}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        vals = dict(r.setting)
        calm = "n/a" if r.calm_acted_per_year is None else f"{r.calm_acted_per_year:.1f}"
        lines.append(
            "  ".join(f"{vals[k]:<{w}}" for k, w in zip(keys, widths, strict=True))
            + f"  {r.trigger_days:>4}  {r.acted_days:>5}  {calm:>7}  "
            + f"{','.join(r.episodes_acted) or '-':<{ep_w}}"
            + f"  ${r.proposed_usd:>11,.0f}  ${r.max_open_usd:>11,.0f}"
        )
    lines.append("")
    lines.append(
        "episodes: "
        + ", ".join(f"{n} {lo}..{hi}" for n, lo, hi in NAMED_EPISODES)
        + f"; {CALM_YEAR}/yr = acted days per year in {CALM_YEAR}"
    )
    return lines
