"""A local Safe Transaction Service shaped like the real one (safe-global/safe-transaction-service
5.x: ``history/views_v2.py``, ``history/serializers.py``, ``history/helpers.py``), served by a real
aiohttp server on loopback. It checks what the real service checks, with independent code:

* the ``safeTxHash`` is recomputed with eth-account's EIP-712 encoder (not the agent's);
* ``sender`` must be an owner or a delegate, and the signature must recover to it;
* delegate registrations carry an owner's EIP-712 ``Delegate(delegateAddress, totp)`` signature
  for the current or the previous hour;
* with ``api_key`` set, every request needs ``Authorization: Bearer <key>`` (Safe-hosted
  services); the 401 body is DRF's ``{"detail": ...}`` (no recorded body from the hosted gateway
  exists in the samples, so DRF's standard one stands in);
* v2 answers ``nonce``, ``safeTxGas``, ``baseGas`` as strings, v1 as integers; a service older
  than 5.18.0 has no v2 multisig routes, and ``/api/v1/about/`` reports the version.

Error bodies use the real messages (see ../shared/samples/safe_tx_service_*).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak

ZERO = "0x0000000000000000000000000000000000000000"
PREFIX = "/tx-service/eth"


def eip712_hash(full_message: dict[str, Any]) -> bytes:
    msg = encode_typed_data(full_message=full_message)
    return keccak(b"\x19" + msg.version + msg.header + msg.body)


def safe_tx_hash_reference(body: dict[str, Any], chain_id: int) -> str:
    """The service's view of a posted body: EIP-712 ``SafeTx`` via eth-account."""
    h = eip712_hash({
        "types": {
            "EIP712Domain": [{"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "SafeTx": [{"name": n, "type": t} for n, t in [
                ("to", "address"), ("value", "uint256"), ("data", "bytes"), ("operation", "uint8"),
                ("safeTxGas", "uint256"), ("baseGas", "uint256"), ("gasPrice", "uint256"),
                ("gasToken", "address"), ("refundReceiver", "address"), ("nonce", "uint256")]],
        },
        "primaryType": "SafeTx",
        "domain": {"chainId": chain_id, "verifyingContract": body["safe"]},
        "message": {
            "to": body["to"], "value": int(body["value"]),
            "data": bytes.fromhex((body.get("data") or "0x")[2:]),
            "operation": int(body["operation"]), "safeTxGas": int(body.get("safeTxGas", 0)),
            "baseGas": int(body.get("baseGas", 0)), "gasPrice": int(body.get("gasPrice", 0)),
            "gasToken": body.get("gasToken") or ZERO,
            "refundReceiver": body.get("refundReceiver") or ZERO, "nonce": int(body["nonce"]),
        },
    })  # fmt: skip
    return "0x" + h.hex()


def delegate_reference_hash(delegate: str, chain_id: int | None, totp: int) -> bytes:
    """``DelegateSignatureHelperV2.calculate_hash``: chainId appended to the domain when given."""
    domain_types = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}]
    domain: dict[str, Any] = {"name": "Safe Transaction Service", "version": "1.0"}
    if chain_id:
        domain_types.append({"name": "chainId", "type": "uint256"})
        domain["chainId"] = chain_id
    return eip712_hash({
        "types": {"EIP712Domain": domain_types,
                  "Delegate": [{"name": "delegateAddress", "type": "address"},
                               {"name": "totp", "type": "uint256"}]},
        "primaryType": "Delegate",
        "domain": domain,
        "message": {"delegateAddress": delegate, "totp": totp},
    })  # fmt: skip


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


@dataclass
class FakeSafeService:
    chain_id: int = 1
    owners: list[str] = field(default_factory=list)
    delegates: set[str] = field(default_factory=set)
    api_key: str | None = None
    version: str = "5.24.0"
    txs: dict[str, dict[str, Any]] = field(default_factory=dict)  # safeTxHash -> stored tx
    received: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    force_post: tuple[int, str] | None = None  # answer every multisig POST with this body
    refuse_posts: set[int] = field(default_factory=set)  # these POSTs (0-based) as non-delegate
    # The next ``late_replies`` multisig POSTs are answered ``reply_delay_s`` late, AFTER the
    # transaction is stored: a client that times out (or is killed) meanwhile never learns that
    # it was queued (a lost reply).
    late_replies: int = 0
    reply_delay_s: float = 0.0
    _post_count: int = 0
    base: str = ""

    @property
    def has_v2(self) -> bool:
        return _version(self.version) >= (5, 18, 0)

    # -- state helpers --------------------------------------------------------------------
    def add_pending(
        self, safe: str, nonce: int, *, executed: bool = False, data: str = "0x"
    ) -> str:
        """A queued transaction some owner proposed (a plain call to the Safe itself)."""
        body = {"safe": safe, "to": safe, "value": "0", "data": data, "operation": 0,
                "nonce": str(nonce)}  # fmt: skip
        h = safe_tx_hash_reference(body, self.chain_id)
        self.txs[h] = self._stored(body, h, proposer=self.owners[0], delegate=None)
        self.txs[h]["executed"] = executed
        return h

    def _stored(
        self, body: dict[str, Any], h: str, *, proposer: str, delegate: str | None
    ) -> dict[str, Any]:
        return {
            "safe": body["safe"], "to": body["to"], "value": int(body["value"]),
            "data": body.get("data") or None, "operation": int(body["operation"]),
            "gasToken": body.get("gasToken") or ZERO, "safeTxGas": int(body.get("safeTxGas", 0)),
            "baseGas": int(body.get("baseGas", 0)), "gasPrice": int(body.get("gasPrice", 0)),
            "refundReceiver": body.get("refundReceiver") or ZERO, "nonce": int(body["nonce"]),
            "safeTxHash": h, "proposer": proposer, "proposedByDelegate": delegate,
            "executed": False, "origin": body.get("origin") or "{}",
            "signature": body.get("signature"), "submissionDate": "2026-11-30T12:00:00.000000Z",
        }  # fmt: skip

    def queue(self, safe: str) -> list[dict[str, Any]]:
        return sorted((t for t in self.txs.values() if t["safe"] == safe and not t["executed"]),
                      key=lambda t: t["nonce"])  # fmt: skip

    def _render(self, t: dict[str, Any], api: str) -> dict[str, Any]:
        """``SafeMultisigTransactionResponseSerializer(V2)`` on the wire (camelCase)."""
        as_api = str if api == "v2" else int
        return {
            "safe": t["safe"], "to": t["to"], "value": str(t["value"]), "data": t["data"],
            "operation": t["operation"], "gasToken": t["gasToken"],
            "safeTxGas": as_api(t["safeTxGas"]), "baseGas": as_api(t["baseGas"]),
            "gasPrice": str(t["gasPrice"]), "refundReceiver": t["refundReceiver"],
            "nonce": as_api(t["nonce"]), "executionDate": None,
            "submissionDate": t["submissionDate"], "modified": t["submissionDate"],
            "blockNumber": None, "transactionHash": None, "safeTxHash": t["safeTxHash"],
            "proposer": t["proposer"], "proposedByDelegate": t["proposedByDelegate"],
            "executor": None, "isExecuted": t["executed"], "isSuccessful": None,
            "ethGasPrice": None, "maxFeePerGas": None, "maxPriorityFeePerGas": None,
            "gasUsed": None, "fee": None, "origin": t["origin"], "dataDecoded": None,
            "confirmationsRequired": 1,
            "confirmations": [] if t["proposedByDelegate"] or not t["signature"] else [
                {"owner": t["proposer"], "submissionDate": t["submissionDate"],
                 "transactionHash": None, "signature": t["signature"], "signatureType": "EOA"}],
            "trusted": True, "signatures": None,
        }  # fmt: skip

    # -- HTTP -----------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = await request.text()
        self.received.append((request.method, request.path, dict(request.headers), body))
        if self.api_key is not None:
            auth = request.headers.get("Authorization", "")
            if auth != f"Bearer {self.api_key}":
                detail = (
                    "Authentication credentials were not provided."
                    if not auth
                    else "Invalid token."
                )
                return web.json_response({"detail": detail}, status=401)
        result: web.StreamResponse = await handler(request)
        return result

    async def about(self, request: web.Request) -> web.Response:
        return web.json_response({
            "name": "Safe Transaction Service", "version": self.version, "api_version": "v1",
            "secure": False, "host": request.host, "headers": [], "settings": {},
        })  # fmt: skip

    @staticmethod
    def _api(request: web.Request) -> str:
        return "v2" if "/api/v2/" in request.path else "v1"

    @staticmethod
    def _bad_checksum(addr: str) -> web.Response | None:
        if is_checksum_address(addr):
            return None
        return web.json_response({"code": 1, "message": "Checksum address validation failed",
                                  "arguments": [addr]}, status=422)  # fmt: skip

    async def list_txs(self, request: web.Request) -> web.Response:
        addr = request.match_info["address"]
        if (bad := self._bad_checksum(addr)) is not None:
            return bad
        q = request.query
        rows = [t for t in self.txs.values() if t["safe"] == addr]
        if "executed" in q:
            rows = [t for t in rows if t["executed"] == (q["executed"] == "true")]
        if "nonce__gte" in q:
            rows = [t for t in rows if t["nonce"] >= int(q["nonce__gte"])]
        rows.sort(key=lambda t: t["nonce"], reverse=q.get("ordering", "-nonce").startswith("-"))
        limit, offset = int(q.get("limit", 20)), int(q.get("offset", 0))
        page = rows[offset : offset + limit]
        api = self._api(request)
        return web.json_response({
            "count": len(rows), "next": None, "previous": None,
            "results": [self._render(t, api) for t in page],
            "countUniqueNonce": len({t["nonce"] for t in self.txs.values() if t["safe"] == addr}),
        })  # fmt: skip

    async def get_tx(self, request: web.Request) -> web.Response:
        t = self.txs.get(request.match_info["safe_tx_hash"])
        if t is None:
            return web.json_response({"detail": "Not found."}, status=404)
        return web.json_response(self._render(t, self._api(request)))

    async def post_tx(self, request: web.Request) -> web.Response:
        addr = request.match_info["address"]
        if (bad := self._bad_checksum(addr)) is not None:
            return bad
        if self.force_post is not None:
            return web.Response(status=self.force_post[0], text=self.force_post[1],
                                content_type="application/json")  # fmt: skip
        body = dict(await request.json())
        body["safe"] = addr  # the real view takes the Safe from the path

        def fail(errors: dict[str, list[str]]) -> web.Response:
            return web.json_response(errors, status=422)

        if body.get("signature") is None:
            return fail({"signature": ["This field may not be null."]})
        mine = safe_tx_hash_reference(body, self.chain_id)
        if mine != body["contractTransactionHash"]:
            return fail({"nonFieldErrors": [
                f"Contract-transaction-hash={mine} does not match provided "
                f"contract-tx-hash={body['contractTransactionHash']}"]})  # fmt: skip
        index, self._post_count = self._post_count, self._post_count + 1
        allowed = set(self.owners) | (self.delegates if index not in self.refuse_posts else set())
        delegates = "{" + ", ".join(repr(d) for d in sorted(self.delegates)) + "}" if self.delegates else "set()"  # fmt: skip
        if body["sender"] not in allowed:
            return fail({"nonFieldErrors": [
                f"Sender={body['sender']} is not an owner or delegate. "
                f"Current owners={self.owners}. Delegates={delegates}"]})  # fmt: skip
        signer = Account._recover_hash(
            bytes.fromhex(mine[2:]), signature=bytes.fromhex(body["signature"][2:])
        )
        if signer not in allowed:
            return fail({"nonFieldErrors": [
                f"Signer={signer} is not an owner or delegate. "
                f"Current owners={self.owners}. Delegates={delegates}"]})  # fmt: skip
        if signer != body["sender"]:
            return fail({"nonFieldErrors": [
                f"Signature does not match sender={body['sender']}. Calculated owners=['{signer}']"
            ]})  # fmt: skip
        if mine not in self.txs:
            delegate = body["sender"] if body["sender"] not in self.owners else None
            self.txs[mine] = self._stored(body, mine, proposer=self.owners[0] if delegate else body["sender"],
                                          delegate=delegate)  # fmt: skip
        if self.late_replies > 0:
            self.late_replies -= 1
            await asyncio.sleep(self.reply_delay_s)
        return web.Response(status=201)  # the real service answers an empty body

    async def post_delegate(self, request: web.Request) -> web.Response:
        body = await request.json()
        safe, delegate, delegator = body.get("safe"), body["delegate"], body["delegator"]
        if safe and delegator not in self.owners:
            return web.json_response({"nonFieldErrors": [
                f"Provided delegator={delegator} is not an owner of Safe={safe}"]}, status=400)  # fmt: skip
        now = int(time.time()) // 3600
        sig = bytes.fromhex(body["signature"][2:])
        ok = any(
            Account._recover_hash(delegate_reference_hash(delegate, chain, t), signature=sig)
            == delegator
            for t in (now - 1, now)
            for chain in (self.chain_id, None)
        )
        if not ok:
            return web.json_response({"nonFieldErrors": [
                f"Signature does not match provided delegator={delegator}"]}, status=400)  # fmt: skip
        self.delegates.add(delegate)
        return web.json_response({"safe": safe, "delegate": delegate, "delegator": delegator,
                                  "label": body.get("label"), "expiryDate": None}, status=201)  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get(f"{PREFIX}/api/v1/about/", self.about)
        apis = ["v1", "v2"] if self.has_v2 else ["v1"]
        for api in apis:
            r.add_get(f"{PREFIX}/api/{api}/safes/{{address}}/multisig-transactions/", self.list_txs)
            r.add_post(f"{PREFIX}/api/{api}/safes/{{address}}/multisig-transactions/", self.post_tx)
            r.add_get(f"{PREFIX}/api/{api}/multisig-transactions/{{safe_tx_hash}}/", self.get_tx)
        r.add_post(f"{PREFIX}/api/v2/delegates/", self.post_delegate)
        return app

    def posts(self) -> list[tuple[str, dict[str, str], Any]]:
        return [(p, h, b) for m, p, h, b in self.received if m == "POST"]


@contextmanager
def serve_in_thread(svc: FakeSafeService) -> Iterator[str]:
    """Serve ``svc`` on a loopback port from a background thread (for code that runs its own
    event loop, like the CLI); yields the base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop
        runner = web.AppRunner(svc.app())
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port = runner.addresses[0][1]
        svc.base = f"http://127.0.0.1:{port}{PREFIX}"
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    if not ready.wait(10):
        raise RuntimeError("fake Safe Transaction Service did not start")
    try:
        yield svc.base
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        t.join(10)


def checksum(addr: str) -> str:
    return to_checksum_address(addr)
