"""The README's commands as a new user types them: every ``hedge-agent`` line parses with the real
command line (no unknown subcommand or flag), and no example writes over a file git tracks."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
from pathlib import Path

from agent.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        # a trailing backslash continues the command on the next line, as in the shell
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part)
                if words and words[0] == "hedge-agent":
                    out.append(words[1:])
    return out


def test_every_readme_command_parses() -> None:
    commands = _commands()
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # SystemExit on an unknown subcommand or flag


def test_no_example_overwrites_a_tracked_file() -> None:
    tracked = set(
        subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    )
    outputs = {"--json", "--chart", "--out", "--deployment", "--feed"}
    for argv in _commands():
        for flag, value in itertools.pairwise(argv):
            if flag in outputs:
                assert value not in tracked, f"`hedge-agent {' '.join(argv)}` overwrites {value}"
