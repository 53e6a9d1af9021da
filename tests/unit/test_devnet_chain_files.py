"""Where devnet chain k's files live, and which chain counts the command line accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.devnet.deploy import (
    DEFAULT_DEPLOYMENT_PATH,
    chain_deployment_path,
    chain_log_path,
    devnet_chain_id,
)


def test_chain_files_sit_beside_the_first() -> None:
    first = DEFAULT_DEPLOYMENT_PATH
    assert chain_deployment_path(first, 1) == first
    assert chain_deployment_path(first, 2) == first.parent / "deployment-2.json"
    assert chain_deployment_path(Path("x/foo.json"), 3) == Path("x/foo-3.json")
    assert chain_log_path(Path("x/foo.json"), 1) == Path("x/anvil.log")
    assert chain_log_path(Path("x/foo.json"), 2) == Path("x/anvil-2.log")
    assert [devnet_chain_id(k) for k in (1, 2, 3)] == [31337, 31338, 31339]


def test_chains_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["devnet", "up"]).chains == 1
    assert parser.parse_args(["devnet", "up", "--chains", "3"]).chains == 3
    assert parser.parse_args(["devnet", "play", "stress"]).chain is None
    assert parser.parse_args(["devnet", "play", "stress", "--chain", "2"]).chain == 2


@pytest.mark.parametrize("argv", [["up", "--chains", "0"], ["up", "--chains", "4"],
                                  ["up", "--chains", "two"], ["play", "stress", "--chain", "0"]])  # fmt: skip
def test_chain_counts_out_of_range_are_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["devnet", *argv])
    assert exc.value.code == 2
    assert "must be a whole number from 1 to 3" in capsys.readouterr().err


def test_anvils_for_two_chains(tmp_path: Path) -> None:
    """`--port` is chain 1's; chain 2 gets another port, its chain id and its own log."""
    from agent.devnet.command import _anvils

    first = tmp_path / "deployment.json"
    a1, a2 = _anvils(first, 2, 18545)
    assert (a1.port, a1.chain_id, a1.log_path, a1.detach) == (
        18545,
        None,
        tmp_path / "anvil.log",
        True,
    )
    assert a2.port != 18545 and a2.chain_id == 31338 and a2.log_path == tmp_path / "anvil-2.log"
    assert "--chain-id" not in a1.command() and a2.command()[-2:] == ["--chain-id", "31338"]
    b1, b2, b3 = _anvils(first, 3, None)
    assert len({b1.port, b2.port, b3.port}) == 3
