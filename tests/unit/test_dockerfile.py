"""No Docker engine runs here, so the image is checked statically: everything the Dockerfile
copies exists in the repository, and what it runs is a real entry point of the project.
(`make test` also lints it with hadolint.)"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", DOCKERFILE, re.M)]


def test_every_copied_path_exists() -> None:
    copies = [c for c in instructions("COPY") if not c.startswith("--from=")]
    assert copies, "the Dockerfile copies nothing from the repository"
    for line in copies:
        *sources, _dest = shlex.split(line)
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


def test_anvil_is_copied_from_the_pinned_npm_package() -> None:
    froms = [c for c in instructions("COPY") if c.startswith("--from=")]
    assert any("@foundry-rs/anvil-linux-amd64/bin/anvil" in c for c in froms)
    lock = json.loads((ROOT / "toolchain" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@foundry-rs/anvil-linux-amd64"]["version"] == "1.7.1"


def test_runs_as_non_root() -> None:
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")


def test_entrypoint_and_default_config_exist() -> None:
    entry = json.loads(instructions("ENTRYPOINT")[-1])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["hedge-agent"] and "hedge-agent" in scripts
    cmd = json.loads(instructions("CMD")[-1])
    config = cmd[cmd.index("--config") + 1]
    assert (ROOT / config).is_file(), f"default config {config} is not in the repository"
    # the default config must parse with the project's own loader (addresses and all)
    from agent.config import load_settings

    settings = load_settings(ROOT / config)
    assert settings.chain.chain_id == 1 and not settings.sinks.live.enabled
