"""``hedge-agent check`` against the real devnet: a good configuration passes; each seeded
misconfiguration is reported on its own line (and only once), and the exit code is 1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.config import load_settings
from agent.core.anvil import AnvilProcess, free_port
from agent.devnet.deploy import write_deployment
from agent.pipeline.parts import build_parts

pytestmark = pytest.mark.integration

EOA = "0x000000000000000000000000000000000000c0DE"  # nothing deployed there
# A throwaway key (not a Safe owner on the devnet).
STRANGER_KEY = "0x" + "11" * 32
STRANGER = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"


def _config(tmp_path: Path, dep: Path, extra: str = "", agent: str = "") -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(
        "[agent]\n"
        + (
            agent
            or f'store_path = "{tmp_path}/agent.sqlite"\njournal_path = "{tmp_path}/p.jsonl"\n'
        )
        + f'[chain]\nname = "devnet"\ndeployment = "{dep}"\n'
        + f'[sinks]\nsafe_tx_builder_dir = "{tmp_path}/stb"\n'
        + "[collectors.defillama]\nenabled = false\n[collectors.hyperliquid]\nenabled = false\n"
        + "[collectors.dydx]\nenabled = false\n[collectors.closes]\nenabled = false\n"
        + extra
    )
    return p


def _check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check", "--config", str(config)])
    return code, capsys.readouterr().out.strip().splitlines()


@pytest.fixture
def dep_path(devnet: dict[str, Any], tmp_path: Path) -> Path:
    p = tmp_path / "deployment.json"
    write_deployment(devnet, p)
    return p


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_good_configuration_passes(
    dep_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _check(_config(tmp_path, dep_path), capsys)
    assert code == 0, lines
    assert len(lines) == 1 and lines[0].startswith("ok: ") and "checks passed" in lines[0]
    assert not list(tmp_path.glob("stb/.check-*"))  # probes are removed
    assert not (tmp_path / "agent.sqlite").exists()  # check creates no store


def test_every_seeded_misconfiguration_on_its_own_line(
    devnet: dict[str, Any],
    dep_path: Path,
    tmp_path: Path,
    busy_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "a-file").write_text("")
    closed = free_port()  # nothing listens there
    url = devnet["rpc_url"]
    eth_feed = {k: v for k, v in devnet["chainlink"].items()}
    feeds = "".join(
        f'[chain.feeds."{name}"]\naddress = "{EOA if name == "ETH/USD" else addr}"\n'
        for name, addr in eth_feed.items()
    )
    extra = (
        feeds
        + f'[position]\nmultisend_call_only = "{EOA}"\n'
        + f'[collectors.fred]\nenabled = true\nbase_url = "{url}"\n'  # reachable, no key
        + f'[collectors.bls]\nenabled = true\napi_key = "k"\nbase_url = "http://127.0.0.1:{closed}/v2"\n'
        + "[sinks.live]\nenabled = true\n"
        + f'signer_key = "{STRANGER_KEY}"\nprivate_rpc_url = "{url}"\n'
        + '[sinks.notify]\nurls = ["nosuch://token@host"]\n'
    )
    agent = (
        f'store_path = "{tmp_path}/a-file/agent.sqlite"\n'
        + f'journal_path = "{tmp_path}/a-file/p.jsonl"\n'
        + f'[agent.http]\nlisten = "127.0.0.1:{busy_port}"\n'
    )
    code, lines = _check(_config(tmp_path, dep_path, extra, agent), capsys)
    assert code == 1
    problems = [x for x in lines if x.startswith("problem: ")]
    expected = [
        "collectors.fred: enabled but api_key is not set",
        f"agent.store_path directory {tmp_path}/a-file: {tmp_path}/a-file is a file",
        f"agent.journal_path directory {tmp_path}/a-file: {tmp_path}/a-file is a file",
        f"agent.http.listen 127.0.0.1:{busy_port}: cannot bind",
        "sinks.notify.urls: apprise does not accept a nosuch:// URL",
        f'chain.feeds."ETH/USD" {EOA}: no contract code on chain',
        f"position.multisend_call_only {EOA}: no contract code on chain",
        f"sinks.live: signer {STRANGER} must be an owner of a threshold-1 Safe",
        f"collectors.bls.base_url http://127.0.0.1:{closed}/v2: unreachable",
    ]
    for e in expected:
        hits = [p for p in problems if e in p]
        assert len(hits) == 1, (e, problems)
    assert len(problems) == len(expected), problems
    assert lines[-1] == f"{len(expected)} problem(s), " + lines[-1].split(", ", 1)[1]
    assert "token" not in "\n".join(lines)  # the notify URL's secret is never echoed


def test_a_wrong_chain_is_one_line(
    dep_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with AnvilProcess(chain_id=1) as other:  # an RPC on another chain
        extra = ""
        config = _config(tmp_path, dep_path, extra)
        text = config.read_text().replace(
            '[chain]\nname = "devnet"\n', f'[chain]\nname = "devnet"\nrpc_url = "{other.url}"\n'
        )
        config.write_text(text)
        code, lines = _check(config, capsys)
    assert code == 1
    assert lines[:-1] == [
        f"problem: chain.rpc_url {other.url}: chain id 1, configuration expects 31337"
    ]


def test_a_broken_schema_is_the_only_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "agent.toml"
    p.write_text("[agent]\ntick_intervl_s = 5\n")
    code, lines = _check(p, capsys)
    assert code == 1
    assert len(lines) == 2 and "agent.tick_intervl_s: Extra inputs are not permitted" in lines[0]


def test_every_chain_of_a_multichain_config_is_checked(
    dep_path: Path,
    devnet2: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dep2 = tmp_path / "deployment-2.json"
    write_deployment(devnet2, dep2)
    common = (
        f'[agent]\nstore_path = "{tmp_path}/agent.sqlite"\njournal_path = "{tmp_path}/p.jsonl"\n'
        f'[sinks]\nsafe_tx_builder_dir = "{tmp_path}/stb"\n'
        "[collectors.defillama]\nenabled = false\n[collectors.hyperliquid]\nenabled = false\n"
        "[collectors.dydx]\nenabled = false\n[collectors.closes]\nenabled = false\n"
    )
    chains = (
        f'[[chains]]\nname = "one"\ndeployment = "{dep_path}"\n'
        f'[[chains]]\nname = "two"\ndeployment = "{dep2}"\n'
        '[[positions]]\nchain = "one"\n[[positions]]\nchain = "two"\n'
    )
    good = tmp_path / "multi.toml"
    good.write_text(common + chains)
    code, lines = _check(good, capsys)
    assert code == 0, lines
    one = load_settings(good)  # independent of check: what it should have looked at
    assert [c.chain_id for c in build_parts(one).chains] == [31337, 31338]
    # chain two answering for another chain is named as chain two's problem, on one line
    with AnvilProcess(chain_id=1) as other:
        bad = tmp_path / "bad.toml"
        bad.write_text(
            common + chains.replace('name = "two"\n', f'name = "two"\nrpc_url = "{other.url}"\n')
        )
        code, lines = _check(bad, capsys)
    assert code == 1
    assert lines[:-1] == [
        f"problem: chains.two.rpc_url {other.url}: chain id 1, configuration expects 31338"
    ]
