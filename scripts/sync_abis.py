#!/usr/bin/env python3
"""Copy the ABIs the agent reads into ``contracts_abi/`` (plain JSON arrays) and record where
each came from in ``contracts_abi/SOURCES.md``. At runtime the agent reads only
``contracts_abi/``, never ``node_modules``.

Usage: .venv/bin/python scripts/sync_abis.py   (runs ``forge build`` first if needed)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.devnet.artifacts import (  # noqa: E402
    ensure_forge_artifacts,
    forge_out,
    node_modules,
    zodiac_artifact,
)

AAVE = "@aave/core-v3/artifacts/contracts"
SAFE = "@safe-global/safe-contracts/build/artifacts/contracts"

# name in contracts_abi/ -> (npm package, artifact path inside node_modules)
NPM: dict[str, tuple[str, str]] = {
    "Pool": ("@aave/core-v3", f"{AAVE}/protocol/pool/Pool.sol/Pool.json"),
    "PoolAddressesProvider": (
        "@aave/core-v3",
        f"{AAVE}/protocol/configuration/PoolAddressesProvider.sol/PoolAddressesProvider.json",
    ),
    "AaveOracle": ("@aave/core-v3", f"{AAVE}/misc/AaveOracle.sol/AaveOracle.json"),
    "AaveProtocolDataProvider": (
        "@aave/core-v3",
        f"{AAVE}/misc/AaveProtocolDataProvider.sol/AaveProtocolDataProvider.json",
    ),
    "AToken": ("@aave/core-v3", f"{AAVE}/protocol/tokenization/AToken.sol/AToken.json"),
    "VariableDebtToken": (
        "@aave/core-v3",
        f"{AAVE}/protocol/tokenization/VariableDebtToken.sol/VariableDebtToken.json",
    ),
    "ERC20": (
        "@aave/core-v3",
        f"{AAVE}/dependencies/openzeppelin/contracts/IERC20Detailed.sol/IERC20Detailed.json",
    ),
    "AggregatorV3": ("@chainlink/contracts", "@chainlink/contracts/abi/v0.8/MockV3Aggregator.json"),
    "Safe": ("@safe-global/safe-contracts", f"{SAFE}/Safe.sol/Safe.json"),
    "SafeProxyFactory": (
        "@safe-global/safe-contracts",
        f"{SAFE}/proxies/SafeProxyFactory.sol/SafeProxyFactory.json",
    ),
    "MultiSendCallOnly": (
        "@safe-global/safe-contracts",
        f"{SAFE}/libraries/MultiSendCallOnly.sol/MultiSendCallOnly.json",
    ),
    "PremiaPool": ("@premia/v3-abi", "@premia/v3-abi/abi/IPool.json"),
    "PremiaPoolFactory": ("@premia/v3-abi", "@premia/v3-abi/abi/IPoolFactory.json"),
    "PremiaOracleAdapter": ("@premia/v3-abi", "@premia/v3-abi/abi/IOracleAdapter.json"),
    "UniswapV3Factory": (
        "@uniswap/v3-core",
        "@uniswap/v3-core/artifacts/contracts/UniswapV3Factory.sol/UniswapV3Factory.json",
    ),
    "UniswapV3Pool": (
        "@uniswap/v3-core",
        "@uniswap/v3-core/artifacts/contracts/UniswapV3Pool.sol/UniswapV3Pool.json",
    ),
    "SwapRouter02": (
        "@uniswap/swap-router-contracts",
        "@uniswap/swap-router-contracts/artifacts/contracts/SwapRouter02.sol/SwapRouter02.json",
    ),
    "QuoterV2": (
        "@uniswap/v3-periphery",
        "@uniswap/v3-periphery/artifacts/contracts/lens/QuoterV2.sol/QuoterV2.json",
    ),
}
# Zodiac Roles v2.1, from the typechain build of zodiac-roles-sdk (JavaScript literals, no JSON
# artifact): name in contracts_abi/ -> contract.
ZODIAC: dict[str, str] = {"Roles": "Roles", "ModuleProxyFactory": "ModuleProxyFactory"}
# ours, from forge output: name -> (file, contract)
FORGE: dict[str, tuple[str, str]] = {
    "Multicall3": ("Multicall3.sol", "Multicall3"),
    "PerpMarket": ("PerpMarket.sol", "PerpMarket"),
}

# Hand-written, because no registry package ships the contract (checked: npm has no
# `@compound-finance/comet`; `@compound-finance/comet-extension` ships no ABI or bytecode).
# Kept as they are, never regenerated: name -> provenance for SOURCES.md.
HAND: dict[str, str] = {
    "Comet": (
        "hand-written from the Comet interface (compound-finance/comet "
        "`contracts/CometMainInterface.sol`; shared/interfaces.md section 2): only "
        "`getUtilization()`, `getSupplyRate(uint)`/`getBorrowRate(uint)` (`uint64`, per second, "
        "1e18) and the eight public rate-model getters (`supplyKink`, "
        "`supply/borrowPerSecondInterestRateSlopeLow/SlopeHigh/Base`, `borrowKink`)"
    ),
}


def _version(package: str) -> str:
    return str(json.loads((node_modules() / package / "package.json").read_text())["version"])


def _abi(raw: object, path: Path) -> list[object]:
    abi = raw.get("abi") if isinstance(raw, dict) else raw
    if not isinstance(abi, list) or not abi:
        raise SystemExit(f"{path}: no ABI array")
    return abi


def main() -> int:
    out = ROOT / "contracts_abi"
    out.mkdir(exist_ok=True)
    ensure_forge_artifacts()
    rows: list[str] = []
    for name, (package, rel) in NPM.items():
        path = node_modules() / rel
        abi = _abi(json.loads(path.read_text()), path)
        (out / f"{name}.json").write_text(json.dumps(abi, indent=2) + "\n")
        rows.append(f"| `{name}.json` | `{package}@{_version(package)}` | `node_modules/{rel}` |")
    for name, contract in ZODIAC.items():
        art = zodiac_artifact(contract)
        (out / f"{name}.json").write_text(json.dumps(art.abi, indent=2) + "\n")
        rel = art.path.relative_to(node_modules())
        rows.append(
            f"| `{name}.json` | `zodiac-roles-sdk@{_version('zodiac-roles-sdk')}` "
            f"(`{contract}__factory`) | `node_modules/{rel}` |"
        )
    for name, (file, contract) in FORGE.items():
        path = forge_out() / file / f"{contract}.json"
        abi = _abi(json.loads(path.read_text()), path)
        (out / f"{name}.json").write_text(json.dumps(abi, indent=2) + "\n")
        rows.append(
            f"| `{name}.json` | ours: `contracts/{file}` (forge build, solc 0.8.27) | `out/forge/{file}/{contract}.json` |"
        )
    for name, note in HAND.items():
        if not (out / f"{name}.json").is_file():
            raise SystemExit(f"contracts_abi/{name}.json (hand-written) is missing")
        rows.append(f"| `{name}.json` | {note} | - |")
    (out / "SOURCES.md").write_text(
        "# Where each ABI comes from\n\n"
        "Generated by `scripts/sync_abis.py`; do not edit by hand. Each file is a plain JSON ABI\n"
        "array copied from a pinned package in `toolchain/package.json` (or from our own contracts).\n"
        "`ERC20` is Aave's `IERC20Detailed`; `AggregatorV3` is Chainlink's `MockV3Aggregator`, a\n"
        "superset of `AggregatorV3Interface`; `PremiaPool`/`PremiaPoolFactory`/`PremiaOracleAdapter`\n"
        "are Premia v3's `IPool`/`IPoolFactory`/`IOracleAdapter`. Files marked hand-written are\n"
        "listed in the script's `HAND` and are not regenerated.\n\n"
        "| file | source | artifact |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(f"wrote {len(rows)} ABIs to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
