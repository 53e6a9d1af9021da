"""Compiled contracts the devnet deploys.

Two kinds of input, both produced at build time:

* protocol artifacts shipped by the pinned npm packages (Hardhat format: ``abi``, ``bytecode``,
  ``linkReferences``) under ``toolchain/node_modules`` — Aave V3 core, Safe 1.4.1 and Uniswap V3
  (core, periphery, SwapRouter02);
* forge output under ``out/forge/<File>.sol/<Contract>.json`` for our own contracts and for
  Chainlink's ``MockV3Aggregator`` (which its package ships only as source);
* Zodiac Roles v2.1 (``zodiac-roles-sdk``): its typechain build (``build/typechain-*.js``) holds
  each contract's ABI and creation code as JavaScript literals (no JSON artifact is shipped), read
  by ``zodiac_artifact``; ``Roles`` links the ``Integrity`` and ``Packer`` libraries.

``HEDGE_AGENT_NODE_MODULES`` and ``HEDGE_AGENT_FORGE_OUT`` relocate them (e.g. in a container).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agent.core.anvil import PROJECT_ROOT, TOOLCHAIN_BIN, find_tool
from agent.core.errors import DevnetError

AAVE = "@aave/core-v3/artifacts/contracts"
SAFE = "@safe-global/safe-contracts/build/artifacts/contracts"
UNI_CORE = "@uniswap/v3-core/artifacts/contracts"
UNI_PERIPHERY = "@uniswap/v3-periphery/artifacts/contracts"
UNI_ROUTER = "@uniswap/swap-router-contracts/artifacts/contracts"

# Every npm artifact the devnet deploy reads, by short name (relative to node_modules).
NPM_ARTIFACTS: dict[str, str] = {
    "PoolAddressesProvider": f"{AAVE}/protocol/configuration/PoolAddressesProvider.sol/PoolAddressesProvider.json",
    "ACLManager": f"{AAVE}/protocol/configuration/ACLManager.sol/ACLManager.json",
    "Pool": f"{AAVE}/protocol/pool/Pool.sol/Pool.json",
    "PoolConfigurator": f"{AAVE}/protocol/pool/PoolConfigurator.sol/PoolConfigurator.json",
    "DefaultReserveInterestRateStrategy": f"{AAVE}/protocol/pool/DefaultReserveInterestRateStrategy.sol/DefaultReserveInterestRateStrategy.json",
    "AaveOracle": f"{AAVE}/misc/AaveOracle.sol/AaveOracle.json",
    "AaveProtocolDataProvider": f"{AAVE}/misc/AaveProtocolDataProvider.sol/AaveProtocolDataProvider.json",
    "AToken": f"{AAVE}/protocol/tokenization/AToken.sol/AToken.json",
    "StableDebtToken": f"{AAVE}/protocol/tokenization/StableDebtToken.sol/StableDebtToken.json",
    "VariableDebtToken": f"{AAVE}/protocol/tokenization/VariableDebtToken.sol/VariableDebtToken.json",
    "MintableERC20": f"{AAVE}/mocks/tokens/MintableERC20.sol/MintableERC20.json",
    "BorrowLogic": f"{AAVE}/protocol/libraries/logic/BorrowLogic.sol/BorrowLogic.json",
    "BridgeLogic": f"{AAVE}/protocol/libraries/logic/BridgeLogic.sol/BridgeLogic.json",
    "EModeLogic": f"{AAVE}/protocol/libraries/logic/EModeLogic.sol/EModeLogic.json",
    "FlashLoanLogic": f"{AAVE}/protocol/libraries/logic/FlashLoanLogic.sol/FlashLoanLogic.json",
    "LiquidationLogic": f"{AAVE}/protocol/libraries/logic/LiquidationLogic.sol/LiquidationLogic.json",
    "PoolLogic": f"{AAVE}/protocol/libraries/logic/PoolLogic.sol/PoolLogic.json",
    "SupplyLogic": f"{AAVE}/protocol/libraries/logic/SupplyLogic.sol/SupplyLogic.json",
    "ConfiguratorLogic": f"{AAVE}/protocol/libraries/logic/ConfiguratorLogic.sol/ConfiguratorLogic.json",
    "Safe": f"{SAFE}/Safe.sol/Safe.json",
    "SafeProxyFactory": f"{SAFE}/proxies/SafeProxyFactory.sol/SafeProxyFactory.json",
    "MultiSendCallOnly": f"{SAFE}/libraries/MultiSendCallOnly.sol/MultiSendCallOnly.json",
    "CompatibilityFallbackHandler": f"{SAFE}/handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json",
    "UniswapV3Factory": f"{UNI_CORE}/UniswapV3Factory.sol/UniswapV3Factory.json",
    "UniswapV3Pool": f"{UNI_CORE}/UniswapV3Pool.sol/UniswapV3Pool.json",
    "NonfungiblePositionManager": f"{UNI_PERIPHERY}/NonfungiblePositionManager.sol/NonfungiblePositionManager.json",
    "QuoterV2": f"{UNI_PERIPHERY}/lens/QuoterV2.sol/QuoterV2.json",
    "SwapRouter02": f"{UNI_ROUTER}/SwapRouter02.sol/SwapRouter02.json",
}

# Zodiac Roles v2.1 contracts the devnet deploys, from the typechain build of zodiac-roles-sdk.
ZODIAC_TYPECHAIN = "zodiac-roles-sdk/build/typechain.js"
ZODIAC_ARTIFACTS = ("Integrity", "Packer", "Roles", "ModuleProxyFactory", "MultiSendUnwrapper")

# Forge output the deploy reads: (file, contract).
FORGE_ARTIFACTS: dict[str, tuple[str, str]] = {
    "Multicall3": ("Multicall3.sol", "Multicall3"),
    "SingletonFactory": ("SingletonFactory.sol", "SingletonFactory"),
    "PerpMarket": ("PerpMarket.sol", "PerpMarket"),
    "MockV3Aggregator": ("MockV3Aggregator.sol", "MockV3Aggregator"),
    "PremiaLikePutPool": ("PremiaLikePutPool.sol", "PremiaLikePutPool"),
    "PremiaLikePoolFactory": ("PremiaLikePoolFactory.sol", "PremiaLikePoolFactory"),
    "PremiaLikeOracleAdapter": ("PremiaLikePoolFactory.sol", "PremiaLikeOracleAdapter"),
    "PremiaLikeERC20Router": ("PremiaLikePoolFactory.sol", "PremiaLikeERC20Router"),
}


def node_modules() -> Path:
    return Path(
        os.environ.get("HEDGE_AGENT_NODE_MODULES", PROJECT_ROOT / "toolchain" / "node_modules")
    )


def forge_out() -> Path:
    return Path(os.environ.get("HEDGE_AGENT_FORGE_OUT", PROJECT_ROOT / "out" / "forge"))


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str  # creation code, hex without 0x; may hold library placeholders
    deployed_bytecode: str  # runtime code, hex without 0x
    link_references: dict[str, dict[str, list[dict[str, int]]]]
    path: Path

    def linked(self, libraries: dict[str, str]) -> str:
        """Creation code with every library placeholder replaced, ``0x``-prefixed.

        A link reference is a byte offset into the code without ``0x``; the address (20 bytes)
        overwrites hex characters ``2*start .. 2*start+40``.
        """
        code = self.bytecode
        for _source, libs in self.link_references.items():
            for lib, refs in libs.items():
                if lib not in libraries:
                    raise DevnetError(f"{self.name}: library {lib} is not deployed yet")
                addr = libraries[lib].lower().removeprefix("0x")
                for ref in refs:
                    start, length = 2 * ref["start"], 2 * ref["length"]
                    code = code[:start] + addr + code[start + length :]
        if "__$" in code:
            raise DevnetError(f"{self.name}: unlinked library placeholder left in bytecode")
        return "0x" + code


def _strip(code: object) -> str:
    if isinstance(code, dict):  # forge: {"object": "0x..", "linkReferences": ...}
        code = code.get("object", "")
    return str(code).removeprefix("0x")


@cache
def npm_artifact(name: str) -> Artifact:
    path = node_modules() / NPM_ARTIFACTS[name]
    raw = _read_json(path, "run `make toolchain` (npm ci in toolchain/)")
    return Artifact(
        name=name,
        abi=raw["abi"],
        bytecode=_strip(raw["bytecode"]),
        deployed_bytecode=_strip(raw.get("deployedBytecode", "")),
        link_references=raw.get("linkReferences") or {},
        path=path,
    )


@cache
def forge_artifact(name: str) -> Artifact:
    file, contract = FORGE_ARTIFACTS[name]
    path = forge_out() / file / f"{contract}.json"
    raw = _read_json(path, "run `make build` (forge build)")
    return Artifact(
        name=name,
        abi=raw["abi"],
        bytecode=_strip(raw["bytecode"]),
        deployed_bytecode=_strip(raw["deployedBytecode"]),
        link_references=raw["bytecode"].get("linkReferences") or {},
        path=path,
    )


def _zodiac_chunk() -> Path:
    """The typechain chunk ``build/typechain.js`` re-exports (its name carries a build hash)."""
    entry = node_modules() / ZODIAC_TYPECHAIN
    try:
        text = entry.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DevnetError(
            f"compiled artifact missing: {entry} (run `make toolchain` (npm ci in toolchain/))"
        ) from None
    m = re.search(r"require\('\./(typechain-[\w-]+\.js)'\)", text)
    if m is None:
        raise DevnetError(f"{entry}: no typechain chunk required")
    return entry.parent / m.group(1)


def _balanced(text: str, start: int) -> str:
    """The bracketed literal opening at ``text[start]`` (strings in it hold no quotes)."""
    depth, in_str = 0, False
    for i in range(start, len(text)):
        ch = text[i]
        if ch == '"':
            in_str = not in_str
        elif not in_str and ch in "[{":
            depth += 1
        elif not in_str and ch in "]}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    raise ValueError("unbalanced brackets")


def _js_literal_to_json(lit: str) -> Any:
    """The ABI literals are JSON with bare keys (``{ name: "x" }``): quote the keys."""
    quoted = re.sub(r"([\[{,]\s*)([A-Za-z_$][\w$]*)\s*:", r'\1"\2":', lit)
    return json.loads(quoted)


@cache
def zodiac_artifact(name: str) -> Artifact:
    """``name``'s ABI and creation code from its ``<name>__factory.ts`` region of the chunk;
    library placeholders (``__$<hash>$__``) become link references named after the library."""
    path = _zodiac_chunk()
    src = path.read_text(encoding="utf-8")
    start = src.find(f"/{name}__factory.ts\n")
    end = src.find("//#endregion", start)
    if start < 0 or end < 0:
        raise DevnetError(f"{path}: no {name}__factory in the typechain build")
    region = src[start:end]
    abi_m = re.search(r"const _abi(?:\$\d+)? = \[", region)
    code_m = re.search(r'const _bytecode(?:\$\d+)? = "0x([0-9a-fA-F_$]+)";', region)
    if abi_m is None or code_m is None:
        raise DevnetError(f"{path}: {name}__factory has no ABI or bytecode")
    try:
        abi = _js_literal_to_json(_balanced(region, abi_m.end() - 1))
    except ValueError as exc:
        raise DevnetError(f"{path}: {name}'s ABI literal does not parse: {exc}") from None
    code = code_m.group(1)
    libs = dict(
        re.findall(r'([0-9a-f]{34})[\\$_]+", "g"\), linkLibraryAddresses\["[^"]*:(\w+)"\]', region)
    )
    refs: dict[str, list[dict[str, int]]] = {}
    for hit in re.finditer(r"__\$([0-9a-f]{34})\$__", code):
        lib = libs.get(hit.group(1))
        if lib is None:
            raise DevnetError(f"{path}: {name} links an unknown library {hit.group(1)}")
        refs.setdefault(lib, []).append({"start": hit.start() // 2, "length": 20})
    return Artifact(
        name=name,
        abi=abi,
        bytecode=code,
        deployed_bytecode="",
        link_references={"zodiac-roles-sdk": refs} if refs else {},
        path=path,
    )


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DevnetError(f"compiled artifact missing: {path} ({hint})") from None
    except ValueError as exc:
        raise DevnetError(f"compiled artifact {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or "abi" not in raw or "bytecode" not in raw:
        raise DevnetError(f"compiled artifact {path} has no abi/bytecode")
    return raw


def tool_env() -> dict[str, str]:
    """Environment with the native Foundry binaries first on PATH (not the npm launchers,
    which set TARGET_TOOL and break a cast started from inside forge)."""
    env = dict(os.environ)
    dirs = [str(TOOLCHAIN_BIN / f"{t}-linux-amd64" / "bin") for t in ("forge", "cast", "anvil")]
    env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
    env.pop("TARGET_TOOL", None)
    return env


def forge_build(root: Path = PROJECT_ROOT, timeout: float = 300.0) -> None:
    """``forge build`` offline with solcjs through ``scripts/solc-wrapper``."""
    try:
        proc = subprocess.run(
            [find_tool("forge"), "build", "--root", str(root)],
            cwd=root,
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DevnetError(f"forge build did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise DevnetError("forge build failed: " + " | ".join(tail))


def ensure_forge_artifacts() -> None:
    """Build our contracts when their forge output is missing (e.g. a fresh checkout)."""
    missing = [
        n for n, (f, c) in FORGE_ARTIFACTS.items() if not (forge_out() / f / f"{c}.json").is_file()
    ]
    if missing:
        forge_build()
        forge_artifact.cache_clear()


def runtime_files() -> list[Path]:
    """Every compiled file ``deploy`` reads (for packaging the devnet without node_modules)."""
    return (
        [node_modules() / rel for rel in NPM_ARTIFACTS.values()]
        + [node_modules() / ZODIAC_TYPECHAIN, _zodiac_chunk()]
        + [forge_out() / f / f"{c}.json" for f, c in FORGE_ARTIFACTS.values()]
    )


if __name__ == "__main__":
    # `python -m agent.devnet.artifacts`: list the files a container needs for `devnet up`.
    for p in runtime_files():
        print(p.relative_to(PROJECT_ROOT) if p.is_relative_to(PROJECT_ROOT) else p)
