"""A small synchronous driver for a local anvil: deploy, send from unlocked or impersonated
accounts, call, and anvil's cheat methods. Only the devnet uses it (the agent's readers are
async and go through Multicall3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError, Web3Exception
from web3.types import RPCEndpoint, TxParams, TxReceipt, Wei

from agent.core.errors import DevnetError
from agent.devnet.artifacts import Artifact


class Chain:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self.w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))

    # -- raw JSON-RPC ------------------------------------------------------------------------

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        try:
            resp = self.w3.provider.make_request(RPCEndpoint(method), list(params))
        except (OSError, Web3Exception) as exc:
            raise DevnetError(f"devnet at {self.url} does not answer ({method}: {exc})") from None
        if "error" in resp:
            raise DevnetError(f"{self.url}: {method} failed: {resp['error']}")
        return resp.get("result")

    def accounts(self) -> list[str]:
        return [to_checksum_address(a) for a in self.rpc("eth_accounts")]

    def chain_id(self) -> int:
        return int(self.rpc("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def timestamp(self, block: str | int = "latest") -> int:
        tag = hex(block) if isinstance(block, int) else block
        return int(self.rpc("eth_getBlockByNumber", [tag, False])["timestamp"], 16)

    def mine(self, seconds: int = 0) -> None:
        """Advance chain time by ``seconds`` and mine one block at the new time."""
        if seconds:
            self.rpc("evm_increaseTime", [seconds])
        self.rpc("evm_mine", [])

    def set_code(self, address: str, runtime_hex: str) -> None:
        self.rpc("anvil_setCode", [address, runtime_hex])

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", [address, hex(wei)])

    def impersonate(self, address: str) -> None:
        self.rpc("anvil_impersonateAccount", [address])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snap: str) -> bool:
        return bool(self.rpc("evm_revert", [snap]))

    # -- contracts ---------------------------------------------------------------------------

    def contract(self, address: str, abi: list[dict[str, Any]]) -> Contract:
        return self.w3.eth.contract(address=to_checksum_address(address), abi=abi)

    def at(self, address: str, artifact: Artifact) -> Contract:
        return self.contract(address, artifact.abi)

    def deploy(
        self,
        artifact: Artifact,
        *args: Any,
        sender: str,
        libraries: dict[str, str] | None = None,
    ) -> Contract:
        factory = self.w3.eth.contract(abi=artifact.abi, bytecode=artifact.linked(libraries or {}))
        data = factory.constructor(*args).data_in_transaction
        receipt = self._send({"from": sender, "data": data}, f"deploy {artifact.name}")
        address = receipt["contractAddress"]
        if address is None:
            raise DevnetError(f"deploy {artifact.name}: no contract address in receipt")
        return self.at(address, artifact)

    def send(
        self, contract: Contract, fn: str, *args: Any, sender: str, value: int = 0
    ) -> TxReceipt:
        data = contract.encode_abi(fn, args=list(args))
        tx: TxParams = {"from": sender, "to": contract.address, "data": data}
        if value:
            tx["value"] = Wei(value)
        return self._send(tx, f"{fn} on {contract.address}")

    def call(self, contract: Contract, fn: str, *args: Any, block: int | str = "latest") -> Any:
        try:
            return getattr(contract.functions, fn)(*args).call(block_identifier=cast(Any, block))
        except (ContractLogicError, ContractCustomError) as exc:
            raise DevnetError(f"{fn} on {contract.address} reverted: {exc}") from None
        except (OSError, Web3Exception) as exc:
            raise DevnetError(f"devnet at {self.url} does not answer ({fn}: {exc})") from None

    def _send(self, tx: TxParams, what: str) -> TxReceipt:
        try:
            # Gas estimation surfaces revert reasons before anything is mined.
            tx_hash = self.w3.eth.send_transaction(tx)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=30, poll_latency=0.01
            )
        except (ContractLogicError, ContractCustomError) as exc:
            raise DevnetError(f"{what} reverted: {exc}") from None
        except (OSError, Web3Exception) as exc:
            raise DevnetError(f"{what} failed on {self.url}: {exc}") from None
        if receipt["status"] != 1:
            raise DevnetError(f"{what} reverted (tx {tx_hash.hex()})")
        return receipt
