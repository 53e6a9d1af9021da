"""scripts/solc-wrapper: looks like native solc to forge, and keeps stdout pure JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "scripts" / "solc-wrapper"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def _run(
    args: list[str], stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WRAPPER), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_version_looks_like_native_solc() -> None:
    if not (ROOT / "toolchain" / "node_modules" / "solc" / "package.json").is_file():
        pytest.skip("toolchain not installed")
    res = _run(["--version"])
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0] == "solc, the solidity compiler commandline interface"
    assert lines[1].startswith("Version: 0.8.27+commit.") and lines[1].endswith(".Linux.g++")


def test_warning_line_before_json_is_dropped(tmp_path: Path) -> None:
    fake = tmp_path / "fake-solcjs"
    fake.write_text(
        "#!/bin/sh\n"
        "cat > /dev/null\n"
        "echo '>>> Cannot retry compilation with SMT because there are no SMT solvers available.'\n"
        'echo \'{"contracts": {}, "sources": {}}\'\n'
    )
    fake.chmod(0o755)
    res = _run(
        ["--standard-json", "--allow-paths", "/x", "--base-path", ".", "--include-path", "lib"],
        stdin="{}",
        env={"SOLCJS": str(fake)},
    )
    assert res.returncode == 0
    assert json.loads(res.stdout) == {"contracts": {}, "sources": {}}
    assert "dropped: >>> Cannot retry" in res.stderr


def test_real_solcjs_compiles_standard_json() -> None:
    if not (ROOT / "toolchain" / "node_modules" / "solc" / "solc.js").is_file():
        pytest.skip("toolchain not installed")
    inp = {
        "language": "Solidity",
        "sources": {
            "A.sol": {
                "content": "// SPDX-License-Identifier: MIT\npragma solidity 0.8.27;\ncontract A { function f() external pure returns (uint256) { return 7; } }"
            }
        },
        "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
    }
    res = _run(["--standard-json", "--allow-paths", str(ROOT)], stdin=json.dumps(inp))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["contracts"]["A.sol"]["A"]["abi"][0]["name"] == "f"


def test_unsupported_invocation_fails() -> None:
    res = _run(["contract.sol"])
    assert res.returncode != 0 and "only --version and --standard-json" in res.stderr
