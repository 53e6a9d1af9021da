"""Configuration of the sinks: Transaction Builder files, the optional Safe Transaction Service
proposal and live submission. Secrets are ``SecretStr`` and are never echoed in messages."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_SAFE_SERVICE_URL = "https://api.safe.global/tx-service/eth"


def is_safe_hosted(base_url: str) -> bool:
    """Safe's own services (``*.safe.global``) expect an API key; a self-hosted one may not."""
    host = (urlsplit(base_url).hostname or "").lower()
    return host == "safe.global" or host.endswith(".safe.global")


class SafeServiceConfig(BaseModel):
    """Propose each simulated Safe transaction to the Safe Transaction Service from a delegate
    (or owner) key. Off unless configured. ``api_key`` is required for Safe-hosted services and
    optional for a self-hosted ``base_url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    base_url: str = Field(DEFAULT_SAFE_SERVICE_URL, pattern=r"^https?://")
    api_key: SecretStr | None = None  # Safe developer portal key, sent as a Bearer token
    delegate_key: SecretStr | None = None  # 0x-hex private key of an owner or delegate
    timeout_s: float = Field(20.0, gt=0)
    origin: str = "hedge-agent"

    @model_validator(mode="after")
    def _key_when_enabled(self) -> SafeServiceConfig:
        if self.enabled and (self.delegate_key is None or not self.delegate_key.get_secret_value()):
            raise ValueError("safe_service.enabled requires safe_service.delegate_key")
        key = self.delegate_key.get_secret_value().strip() if self.delegate_key else ""
        if key and not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", key):
            # Checked here so a bad key stops the agent at start, not at the first proposal.
            raise ValueError("sinks.safe_service.delegate_key is not a 32-byte hex private key")
        if (
            self.enabled
            and is_safe_hosted(self.base_url)
            and (self.api_key is None or not self.api_key.get_secret_value().strip())
        ):
            raise ValueError(
                "sinks.safe_service.api_key is required for the Safe-hosted service "
                f"{urlsplit(self.base_url).hostname} (a key from the Safe developer portal; "
                "only a self-hosted base_url may go without one)"
            )
        return self


class LiveConfig(BaseModel):
    """Live submission: off by default. ``check_live_allowed`` refuses unless it is enabled,
    a signer is configured, the RPC is on the configured chain and the tick's simulation passed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    signer_key: SecretStr | None = None  # 0x-hex private key of the sending EOA (a Safe owner)
    private_rpc_url: SecretStr | None = None  # e.g. https://rpc.flashbots.net (may embed a key)
    min_priority_fee_wei: int = Field(10**9, ge=1)  # Protect drops 0-priority-fee transactions
    gas_limit_multiplier_bps: int = Field(12_000, ge=10_000)  # on top of eth_estimateGas
    receipt_timeout_s: float = Field(300.0, gt=0)
    # EIP-1559 fee cap: maxFeePerGas never above it; a base fee above it defers the send.
    max_fee_per_gas_wei: int | None = Field(None, gt=0)
    # A transaction without a receipt this long is replaced: same nonce, fees bumped by
    # ``fee_bump_bps`` (nodes want >= 10%), within the cap. None: never replaced.
    replace_after_s: float | None = Field(None, gt=0)
    fee_bump_bps: int = Field(1_250, ge=1_000, le=10_000)


class KeySource(BaseModel):
    """Where a signing key comes from: never the config file. ``key_env`` names an environment
    variable holding the 0x-hex key; or ``keystore`` is an encrypted JSON keystore (eth-account)
    whose password is in the environment variable ``password_env``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    keystore: str | None = None
    password_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> KeySource:
        if (self.key_env is None) == (self.keystore is None):
            raise ValueError("give exactly one of key_env (an environment variable) or keystore")
        if self.keystore is not None and self.password_env is None:
            raise ValueError("a keystore needs password_env (the variable holding its password)")
        return self


class AutonomousConfig(BaseModel):
    """How autonomous protection is sent (per position: ``execution = "autonomous"``): the
    guardian's transactions, or the Roles module's ``execTransactionWithRole`` signed by
    ``role_key`` (the member of ``[roles]``). Fees under ``max_fee_per_gas_wei``, a stuck
    transaction replaced after ``replace_after_s``; ``private_rpc_url`` (optional, may embed a
    key) receives the raw transactions instead of the chain's RPC (a swap in the public mempool
    can be sandwiched)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role_key: KeySource | None = None
    private_rpc_url: SecretStr | None = None
    max_fee_per_gas_wei: int = Field(200 * 10**9, gt=0)
    min_priority_fee_wei: int = Field(10**9, ge=1)
    replace_after_s: float = Field(24.0, gt=0)  # about two blocks
    fee_bump_bps: int = Field(1_250, ge=1_000, le=10_000)
    gas_limit_multiplier_bps: int = Field(13_000, ge=10_000)
    receipt_timeout_s: float = Field(180.0, gt=0)
    # After a restart, an intent (signed, perhaps not broadcast) this young is broadcast again:
    # the same signed bytes, so the same hash and nonce; older ones are left to reconciliation.
    rebroadcast_within_s: float = Field(600.0, ge=0)


class NotifyConfig(BaseModel):
    """Operator notifications through apprise URLs (``slack://...``, ``tgram://...``,
    ``mailtos://...``, ``json://host/path``); the URLs usually embed tokens, hence ``SecretStr``.
    Off when the list is empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    urls: tuple[SecretStr, ...] = ()
    cooldown_s: float = Field(3600.0, ge=0)  # the same notice (same key) at most once per cooldown
    source_failing_after_s: float = Field(900.0, ge=0)  # a source failing this long is notified
    queue_size: int = Field(256, ge=1)
    attempts: int = Field(4, ge=1)
    backoff_s: float = Field(2.0, ge=0)  # doubled after each failed attempt (core/retry jitter)
    # The TOTAL deadline of one delivery attempt to all URLs (not per read): the attempt's
    # process is killed at it, and when the daemon stops.
    timeout_s: float = Field(20.0, gt=0)


class SinksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    safe_tx_builder_dir: str | None = "var/safe-tx-builder"  # None: do not write batch files
    # The S&P 500 side's advisory tickets, one CSV row per leg (None: no CSV).
    spx_ticket_csv: str | None = "var/spx_tickets.csv"
    # The position whose chain's sinks record the ticket (its account on the record); default:
    # the put ladder's buyer, else the one position.
    spx_ticket_position: str | None = None
    safe_service: SafeServiceConfig = SafeServiceConfig()
    live: LiveConfig = LiveConfig()
    autonomous: AutonomousConfig = AutonomousConfig()
    notify: NotifyConfig = NotifyConfig()

    @model_validator(mode="after")
    def _queue_or_send(self) -> SinksConfig:
        # A proposal queued for the signers at the service's next nonce and the same batch sent
        # live at the on-chain nonce could both execute: one or the other, never both.
        if self.safe_service.enabled and self.live.enabled:
            raise ValueError(
                "sinks.safe_service.enabled and sinks.live.enabled are exclusive: a proposal is "
                "either queued for the Safe's signers or sent live, not both"
            )
        return self
