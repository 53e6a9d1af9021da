"""Dependencies as declared: every third-party package ``agent/`` imports is a declared
dependency in pyproject.toml (not one that happens to come with another), and every declared
run-time dependency is imported somewhere."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level_imports() -> set[str]:
    names: set[str] = set()
    for f in (ROOT / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
    return {n for n in names if n != "agent" and n not in sys.stdlib_module_names}


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def test_every_imported_package_is_declared_and_every_declared_one_used() -> None:
    dists = packages_distributions()
    imported = {_norm(dists[m][0]) for m in _top_level_imports()}
    declared = _declared()
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == set(), "declared but never imported"
