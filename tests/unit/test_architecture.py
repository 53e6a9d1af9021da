"""The pipeline reads left to right: collectors → store → signals → policy → planner →
simulator → sinks (``core`` under all). A stage never imports a stage to its right; the
composition modules (runner, evaluate, propose, advisory, cli, commands) are the only place they meet."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"
ORDER = ["core", "collectors", "store", "signals", "policy", "planner", "simulator", "sinks"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if n.startswith("agent.")]


def test_stages_only_import_leftwards() -> None:
    rank = {s: i for i, s in enumerate(ORDER)}
    bad = []
    for stage in ORDER:
        for f in (AGENT / stage).rglob("*.py"):
            for mod in _imports(f):
                target = mod.split(".")[1]
                if target not in rank or rank[target] > rank[stage]:
                    bad.append(f"{f.relative_to(AGENT.parent)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_backward_import(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("from agent.sinks.journal import ProposalJournal\nimport agent.core.units\n")
    assert _imports(f) == ["agent.sinks.journal", "agent.core.units"]


def test_planners_import_no_collector_module() -> None:
    """Market types live in ``agent.core``: a planner reads what collectors produced, never
    the collectors themselves (directly or through a module it imports from ``agent``)."""
    bad = []
    for f in (AGENT / "planner").rglob("*.py"):
        seen: set[str] = set()
        todo = _imports(f)
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            seen.add(mod)
            if mod.startswith("agent.collectors"):
                bad.append(f"{f.relative_to(AGENT.parent)} reaches {mod}")
                continue
            path = AGENT.parent / (mod.replace(".", "/") + ".py")
            package = AGENT.parent / mod.replace(".", "/") / "__init__.py"
            for source in (path, package):
                if source.exists():
                    todo += _imports(source)
    assert not bad, "\n".join(bad)


def test_policy_models_do_not_import_explain() -> None:
    assert "agent.policy.explain" not in _imports(AGENT / "policy" / "models.py")


def test_test_module_basenames_are_unique() -> None:
    # pytest's default import mode keys test modules by basename: two files of one name in
    # different folders stop the whole collection ("import file mismatch").
    root = Path(__file__).resolve().parents[1]
    seen: dict[str, Path] = {}
    for path in sorted(root.rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path
