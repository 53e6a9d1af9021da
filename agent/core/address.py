"""Addresses are normalised once, at the config edge: every address the agent holds is in its
EIP-55 checksummed form, so comparisons (``account in snap.accounts``) are exact. All-lower or
all-upper hex is accepted and checksummed; mixed case with a wrong checksum is a typo and an
error (pydantic names the field)."""

from __future__ import annotations

import re
from typing import Annotated

from eth_utils.address import to_checksum_address
from pydantic import AfterValidator

_HEX_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")


def checksum_address(value: str) -> str:
    if not isinstance(value, str) or not _HEX_ADDR.match(value):
        raise ValueError(f"not an address: {value!r}")
    fixed = str(to_checksum_address(value))
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != fixed:
        raise ValueError(f"bad EIP-55 checksum: {value} (did you mean {fixed}?)")
    return fixed


Address = Annotated[str, AfterValidator(checksum_address)]
