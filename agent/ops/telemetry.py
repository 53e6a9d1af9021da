"""What the daemon exports about itself: Prometheus metrics and the health of its dependencies.

One ``Telemetry`` per daemon holds its own ``CollectorRegistry`` (not the process-global one),
so two agents in one test process never share counters. The runner reports facts to it at a few
call sites (a tick started, finished or failed; a dependency answered or not; a proposal was
recorded); it never reads the pipeline's state by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent.core.metrics import METRICS
from agent.core.rpc_pool import HeadCheck

PREFIX = "hedge_agent"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class DependencyState:
    ok: bool
    at: float  # wall clock of the last check
    error: str | None = None


class Telemetry:
    def __init__(
        self, *, tick_interval_s: float, error_budget: int, readiness_max_age_s: float = 30.0
    ) -> None:
        self.tick_interval_s = tick_interval_s
        self.error_budget = error_budget
        self.readiness_max_age_s = readiness_max_age_s
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.time()
        self.last_beat = self.started_at  # last sign of life of the tick loop
        self.dependencies: dict[str, DependencyState] = {}
        self.expected: set[str] = set()  # dependencies that must have answered before ready
        self.idle: dict[str, str] = {}  # dependencies deliberately not checked now, and why
        # Checked every tick (the chain RPC, the store): a last check older than
        # readiness_max_age_s is not ready, whatever it said (a hung RPC checks nothing).
        self.fresh: set[str] = set()
        self.providers: dict[str, dict[str, Any]] = {}  # chain -> each RPC URL's head and lag
        r = self.registry

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, tuple(labels), registry=r)

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, tuple(labels), registry=r)

        self.ticks = counter("ticks", "Ticks run, by outcome (ok, failed)", ["outcome"])
        self.tick_duration = Histogram(
            f"{PREFIX}_tick_duration_seconds",
            "Wall time of one tick (collect to sinks)",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.last_success = gauge(
            "last_successful_tick_timestamp_seconds", "Unix time the last successful tick ended"
        )
        self.head_block = gauge("head_block", "Block number the last tick read", ["chain"])
        self.block_lag = gauge(
            "block_lag_seconds",
            "Wall clock minus the timestamp of the block the last tick read",
            ["chain"],
        )
        self.signal_value = gauge(
            "signal_value", "Headline value of a signal per subject", ["signal", "subject"]
        )
        self.signal_firing = gauge(
            "signal_firing",
            "1 when the signal fires for the subject, 0 when quiet, -1 on insufficient data",
            ["signal", "subject"],
        )
        self.decisions = counter(
            "decisions",
            "Policy outcomes per tick, by action (none when nothing was sized) and status "
            "(sized, suppressed, gated, quiet, paused)",
            ["action", "status"],
        )
        self.proposals = counter(
            "proposals",
            "Proposals recorded in the journal, by action and status",
            ["action", "status"],
        )
        self.simulations = counter(
            "simulations", "Fork simulations, by outcome (success, failed)", ["outcome"]
        )
        self.source_requests = counter("source_requests", "Requests per RPC/API source", ["source"])
        self.source_errors = counter("source_errors", "Failed requests per source", ["source"])
        self.source_retries = counter("source_retries", "Retried requests per source", ["source"])
        self.source_latency = Histogram(
            f"{PREFIX}_source_latency_seconds",
            "Latency of one request per source",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpc_rotations = counter(
            "rpc_rotations",
            "Switches to the next RPC URL of a chain, by reason (429, 5xx, timeout, error)",
            ["chain", "reason"],
        )
        self.provider_head = gauge(
            "rpc_provider_head_block",
            "Head block each RPC URL of a chain answered at its last head check",
            ["chain", "provider"],
        )
        self.provider_lag = gauge(
            "rpc_provider_lag_blocks",
            "Blocks each RPC URL of a chain was behind the best head at its last head check",
            ["chain", "provider"],
        )
        self.session_cap = gauge("session_cap_usd", "Session (UTC day) spend cap")
        self.session_spent = gauge("session_spent_usd", "Spend proposed in the current session")
        self.session_remaining = gauge("session_remaining_usd", "What the session cap still allows")
        self.layer_budget = gauge(
            "layer_budget_usd", "Budget of the layer the last decision opened (0 when none)"
        )
        self.layer_used = gauge(
            "layer_used_usd", "Spend the last decision's actions take from its layer"
        )
        # The open-layer budget B (issue 9): the layers still open take from it until they
        # expire (policy.layer_hold_days); the room is what a new layer may still spend.
        self.open_layer_budget = gauge("open_layer_budget_usd", "The open-layer budget B")
        self.open_layers = gauge(
            "open_layers_usd", "Spend of the layers still open against B (the last decision's view)"
        )
        self.open_layer_room = gauge(
            "open_layer_room_usd", "What B still allows a new layer (the last decision's view)"
        )
        self.error_budget_left = gauge(
            "error_budget_remaining", "Consecutive failed ticks left before the daemon halts"
        )
        self.paused = gauge("paused", "1 while proposals are paused (hedge-agent pause)")
        self.dependency_up = gauge(
            "dependency_up", "1 if the dependency answered its last check", ["dependency"]
        )
        self.notifications = counter(
            "notifications",
            "Notifications by kind and outcome (sent, failed, deduplicated, dropped)",
            ["kind", "outcome"],
        )
        self.notify_queue = gauge("notification_queue_depth", "Notifications waiting to be sent")
        self.forks_recycled = counter(
            "forks_recycled", "Simulator forks restarted because their memory grew"
        )
        # The liquidation guard (issue 22): each position as the last tick read it.
        pos = ["position", "chain"]
        self.position_hf = gauge("position_health_factor", "Health factor of the position", pos)
        self.guard_trigger = gauge(
            "guard_trigger_health_factor", "The guard's trigger in force (raised under stress)", pos
        )
        self.liquidation_price = gauge(
            "liquidation_price_usd", "Collateral price at which HF = 1", [*pos, "asset"]
        )
        self.guard_price = gauge(
            "guard_price_usd", "Collateral price at which HF = the guard's trigger", [*pos, "asset"]
        )
        self.liquidation_distance = gauge(
            "liquidation_distance_ratio", "(price - liquidation price) / price", pos
        )
        self.guard_pending = gauge(
            "guard_pending", "1 while a guard proposal is pending (disarmed), 0 armed", pos
        )
        self.guard_critical = gauge("guard_critical", "1 while HF <= the critical HF", pos)
        self.guard_spent = gauge("guard_spent_usd", "The guard's spend today", pos)
        self.guard_budget = gauge("guard_budget_usd", "The guard's budget per day", pos)
        # Each guardian account (issue 23 item 1) on each chain, refreshed every its refresh_s;
        # "guardian" is its [[guardians]] name (its account for an unnamed [guardian]).
        self.guardian_balance = gauge(
            "guardian_balance_usd",
            "The guardian's balance at the oracle price",
            ["guardian", "chain", "asset"],
        )
        self.guardian_gas = gauge(
            "guardian_gas_eth", "The guardian's native balance for gas", ["guardian", "chain"]
        )
        self.guardian_covers = gauge(
            "guardian_actions_covered",
            "Guard actions (trigger to target at the current debt) the guardian's balances pay "
            "for the position; -1 while the position has no debt",
            ["guardian", "chain", "position"],
        )
        self.error_budget_left.set(error_budget)
        self.paused.set(0)
        METRICS.observers.append(self._observe_request)

    def close(self) -> None:
        if self._observe_request in METRICS.observers:
            METRICS.observers.remove(self._observe_request)

    # -- fed by the RPC and HTTP client middleware (agent.core.metrics) ------------------------

    def _observe_request(
        self, source: str, method: str, latency_s: float, error: bool, retry: bool
    ) -> None:
        self.source_requests.labels(source).inc()
        self.source_latency.labels(source).observe(latency_s)
        if error:
            self.source_errors.labels(source).inc()
        if retry:
            self.source_retries.labels(source).inc()

    # -- the tick loop ---------------------------------------------------------------------------

    def beat(self) -> None:
        self.last_beat = time.time()

    def tick_ok(self, duration_s: float) -> None:
        self.ticks.labels("ok").inc()
        self.tick_duration.observe(duration_s)
        self.last_success.set(time.time())
        self.error_budget_left.set(self.error_budget)
        self.beat()

    def tick_failed(self, duration_s: float, failures: int) -> None:
        self.ticks.labels("failed").inc()
        self.tick_duration.observe(duration_s)
        self.error_budget_left.set(max(0, self.error_budget - failures))
        self.beat()

    def chain_read(self, chain: str, block_number: int, block_ts: int) -> None:
        self.head_block.labels(chain).set(block_number)
        self.block_lag.labels(chain).set(time.time() - block_ts)

    def signals(self, results: Iterable[Any]) -> None:
        """``results``: ``SignalResult``-shaped records (id, subject, value, status)."""
        for r in results:
            if r.value is not None:
                self.signal_value.labels(r.id, r.subject).set(r.value)
            state = 1 if r.status == "firing" else (0 if r.status == "quiet" else -1)
            self.signal_firing.labels(r.id, r.subject).set(state)

    def decision(self, decision: Any, *, paused: bool) -> None:
        """``decision``: a ``policy.Decision``."""
        actions = decision.actions
        for a in actions:
            kind = "option_put" if hasattr(a, "horizon") else "protection"
            self.decisions.labels(kind, "paused" if paused else "sized").inc()
        for s in decision.suppressed:
            self.decisions.labels(str(s.action_key).split(":")[0], "suppressed").inc()
        if not actions:
            status = "gated" if decision.trigger and not decision.acted else "quiet"
            self.decisions.labels("none", status).inc()
        self.session_cap.set(float(decision.session_cap_usd))
        self.session_spent.set(float(decision.session_spent_before_usd))
        self.session_remaining.set(float(decision.session_remaining_usd))
        self.layer_budget.set(float(decision.layer_usd))
        self.layer_used.set(float(decision.proposed_spend_usd))
        self.open_layer_budget.set(float(decision.budget_usd))
        self.open_layers.set(float(decision.open_layers_usd))
        self.open_layer_room.set(float(decision.budget_room_usd))

    def guard(self, views: Iterable[Any]) -> None:
        """``views``: ``agent.pipeline.guarding.GuardView`` records of the last tick."""
        for v in views:
            p, verdict = v.position, v.verdict
            labels = (p.label, p.chain or "")
            if verdict.health_factor_wad < 2**255:
                self.position_hf.labels(*labels).set(verdict.health_factor_wad / 1e18)
            self.guard_trigger.labels(*labels).set(verdict.trigger.trigger_hf_wad / 1e18)
            self.guard_pending.labels(*labels).set(1 if verdict.state.pending else 0)
            self.guard_critical.labels(*labels).set(1 if verdict.critical else 0)
            self.guard_spent.labels(*labels).set(float(v.spent_usd))
            self.guard_budget.labels(*labels).set(float(v.cfg.budget_usd))
            g = v.prices
            if g is not None:
                self.liquidation_price.labels(*labels, v.asset).set(g.liquidation_price / 1e8)
                self.guard_price.labels(*labels, v.asset).set(g.guard_price / 1e8)
                self.liquidation_distance.labels(*labels).set(g.liquidation_distance_bps / 1e4)

    def session_ledger(self, cap_usd: float, spent_usd: float) -> None:
        """The ledger after this tick's proposals (the decision saw it before them)."""
        self.session_spent.set(spent_usd)
        self.session_remaining.set(max(0.0, cap_usd - spent_usd))

    def proposal(self, record: Mapping[str, Any]) -> None:
        self.proposals.labels(str(record.get("action")), str(record.get("status"))).inc()
        sim = record.get("simulation")
        if isinstance(sim, Mapping):
            self.simulations.labels("success" if sim.get("success") else "failed").inc()

    def set_paused(self, paused: bool) -> None:
        self.paused.set(1 if paused else 0)

    # -- dependencies ----------------------------------------------------------------------------

    def expect(self, *names: str) -> None:
        self.expected.update(names)
        for n in names:
            self.dependency_up.labels(n).set(0)

    def dependency(self, name: str, ok: bool, error: str | None = None) -> None:
        self.idle.pop(name, None)
        self.dependencies[name] = DependencyState(ok, time.time(), error)
        self.dependency_up.labels(name).set(1 if ok else 0)

    def set_idle(self, name: str, why: str) -> None:
        self.idle[name] = why

    def expect_fresh(self, *names: str) -> None:
        """``names`` are checked every tick: their readiness expires."""
        self.fresh.update(names)

    def rpc_heads(self, chain: str, check: HeadCheck) -> None:
        """A head check of a chain's RPC URLs (``RpcPool.check_heads``)."""
        for h in check.heads:
            if h.head is not None:
                self.provider_head.labels(chain, h.source).set(h.head)
                self.provider_lag.labels(chain, h.source).set(h.lag_blocks)
        self.providers[chain] = check.describe()

    # -- the HTTP answers ------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def health(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """Alive when the loop showed a sign of life within three tick intervals."""
        now = time.time() if now is None else now
        age = now - self.last_beat
        limit = 3 * self.tick_interval_s
        return age <= limit, {"last_beat_age_s": round(age, 3), "limit_s": limit}

    def readiness(self, now: float | None = None) -> tuple[bool, dict[str, Any]]:
        """Ready when every expected dependency answered its last check (idle ones excepted),
        and the dependencies checked every tick were checked within ``readiness_max_age_s``."""
        now = time.time() if now is None else now
        deps: dict[str, Any] = {}
        ready = True
        for name in sorted(self.expected | set(self.dependencies)):
            if name in self.idle:
                deps[name] = {"ok": True, "idle": self.idle[name]}
                continue
            st = self.dependencies.get(name)
            if st is None:
                deps[name] = {"ok": False, "error": "not checked yet"}
                ready = False
                continue
            age = now - st.at
            ok = st.ok
            deps[name] = {"ok": ok, "checked_at": round(st.at, 3), "age_s": round(age, 1)}
            if st.error:
                deps[name]["error"] = st.error
            if ok and name in self.fresh and age > self.readiness_max_age_s:
                ok = False
                deps[name] |= {
                    "ok": False,
                    "error": f"last checked {age:.0f}s ago, more than readiness_max_age_s "
                    f"({self.readiness_max_age_s:g}s): the tick is stuck or failing",
                }
            ready = ready and ok
        body: dict[str, Any] = {"ready": ready, "dependencies": deps}
        if self.providers:
            body["rpc_providers"] = self.providers
        return ready, body
