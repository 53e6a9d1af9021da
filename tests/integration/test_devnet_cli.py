"""``hedge-agent devnet up|status|down`` end to end: a detached anvil that outlives ``up``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from devnet_rpc import rpc_call_sync

from agent.cli import main
from agent.core.anvil import kill_process_group

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "devnet" / "deployment.json"
    yield path
    if path.exists():  # the test failed before `down`: do not leak the anvil
        pid = json.loads(path.read_text()).get("anvil_pid")
        if isinstance(pid, int):
            kill_process_group(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def test_up_status_down(deployment_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dep = str(deployment_file)
    assert main(["devnet", "up", "--deployment", dep]) == 0
    out = capsys.readouterr().out
    assert "Safe health factor: 1.9" in out
    record = json.loads(deployment_file.read_text())
    pid, url = record["anvil_pid"], record["rpc_url"]
    assert url.startswith("http://127.0.0.1:") and _alive(pid)
    assert os.getpgid(pid) == pid  # own process group, so `down` can kill all of it
    assert rpc_call_sync(url, "eth_chainId") == "0x7a69"

    assert main(["devnet", "up", "--deployment", dep]) == 2  # already up
    assert "already up" in capsys.readouterr().err

    assert main(["devnet", "status", "--deployment", dep]) == 0
    assert "Safe health factor" in capsys.readouterr().out

    assert main(["devnet", "down", "--deployment", dep]) == 0
    assert not deployment_file.exists()
    assert not _alive(pid)
    assert main(["devnet", "down", "--deployment", dep]) == 0  # already down is fine

    assert main(["devnet", "status", "--deployment", dep]) == 2
    assert "devnet is not up: no deployment file" in capsys.readouterr().err


def test_status_when_anvil_is_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps({"version": 1, "rpc_url": "http://127.0.0.1:9", "anvil_pid": None}))
    assert main(["devnet", "status", "--deployment", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: devnet at http://127.0.0.1:9 does not answer")
    assert len(err.splitlines()) == 1
    assert main(["devnet", "play", "stress", "--deployment", str(path)]) == 2
