"""The guardian account (issue 23 item 1): a separately funded EOA that protects the Safe without
any Safe signature, because Aave V3's ``supply(asset, amount, onBehalfOf, 0)`` and
``repay(asset, amount, 2, onBehalfOf)`` are permissionless. It holds only the protection budget.

``[guardian]`` names the account and where its key comes from: an environment variable
(``key_env``) or an eth-account encrypted keystore file (``keystore``, its password from the
variable ``keystore_password_env``). Never the configuration file: a ``key`` there is an unknown
key and refused. The key is a ``SecretStr`` from the moment it is read, never logged, never in a
message, and it must belong to ``account``.

Several guardians (``[[guardians]]``, each with a ``name``): each autonomous position names the
one that pays for it (``positions[i].guardian``); a guardian sends on the chain of the positions
it protects, with that chain's nonces. Sending is ``agent.sinks.autonomous``; nothing here sends.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

from eth_account import Account
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from agent.core.address import Address
from agent.core.errors import ConfigError

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class GuardianConfig(BaseModel):
    """Off while ``account`` is unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # [[guardians]]: the name positions[i].guardian refers to ([guardian]: unnamed)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    account: Address | None = None
    # [guardian] with [[positions]]: the name of the position it protects (one position: that
    # one); [[guardians]] leave it unset (the position names its guardian)
    position: str | None = None
    key_env: str | None = Field(None, pattern=ENV_NAME)  # the variable holding the 0x-hex key
    keystore: str | None = None  # an encrypted keystore file (eth-account / geth JSON v3)
    keystore_password_env: str | None = Field(None, pattern=ENV_NAME)
    # what the guardian's balance is counted in: the reserves it holds for top-ups and repays
    assets: tuple[str, ...] = ("WETH", "USDC")
    min_gas_eth: Decimal = Field(Decimal("0.05"), ge=0)  # below this `check` warns
    refresh_s: float = Field(300.0, gt=0)  # the daemon re-reads its balances this often

    @model_validator(mode="after")
    def _one_key_source(self) -> GuardianConfig:
        if self.account is None:
            return self
        if (self.key_env is None) == (self.keystore is None):
            raise ValueError(
                f"{self.label}: give exactly one of key_env (an environment variable) or keystore "
                "(an encrypted keystore file); the key itself never goes in the config file"
            )
        if self.keystore is not None and self.keystore_password_env is None:
            raise ValueError(f"{self.label}.keystore needs keystore_password_env")
        return self

    @property
    def enabled(self) -> bool:
        return self.account is not None

    @property
    def label(self) -> str:
        """How messages name it: ``guardian`` or ``guardians.NAME``."""
        return "guardian" if self.name is None else f"guardians.{self.name}"


def load_guardian_key(cfg: GuardianConfig) -> SecretStr:
    """The guardian's private key, checked to belong to ``cfg.account``. ``ConfigError`` names
    the variable or the file, never the key or the password."""
    g = cfg.label
    if cfg.account is None:
        raise ConfigError(f"{g}.account is not set")
    if cfg.key_env is not None:
        raw = os.environ.get(cfg.key_env, "").strip()
        if not raw:
            raise ConfigError(f"{g}.key_env names {cfg.key_env}, which is not set")
        what = f"the environment variable {cfg.key_env}"
        try:
            key = SecretStr("0x" + bytes(Account.from_key(raw).key).hex())
        except Exception:  # eth_keys raises several types; none of their text is echoed
            raise ConfigError(f"{what} is not a valid 32-byte hex private key") from None
    else:
        assert cfg.keystore is not None and cfg.keystore_password_env is not None
        what = f"the keystore {cfg.keystore}"
        password = os.environ.get(cfg.keystore_password_env)
        if password is None:
            raise ConfigError(
                f"{g}.keystore_password_env names {cfg.keystore_password_env}, which is not set"
            )
        try:
            data = json.loads(Path(cfg.keystore).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read it ({exc.strerror})") from None
        except ValueError:
            raise ConfigError(f"{what}: not a JSON keystore") from None
        try:
            key = SecretStr("0x" + bytes(Account.decrypt(data, password)).hex())
        except ValueError:
            raise ConfigError(f"{what}: the password does not decrypt it") from None
        except Exception:
            raise ConfigError(f"{what}: not an encrypted keystore eth-account can read") from None
    owner = Account.from_key(key.get_secret_value()).address
    if owner != cfg.account:
        raise ConfigError(f"{what} holds the key of {owner}, not of {g}.account {cfg.account}")
    return key
