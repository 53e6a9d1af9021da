"""The pause switch file, the exporter's health and readiness rules, and the listen address."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.core.errors import ConfigError
from agent.core.metrics import METRICS
from agent.ops.pause import PauseSwitch, pause_path
from agent.ops.server import parse_listen
from agent.ops.telemetry import Telemetry


def test_pause_file_sits_next_to_the_store_and_round_trips(tmp_path: Path) -> None:
    path = pause_path(tmp_path / "agent.sqlite")
    assert path == tmp_path / "agent.pause.json"
    switch = PauseSwitch(path)
    assert not switch.read().paused
    state = switch.pause("maintenance")
    assert switch.read() == state and state.paused and state.reason == "maintenance"
    assert PauseSwitch(path).read().paused  # a new process (a restart) sees it
    switch.resume()
    assert not switch.read().paused


def test_an_unreadable_pause_file_fails_safe(tmp_path: Path) -> None:
    path = tmp_path / "agent.pause.json"
    path.write_text("{not json")
    state = PauseSwitch(path).read()
    assert state.paused and state.reason is not None and "unreadable" in state.reason


def test_listen_address_parsing() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen("9464")


def test_health_is_three_tick_intervals() -> None:
    t = Telemetry(tick_interval_s=10, error_budget=5)
    try:
        t.beat()
        assert t.health(time.time() + 29)[0]
        assert not t.health(time.time() + 31)[0]
    finally:
        t.close()


def test_ready_only_when_every_expected_dependency_answered() -> None:
    t = Telemetry(tick_interval_s=10, error_budget=5)
    try:
        t.expect("rpc:devnet", "store", "fork")
        ready, body = t.readiness()
        assert not ready and body["dependencies"]["fork"]["error"] == "not checked yet"
        t.dependency("rpc:devnet", True)
        t.dependency("store", True)
        t.dependency("fork", False, "anvil died")
        assert not t.readiness()[0]
        t.set_idle("fork", "paused")
        assert t.readiness()[0]
        t.dependency("fork", True)
        t.dependency("api:defillama", False, "HTTP 500")  # a dependency seen later counts too
        ready, body = t.readiness()
        assert not ready and body["dependencies"]["api:defillama"]["error"] == "HTTP 500"
    finally:
        t.close()


def test_readiness_expires_when_a_tick_checks_nothing() -> None:
    """Issue 24.8: an RPC that hangs stops the tick from checking anything; the last check
    (it answered) must not keep /readyz green for ever. Dependencies not checked every tick
    (HTTP APIs on their own schedule) do not expire."""
    t = Telemetry(tick_interval_s=5, error_budget=5, readiness_max_age_s=30)
    try:
        t.expect("rpc:devnet", "store", "api:defillama")
        t.expect_fresh("rpc:devnet", "store")
        for name in ("rpc:devnet", "store", "api:defillama"):
            t.dependency(name, True)
        now = time.time()
        assert t.readiness(now + 29)[0]
        ready, body = t.readiness(now + 46)
        rpc = body["dependencies"]["rpc:devnet"]
        assert not ready and not rpc["ok"] and rpc["age_s"] >= 46
        assert "last checked 46s ago, more than readiness_max_age_s (30s)" in rpc["error"]
        assert body["dependencies"]["api:defillama"]["ok"]  # on its own schedule
        t.dependency("rpc:devnet", True)
        t.dependency("store", True)
        assert t.readiness(time.time() + 1)[0]  # a new check makes it ready again
    finally:
        t.close()


def test_request_counters_follow_the_shared_client_metrics() -> None:
    t = Telemetry(tick_interval_s=10, error_budget=5)
    try:
        METRICS.record("rpc:devnet", "eth_call", 0.02)
        METRICS.record("rpc:devnet", "eth_call", 0.03, error=True, retry=True)
        METRICS.reset()  # the per-tick counters reset; the exporter's totals do not
        METRICS.record("rpc:devnet", "eth_call", 0.01)
        t.tick_failed(1.0, failures=2)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(t.render().decode())
            for s in fam.samples
        }
        src = (("source", "rpc:devnet"),)
        assert samples[("hedge_agent_source_requests_total", src)] == 3
        assert samples[("hedge_agent_source_errors_total", src)] == 1
        assert samples[("hedge_agent_source_retries_total", src)] == 1
        assert samples[("hedge_agent_source_latency_seconds_count", src)] == 3
        assert samples[("hedge_agent_error_budget_remaining", ())] == 3
    finally:
        t.close()
    METRICS.record("rpc:devnet", "eth_call", 0.01)  # a closed exporter no longer listens
    assert t.render().count(b'hedge_agent_source_requests_total{source="rpc:devnet"} 3.0') == 1


def test_decision_metrics_count_actions_and_session() -> None:
    t = Telemetry(tick_interval_s=10, error_budget=5)
    try:
        action = SimpleNamespace()  # a protection action (no horizon)
        put = SimpleNamespace(horizon="15-45")
        decision = SimpleNamespace(
            actions=(action, put),
            suppressed=(SimpleNamespace(action_key="option:0-7"),),
            trigger=True,
            acted=True,
            session_cap_usd=250_000,
            session_spent_before_usd=50_000,
            session_remaining_usd=0,
            layer_usd=200_000,
            proposed_spend_usd=200_000,
            budget_usd=1_000_000,
            open_layers_usd=300_000,
            budget_room_usd=700_000,
        )
        t.decision(decision, paused=True)
        text = t.render().decode()
        assert 'hedge_agent_decisions_total{action="protection",status="paused"} 1.0' in text
        assert 'hedge_agent_decisions_total{action="option_put",status="paused"} 1.0' in text
        assert 'hedge_agent_decisions_total{action="option",status="suppressed"} 1.0' in text
        assert "hedge_agent_session_cap_usd 250000.0" in text
        assert "hedge_agent_layer_used_usd 200000.0" in text
        assert "hedge_agent_open_layer_budget_usd 1e+06" in text
        assert "hedge_agent_open_layers_usd 300000.0" in text
        assert "hedge_agent_open_layer_room_usd 700000.0" in text
    finally:
        t.close()
