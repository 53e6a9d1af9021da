"""Optional proposal of a Safe transaction to the Safe Transaction Service.

``safeTxHash`` is the EIP-712 hash Safe >= 1.3.0 signs (``Safe.getTransactionHash``): domain
``EIP712Domain(uint256 chainId,address verifyingContract)`` and the ``SafeTx`` struct. A delegate
(or owner) key signs it (eth_sign-free ECDSA over the hash, ``v`` in {27, 28}) and the
transaction is POSTed to ``{base}/api/v1/safes/{checksumSafe}/multisig-transactions/``. Success
is HTTP 201 with an empty body; validation failures are HTTP 422 with DRF serializer errors,
which are turned into one-line ``SourceError`` messages with a hint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import SecretStr

from agent.core.abi import load_abi
from agent.core.errors import ConfigError, SourceError
from agent.core.http import HttpClient, HttpStatusError, Request
from agent.core.rpc import RpcClient
from agent.planner.safe import SafeTx
from agent.sinks.config import SafeServiceConfig

log = structlog.get_logger(__name__)

SOURCE = "safe-tx-service"
DOMAIN_TYPEHASH = keccak(text="EIP712Domain(uint256 chainId,address verifyingContract)")
SAFE_TX_TYPEHASH = keccak(
    text="SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,"
    "uint256 baseGas,uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)"
)


def _data_bytes(data: str) -> bytes:
    return bytes.fromhex(data[2:] if data.startswith("0x") else data)


def domain_separator(chain_id: int, safe: str) -> bytes:
    return keccak(abi_encode(["bytes32", "uint256", "address"], [DOMAIN_TYPEHASH, chain_id, safe]))


def safe_tx_hash(st: SafeTx, *, chain_id: int, nonce: int) -> bytes:
    """The EIP-712 ``safeTxHash`` of ``st`` at Safe nonce ``nonce`` (Safe >= 1.3.0)."""
    struct = keccak(
        abi_encode(
            [
                "bytes32",
                "address",
                "uint256",
                "bytes32",
                "uint8",
                "uint256",
                "uint256",
                "uint256",
                "address",
                "address",
                "uint256",
            ],
            [
                SAFE_TX_TYPEHASH,
                st.to,
                st.value,
                keccak(_data_bytes(st.data)),
                st.operation,
                st.safe_tx_gas,
                st.base_gas,
                st.gas_price,
                st.gas_token,
                st.refund_receiver,
                nonce,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, st.safe) + struct)


def account_from_key(key: SecretStr, what: str) -> LocalAccount:
    """A signer from a SecretStr; the error never contains the key."""
    try:
        acct: LocalAccount = Account.from_key(key.get_secret_value().strip())
    except Exception:  # eth_keys raises several types; none of their text is echoed
        raise ConfigError(f"{what} is not a valid 32-byte hex private key") from None
    return acct


def sign_safe_tx_hash(account: LocalAccount, tx_hash: bytes) -> str:
    """65-byte ``r ‖ s ‖ v`` signature (v = 27/28) over the hash itself, as the service expects
    from an owner or delegate, 0x-hex."""
    signed = account.unsafe_sign_hash(Hash32(tx_hash))
    return "0x" + bytes(signed.signature).hex()


async def read_safe_nonce(rpc: RpcClient, safe: str) -> int:
    """The Safe's on-chain nonce (the next transaction's nonce, ignoring the service's queue)."""
    abi = load_abi("Safe")
    out = await rpc.eth_call(to_checksum_address(safe), abi.encode_hex("nonce"))
    return int(abi.decode_output("nonce", out)[0])


def safe_tx_from_record(record: dict[str, Any]) -> SafeTx:
    """The ``SafeTx`` the runner stored in a proposal record (``record["safe_tx"]``)."""
    st = record.get("safe_tx")
    if not isinstance(st, dict):
        raise ConfigError(f"proposal {record.get('id')} has no safe_tx (not a Safe position?)")
    return SafeTx(safe=st["safe"], to=st["to"], value=int(st["value"]), data=st["data"],
                  operation=int(st["operation"]))  # fmt: skip


@dataclass(frozen=True)
class ServiceProposal:
    safe: str
    nonce: int
    safe_tx_hash: str
    sender: str
    url: str

    def as_dict(self) -> dict[str, Any]:
        return {"safe": self.safe, "nonce": self.nonce, "safe_tx_hash": self.safe_tx_hash,
                "sender": self.sender, "url": self.url}  # fmt: skip


def proposal_body(st: SafeTx, *, nonce: int, tx_hash: bytes, sender: str, signature: str,
                  origin: str) -> dict[str, Any]:  # fmt: skip
    """The documented ``SafeMultisigTransaction`` body (uint256 fields as decimal strings, as
    Safe's api-kit sends them)."""
    return {
        "safe": to_checksum_address(st.safe),
        "to": to_checksum_address(st.to),
        "value": str(st.value),
        "data": st.data if _data_bytes(st.data) else None,
        "operation": st.operation,
        "safeTxGas": str(st.safe_tx_gas),
        "baseGas": str(st.base_gas),
        "gasPrice": str(st.gas_price),
        "gasToken": to_checksum_address(st.gas_token),
        "refundReceiver": to_checksum_address(st.refund_receiver),
        "nonce": nonce,
        "contractTransactionHash": "0x" + tx_hash.hex(),
        "sender": to_checksum_address(sender),
        "signature": signature,
        "origin": origin,
    }


def _hint(text: str) -> str:
    t = text.lower()
    if "is not an owner or delegate" in t:
        return " (hint: register the key's address as a delegate of this Safe, or use an owner key)"
    if "does not match provided contract-tx-hash" in t:
        return " (hint: the service hashed the transaction differently: check chain id, Safe address and version, and nonce)"
    if "already executed" in t:
        return " (hint: the Safe nonce moved on; re-read it and propose again)"
    if "may not be null" in t or "is required" in t:
        return " (hint: a required field was empty)"
    return ""


def describe_service_error(status: int, body: str) -> str:
    """One line from a DRF error body: ``{"nonFieldErrors": [...], "<field>": [...]}`` or
    ``{"code": .., "message": .., "arguments": [..]}``; falls back to the raw (bounded) text."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    parts: list[str] = []
    if isinstance(payload, dict):
        if "message" in payload and "code" in payload:
            parts.append(f"code {payload['code']}: {payload['message']}")
        else:
            for field, msgs in payload.items():
                items = msgs if isinstance(msgs, list) else [msgs]
                text = "; ".join(str(m) for m in items)
                parts.append(
                    text if field in ("nonFieldErrors", "non_field_errors") else f"{field}: {text}"
                )
    elif isinstance(payload, list):
        parts = [str(x) for x in payload]
    detail = " | ".join(parts) if parts else " ".join(body.split())[:300]
    return f"HTTP {status}: {detail}{_hint(detail)}"


async def propose(
    http: HttpClient,
    cfg: SafeServiceConfig,
    st: SafeTx,
    *,
    chain_id: int,
    nonce: int,
) -> ServiceProposal:
    """Sign ``st`` at ``nonce`` with the configured delegate key and POST it to the service.

    Raises ``ConfigError`` when not enabled/configured and ``SourceError`` (source
    ``safe-tx-service``) with the service's reason when it refuses the proposal."""
    if not cfg.enabled:
        raise ConfigError(
            "sinks.safe_service.enabled is false; not proposing to the Safe Transaction Service"
        )
    if cfg.delegate_key is None:
        raise ConfigError("sinks.safe_service.delegate_key is not set")
    signer = account_from_key(cfg.delegate_key, "sinks.safe_service.delegate_key")
    safe = to_checksum_address(st.safe)
    h = safe_tx_hash(st, chain_id=chain_id, nonce=nonce)
    body = proposal_body(st, nonce=nonce, tx_hash=h, sender=signer.address,
                         signature=sign_safe_tx_hash(signer, h), origin=cfg.origin)  # fmt: skip
    url = f"{cfg.base_url.rstrip('/')}/api/v1/safes/{safe}/multisig-transactions/"
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    secrets: tuple[str, ...] = ()
    if cfg.api_key is not None and cfg.api_key.get_secret_value():
        headers["Authorization"] = f"Bearer {cfg.api_key.get_secret_value()}"
        secrets = (cfg.api_key.get_secret_value(),)
    req = Request(
        source=SOURCE,
        method="POST",
        url=url,
        json_body=body,
        headers=headers,
        timeout_s=cfg.timeout_s,
        label="multisig-transactions",
        secrets=secrets,
        # The resource is keyed by contractTransactionHash: re-sending the same body cannot
        # create a second transaction, so transport failures may be retried.
        idempotent=True,
    )
    try:
        resp = await http.request(req)
    except HttpStatusError as exc:
        raise SourceError(
            SOURCE,
            f"rejected the proposal for Safe {safe} nonce {nonce} "
            f"(safeTxHash 0x{h.hex()}, sender {signer.address}): {describe_service_error(exc.status, exc.body)}",
        ) from None
    proposal = ServiceProposal(safe, nonce, "0x" + h.hex(), signer.address, req.safe_path)
    log.info("safe_service.proposed", status=resp.status, **proposal.as_dict())
    return proposal
