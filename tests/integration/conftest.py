"""Integration fixtures: one real anvil with the devnet deployed, shared by the session.

Tests that use the devnet are isolated with ``evm_snapshot``/``evm_revert`` (a snapshot is
consumed by the revert, so each test takes a fresh one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.core.anvil import AnvilProcess, find_tool
from agent.core.errors import DevnetError
from agent.devnet.chain import Chain
from agent.devnet.deploy import deploy

DEVNET_FIXTURES = {"devnet", "devnet_url", "devnet_chain"}


@pytest.fixture(scope="session")
def devnet_anvil() -> Iterator[AnvilProcess]:
    try:
        find_tool("anvil")
    except DevnetError as exc:
        pytest.skip(str(exc))
    anvil = AnvilProcess()
    anvil.start()
    try:
        yield anvil
    finally:
        anvil.stop()  # kills the whole process group


@pytest.fixture(scope="session")
def devnet(devnet_anvil: AnvilProcess) -> dict[str, Any]:
    """The deployment record (same shape as out/devnet/deployment.json)."""
    return deploy(devnet_anvil.url, anvil_pid=devnet_anvil.pid)


@pytest.fixture(scope="session")
def devnet_url(devnet: dict[str, Any]) -> str:
    return str(devnet["rpc_url"])


@pytest.fixture
def devnet_chain(devnet_url: str) -> Chain:
    return Chain(devnet_url)


@pytest.fixture(autouse=True)
def _devnet_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Snapshot before and revert after every integration test that touches the devnet."""
    uses_devnet = request.node.get_closest_marker("integration") is not None and bool(
        DEVNET_FIXTURES & set(request.fixturenames)
    )
    if not uses_devnet:
        yield
        return
    chain = Chain(request.getfixturevalue("devnet_url"))
    snap = chain.snapshot()
    try:
        yield
    finally:
        if not chain.revert(snap):
            raise DevnetError(f"evm_revert({snap}) failed: devnet state leaked between tests")
