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
