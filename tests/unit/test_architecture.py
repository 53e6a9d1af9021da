"""The pipeline reads left to right: collectors → store → signals → policy → planner →
simulator → sinks (``core`` under all). A stage never imports a stage to its right; the
glue (``agent/pipeline``) and the entry points above it are the only place they meet."""

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


# -- the glue: the composition root at the top, network clients built only there -----------

# The command entry points: the only modules that may construct (or import) the composition
# root ``agent.app.App``. Everything below them takes parts.
ENTRY_POINTS = {
    "cli.py",
    "app.py",
    "commands",
    "ops/command.py",
    "ops/check.py",
}
ENTRY_POINTS |= {"backtest/command.py", "devnet/command.py"}
# Where a network client may be constructed: the composition root and the clients' own home.
CLIENT_HOMES = {"app.py", "core"}
# (``send_client``: a private send URL's client is App's to build, never a sink's.)
CLIENTS = {"RpcClient", "RpcPool", "HttpClient", "ClientSession", "AsyncClient", "send_client"}


def _is_under(rel: Path, places: set[str]) -> bool:
    text = rel.as_posix()
    return any(text == p or text.startswith(p.rstrip("/") + "/") for p in places)


def upward_imports(root: Path) -> list[str]:
    """Modules below the entry points that import the composition root (``agent.app``),
    at module level or inside a function."""
    bad = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if _is_under(rel, ENTRY_POINTS):
            continue
        bad += [f"agent/{rel.as_posix()} imports {m}" for m in _imports(f) if m == "agent.app"]
    return bad


def clients_built_outside(root: Path) -> list[str]:
    """Network clients constructed anywhere but ``App`` and ``agent/core``."""
    bad = []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if _is_under(rel, CLIENT_HOMES):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            name = (
                fn.id
                if isinstance(fn, ast.Name)
                else fn.attr
                if isinstance(fn, ast.Attribute)
                else ""
            )
            if name in CLIENTS:
                bad.append(f"agent/{rel.as_posix()}:{node.lineno} builds {name}")
    return bad


def test_no_module_below_the_entry_points_imports_the_composition_root() -> None:
    bad = upward_imports(AGENT)
    assert not bad, "\n".join(bad)


def test_network_clients_are_built_only_in_app_and_core() -> None:
    """The stages take ready clients: the chain's pool and the private send URLs' clients from
    App, the fork's anvil client and the relay's session from core's factories
    (``AnvilProcess.client``, ``bare_session``)."""
    bad = clients_built_outside(AGENT)
    assert not bad, "\n".join(bad)


def test_the_glue_checks_fail_on_a_deliberate_violation(tmp_path: Path) -> None:
    """Each check finds what it is for: an upward import added below the entry points (also a
    lazy one inside a function), and a client built outside App/core."""
    root = tmp_path / "agent"
    (root / "pipeline").mkdir(parents=True)
    (root / "commands").mkdir()
    (root / "core").mkdir()
    (root / "pipeline" / "collect.py").write_text(
        "def f():\n    from agent.app import App\n    return App\n"
    )
    (root / "commands" / "x.py").write_text("from agent.app import App\n")  # an entry point
    (root / "sinks").mkdir()
    (root / "sinks" / "live.py").write_text(
        "from agent.core.rpc import RpcClient\n\ndef f(url):\n    return RpcClient(url)\n"
    )
    (root / "sinks" / "autonomous.py").write_text(  # the App-only factory, called by a sink
        "from agent.core.rpc import send_client\n\ndef f(url):\n    return send_client(url)\n"
    )
    (root / "core" / "rpc.py").write_text("class RpcClient: ...\nx = RpcClient()\n")
    (root / "app.py").write_text("import aiohttp\ns = aiohttp.ClientSession()\n")
    assert upward_imports(root) == ["agent/pipeline/collect.py imports agent.app"]
    assert clients_built_outside(root) == [
        "agent/sinks/autonomous.py:4 builds send_client",
        "agent/sinks/live.py:4 builds RpcClient",
    ]


def test_test_module_basenames_are_unique() -> None:
    # pytest's default import mode keys test modules by basename: two files of one name in
    # different folders stop the whole collection ("import file mismatch").
    root = Path(__file__).resolve().parents[1]
    seen: dict[str, Path] = {}
    for path in sorted(root.rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path
