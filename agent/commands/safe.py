"""``hedge-agent safe add-delegate``: let a Safe owner register the agent's key as a delegate on
the Safe Transaction Service, so the agent's proposals are accepted into the Safe's queue.

* Without ``--signature`` it prints the EIP-712 message the owner signs (and writes it to
  ``--out`` for ``cast wallet sign --data --from-file``); nothing is sent, no key is needed.
* With ``--delegator OWNER --signature 0x…`` it checks the signature locally, then posts it to
  ``{base_url}/api/v2/delegates/`` (with the configured API key).

The message is valid for the current hour and the next (the service accepts the previous hour's
``totp``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from eth_utils.address import is_address, to_checksum_address

from agent.core.errors import ConfigError

if TYPE_CHECKING:
    pass


def _address(value: str, what: str) -> str:
    if not is_address(value):
        raise ConfigError(f"{what} is not an address: {value!r}")
    return to_checksum_address(value)


def _cmd_add_delegate(args: argparse.Namespace) -> int:
    from agent.app import App
    from agent.config import load_settings
    from agent.sinks.safe_delegate import (
        DelegateRegistration,
        add_delegate,
        delegate_hash,
        delegate_typed_data,
        totp,
    )
    from agent.sinks.safe_service import SafeServiceClient, account_from_key

    settings = load_settings(args.config)
    # The position (and its chain, its Safe service) the delegate is for: ``--position`` by
    # name; without it the one configured position.
    with App(settings) as app:
        try:
            position = app.parts.position(args.position)
        except ConfigError as exc:
            raise ConfigError(f"{settings.origin}: {exc}") from None
    chain = position.chain
    cfg = chain.sinks.safe_service
    chain_id = chain.chain_id
    safe_raw = position.account or (chain.config.accounts[0] if chain.config.accounts else None)
    if not safe_raw:
        raise ConfigError(f"{settings.origin}: no Safe address (position.account)")
    safe = _address(safe_raw, "position.account")
    if args.delegate:
        delegate = _address(args.delegate, "--delegate")
    elif cfg.delegate_key is not None:
        delegate = account_from_key(cfg.delegate_key, "sinks.safe_service.delegate_key").address
    else:
        raise ConfigError("give --delegate or set sinks.safe_service.delegate_key")
    now = int(time.time())

    if not args.signature:
        data = delegate_typed_data(delegate, chain_id, totp(now))
        text = json.dumps(data, indent=2)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(
            f"Delegate {delegate} for Safe {safe} on chain {chain_id} "
            f"({cfg.base_url.rstrip('/')}/api/v2/delegates/).\n"
            "An owner of the Safe signs this EIP-712 message (eth_signTypedData_v4); it is valid "
            "for this hour and the next:\n"
        )
        print(text)
        print(f"\nEIP-712 hash: 0x{delegate_hash(delegate, chain_id, totp(now)).hex()}")
        sign = (
            f"  cast wallet sign --data --from-file {args.out} --ledger\n"
            if args.out
            else "  (add --out FILE to save it), then: cast wallet sign --data --from-file FILE --ledger\n"
        )
        print(
            "\nFor example, with Foundry (the owner's key on a Ledger):\n"
            + sign
            + "Then register it:\n"
            f"  hedge-agent safe add-delegate --config {args.config} --delegator <owner address> "
            "--signature <0x… signature>" + (f" --delegate {delegate}" if args.delegate else "")
        )
        return 0

    if not args.delegator:
        raise ConfigError("--signature needs --delegator (the owner that signed)")
    reg = DelegateRegistration(
        safe=safe,
        delegate=delegate,
        delegator=_address(args.delegator, "--delegator"),
        signature=args.signature,
        label=args.label,
    )

    async def post() -> None:
        # The composition root's HTTP client: the configured timeouts and retries.
        async with App(settings) as app:
            await add_delegate(SafeServiceClient(app.http, cfg), reg, chain_id=chain_id, now_s=now)

    asyncio.run(post())
    print(
        f"registered {delegate} as a delegate of Safe {safe} (delegator {reg.delegator}) "
        f"on {cfg.base_url.rstrip('/')}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("safe", help="Safe Transaction Service helpers")
    safe_sub = p.add_subparsers(dest="safe_command", required=True)
    a = safe_sub.add_parser(
        "add-delegate",
        help="print the message a Safe owner signs to register the agent's delegate key, "
        "or post the owner's signature",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.add_argument(
        "--delegate", help="delegate address (default: sinks.safe_service.delegate_key's address)"
    )
    a.add_argument("--delegator", help="the owner that signed (with --signature)")
    a.add_argument("--signature", help="the owner's 65-byte EIP-712 signature, 0x-hex")
    a.add_argument("--label", default="hedge-agent", help="label shown by the service")
    a.add_argument("--position", help="with [[positions]]: the position's name (its Safe, chain)")
    a.add_argument("--out", help="also write the typed data JSON to this file")
    a.set_defaults(handler=_cmd_add_delegate)
