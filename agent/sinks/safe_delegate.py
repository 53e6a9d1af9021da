"""Registering the agent's key as a delegate of the Safe on the Transaction Service.

A delegate may propose transactions (its signature is not a confirmation: the owners still sign).
An owner registers it with ``POST {base}/api/v2/delegates/`` and an EIP-712 signature over
``Delegate(address delegateAddress,uint256 totp)`` in the domain
``{name: "Safe Transaction Service", version: "1.0", chainId}``, where ``totp`` is the Unix time
divided by 3600 (the service also accepts the previous hour's value). The hash is computed here
with eth-abi as the service does; the tests check it against eth-account's typed-data encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from agent.core.errors import ConfigError
from agent.sinks.safe_service import SafeServiceClient

DOMAIN_NAME = "Safe Transaction Service"
DOMAIN_VERSION = "1.0"
TOTP_PERIOD_S = 3600
DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId)")
DELEGATE_TYPEHASH = keccak(text="Delegate(address delegateAddress,uint256 totp)")


def totp(now_s: int) -> int:
    return now_s // TOTP_PERIOD_S


def delegate_typed_data(delegate: str, chain_id: int, totp_value: int) -> dict[str, Any]:
    """The message an owner signs (``eth_signTypedData_v4`` JSON)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "Delegate": [
                {"name": "delegateAddress", "type": "address"},
                {"name": "totp", "type": "uint256"},
            ],
        },
        "primaryType": "Delegate",
        "domain": {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id},
        "message": {"delegateAddress": to_checksum_address(delegate), "totp": totp_value},
    }


def delegate_hash(delegate: str, chain_id: int, totp_value: int) -> bytes:
    """EIP-712 hash of ``delegate_typed_data`` (what the owner's key signs)."""
    domain = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256"],
            [DOMAIN_TYPEHASH, keccak(text=DOMAIN_NAME), keccak(text=DOMAIN_VERSION), chain_id],
        )
    )
    struct = keccak(
        abi_encode(["bytes32", "address", "uint256"], [DELEGATE_TYPEHASH, delegate, totp_value])
    )
    return keccak(b"\x19\x01" + domain + struct)


def _signature_bytes(signature: str) -> bytes:
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raise ConfigError("--signature is not hex") from None
    if len(raw) != 65:
        raise ConfigError(f"--signature must be 65 bytes (r, s, v), got {len(raw)}")
    if raw[64] in (0, 1):  # some signers return v as the recovery id
        raw = raw[:64] + bytes([raw[64] + 27])
    return raw


@dataclass(frozen=True)
class DelegateRegistration:
    safe: str | None
    delegate: str
    delegator: str
    signature: str
    label: str

    def body(self) -> dict[str, Any]:
        return {
            "safe": to_checksum_address(self.safe) if self.safe else None,
            "delegate": to_checksum_address(self.delegate),
            "delegator": to_checksum_address(self.delegator),
            "signature": "0x" + _signature_bytes(self.signature).hex(),
            "label": self.label,
        }


def check_signature(reg: DelegateRegistration, chain_id: int, now_s: int) -> None:
    """Refuse, before any request, a signature that is not the delegator's for this delegate and
    chain in this hour or the previous one (the window the service accepts)."""
    raw = _signature_bytes(reg.signature)
    recovered = []
    for t in (totp(now_s), totp(now_s) - 1):
        try:
            who = Account._recover_hash(delegate_hash(reg.delegate, chain_id, t), signature=raw)
        except Exception:  # eth_keys: invalid r/s/v; name the input instead of its text
            raise ConfigError("--signature is not a valid ECDSA signature") from None
        if who == to_checksum_address(reg.delegator):
            return
        recovered.append(who)
    raise ConfigError(
        f"--signature was not made by --delegator {to_checksum_address(reg.delegator)} over "
        f"Delegate({to_checksum_address(reg.delegate)}, totp {totp(now_s)}) on chain {chain_id} "
        f"(it recovers to {recovered[0]}): sign the message printed without --signature, "
        "within the hour"
    )


async def add_delegate(
    client: SafeServiceClient, reg: DelegateRegistration, *, chain_id: int, now_s: int
) -> None:
    """Check the owner's signature locally, then POST it to the service's v2 delegates endpoint."""
    check_signature(reg, chain_id, now_s)
    await client.post_delegate(reg.body())
