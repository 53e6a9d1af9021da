"""One stressed devnet for the e2e modules: `hedge-agent devnet up` and `devnet play stress`
through the real CLI, once per session (the play is most of an e2e module's set-up time). Most
modules use chain 1 only; when the session has a test on two chains (``two_chains``,
test_multichain), it is `devnet up --chains 2` and the play runs on both. Each module starts
from the same chain state: ``stressed_devnet`` reverts every chain to the snapshot taken when
the module starts, when it ends. A test that takes the chain away (kills its anvil) starts a
devnet of its own instead."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.devnet.chain import Chain

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"hedge-agent {' '.join(args)} failed:\n{proc.stderr[-4000:]}")


@dataclass(frozen=True)
class StressedDevnet:
    deployment: Path  # chain 1's deployment file (`devnet up --deployment`)
    feed: Path  # the scenario feed the play wrote
    dep: dict[str, Any]  # chain 1's record
    dep2: dict[str, Any] | None  # chain 2's record (deployment-2.json beside chain 1's file)

    def config(self, tmp: Path, base: str = "devnet.toml") -> str:
        """``config/<base>`` pointed at this devnet, with its store, journal and files in
        ``tmp``."""
        return (
            (ROOT / "config" / base)
            .read_text()
            .replace("out/devnet/deployment.json", str(self.deployment))
            .replace("out/devnet/scenario_feed.json", str(self.feed))
            .replace("var/demo/", f"{tmp}/")
        )


@pytest.fixture(scope="session")
def _stressed_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StressedDevnet]:
    tmp = tmp_path_factory.mktemp("stressed-devnet")
    deployment, feed = tmp / "deployment.json", tmp / "feed.json"
    # The second chain only for a session that has a two-chain test (it doubles the set-up).
    two = any("two_chains" in getattr(i, "fixturenames", ()) for i in request.session.items)
    _cli("devnet", "up", "--chains", "2" if two else "1", "--deployment", str(deployment))
    try:
        _cli("devnet", "play", "stress", "--deployment", str(deployment), "--feed", str(feed))
        dep2 = tmp / "deployment-2.json"
        yield StressedDevnet(
            deployment,
            feed,
            json.loads(deployment.read_text()),
            json.loads(dep2.read_text()) if two else None,
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "agent.cli", "devnet", "down", "--deployment", str(deployment)],
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def stressed_devnet(_stressed_session: StressedDevnet) -> Iterator[StressedDevnet]:
    deps = (_stressed_session.dep, _stressed_session.dep2)
    chains = [Chain(str(d["rpc_url"])) for d in deps if d is not None]
    snapshots = [chain.snapshot() for chain in chains]
    try:
        yield _stressed_session
    finally:
        for chain, snapshot in zip(chains, snapshots, strict=True):
            chain.revert(snapshot)
