"""Integration fixtures: one real anvil with the devnet deployed, shared by the session, and a
second devnet chain (``devnet2``: chain id 31338), built only when a test asks for it.

Tests that use a devnet chain are isolated with ``evm_snapshot``/``evm_revert`` on that chain
(a snapshot is consumed by the revert, so each test takes a fresh one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent.core.anvil import AnvilProcess, find_tool
from agent.core.errors import DevnetError
from agent.devnet.chain import Chain
from agent.devnet.deploy import deploy, devnet_chain_id

DEVNET_FIXTURES = {"devnet", "devnet_url", "devnet_chain"}
DEVNET2_FIXTURES = {"devnet2", "devnet2_url", "devnet2_chain"}


def _anvil(chain_id: int | None = None) -> Iterator[AnvilProcess]:
    try:
        find_tool("anvil")
    except DevnetError as exc:
        pytest.skip(str(exc))
    anvil = AnvilProcess(chain_id=chain_id)
    anvil.start()
    try:
        yield anvil
    finally:
        anvil.stop()  # kills the whole process group


@pytest.fixture(scope="session")
def devnet_anvil() -> Iterator[AnvilProcess]:
    yield from _anvil()


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


# The second devnet chain, as `hedge-agent devnet up --chains 2` starts it: chain id 31338, the
# same market at addresses disjoint from the first chain's. Session-scoped and lazy: the deploy
# (seconds) runs only in a session with a test that asks for it.
@pytest.fixture(scope="session")
def devnet2_anvil() -> Iterator[AnvilProcess]:
    yield from _anvil(devnet_chain_id(2))


@pytest.fixture(scope="session")
def devnet2(devnet2_anvil: AnvilProcess) -> dict[str, Any]:
    """Chain 2's deployment record (same shape as out/devnet/deployment-2.json)."""
    return deploy(devnet2_anvil.url, anvil_pid=devnet2_anvil.pid, chain_index=2)


@pytest.fixture(scope="session")
def devnet2_url(devnet2: dict[str, Any]) -> str:
    return str(devnet2["rpc_url"])


@pytest.fixture
def devnet2_chain(devnet2_url: str) -> Chain:
    return Chain(devnet2_url)


@pytest.fixture(autouse=True)
def _devnet_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Snapshot before and revert after every integration test that touches a devnet chain
    (each chain the test uses)."""
    if request.node.get_closest_marker("integration") is None:
        yield
        return
    used = set(request.fixturenames)
    urls = [
        request.getfixturevalue(url_fixture)
        for fixtures, url_fixture in (
            (DEVNET_FIXTURES, "devnet_url"),
            (DEVNET2_FIXTURES, "devnet2_url"),
        )
        if fixtures & used
    ]
    snaps = [(chain, chain.snapshot()) for chain in map(Chain, urls)]
    try:
        yield
    finally:
        leaked = [f"{c.url} evm_revert({s})" for c, s in snaps if not c.revert(s)]
        if leaked:
            raise DevnetError(f"{', '.join(leaked)} failed: devnet state leaked between tests")
