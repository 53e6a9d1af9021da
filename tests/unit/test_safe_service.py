"""Safe Transaction Service proposal against a local aiohttp server shaped like the v2 service
(tests/fake_safe_service.py): it recomputes the safeTxHash itself (eth-account's EIP-712 encoder,
not ours), checks sender and signer, wants the API key when configured, and answers 201 with an
empty body or the 422 bodies the real service sends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from eth_account import Account
from eth_utils.address import to_checksum_address
from fake_safe_service import FakeSafeService, safe_tx_hash_reference
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs

from agent.config import Settings
from agent.core.errors import ConfigError, SourceError
from agent.core.http import HttpClient, RetryPolicy
from agent.planner.safe import SafeTx
from agent.sinks.config import SafeServiceConfig, SinksConfig
from agent.sinks.safe_service import (
    SafeServiceClient,
    SafeServiceSink,
    describe_service_error,
    next_nonce,
    propose,
    safe_tx_hash,
)

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
# The real response bodies stay outside the project (contract tests, like test_samples_contract).
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"samples folder absent: {SAMPLES}")
DELEGATE_KEY = "0x" + "4c" * 32
DELEGATE = Account.from_key(DELEGATE_KEY).address
API_KEY = "sk_test_0123456789abcdef0123456789"
SAFE = to_checksum_address("0x5afe3855358e112b5647b952709e6165e1c1eeee")
OWNER = "0x757280Bd46fC5B1C8b85628E800c443525Afc09b"
ZERO = "0x0000000000000000000000000000000000000000"
MULTISEND = "0x40A2aCCbd92BCA938b02010E17A5b8929b49130D"
ST = SafeTx(SAFE, MULTISEND, 0, "0x8d80ff0a" + "00" * 64, 1)


@pytest.fixture
async def service() -> AsyncIterator[FakeSafeService]:
    svc = FakeSafeService(owners=[OWNER], delegates={DELEGATE}, api_key=API_KEY)
    server = TestServer(svc.app(), host="127.0.0.1")
    await server.start_server()
    svc.base = str(server.make_url("/tx-service/eth"))
    try:
        yield svc
    finally:
        await server.close()


def cfg(base: str, **kw: Any) -> SafeServiceConfig:
    args: dict[str, Any] = {"enabled": True, "base_url": base, "api_key": SecretStr(API_KEY),
                            "delegate_key": SecretStr(DELEGATE_KEY)} | kw  # fmt: skip
    return SafeServiceConfig(**args)


def http() -> HttpClient:
    return HttpClient(retry=RetryPolicy(attempts=1))


async def test_propose_success_v2(service: FakeSafeService) -> None:
    async with http() as h:
        client = SafeServiceClient(h, cfg(service.base))
        p = await propose(client, SafeTx(**{**ST.__dict__, "nonce": 7}), chain_id=1)
    (path, headers, body) = service.posts()[0]
    assert path == f"/tx-service/eth/api/v2/safes/{SAFE}/multisig-transactions/"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert set(body) == {"safe", "to", "value", "data", "operation", "safeTxGas", "baseGas",
                         "gasPrice", "gasToken", "refundReceiver", "nonce",
                         "contractTransactionHash", "sender", "signature", "origin"}  # fmt: skip
    assert body["operation"] == 1 and body["nonce"] == "7" and body["value"] == "0"
    assert body["gasToken"] == ZERO and body["sender"] == DELEGATE
    # The service's own (eth-account) hash of what was posted is ours, at nonce 7.
    assert p.safe_tx_hash == body["contractTransactionHash"] == safe_tx_hash_reference(body, 1)
    assert p.safe_tx_hash == "0x" + safe_tx_hash(ST, chain_id=1, nonce=7).hex()
    # Read back through GET /api/v2/multisig-transactions/{hash}/ (string nonce parsed).
    gets = [r for r in service.received if r[0] == "GET"]
    assert gets[-1][1] == f"/tx-service/eth/api/v2/multisig-transactions/{p.safe_tx_hash}/"
    assert p.queued and p.read_back_error is None and p.api == "v2"
    assert p.proposer == OWNER  # the delegate proposes on behalf of the owner that registered it
    assert service.txs[p.safe_tx_hash]["proposedByDelegate"] == DELEGATE
    assert API_KEY not in json.dumps(p.as_dict())


async def test_queue_with_two_pending_proposes_at_the_next_nonce(service: FakeSafeService) -> None:
    onchain = 5
    service.add_pending(SAFE, 4, executed=True)  # history, not queue
    service.add_pending(SAFE, 3)  # a stale proposal below the on-chain nonce: never executable
    pending = [service.add_pending(SAFE, 5), service.add_pending(SAFE, 6, data="0x01")]
    async with http() as h:
        client = SafeServiceClient(h, cfg(service.base))
        queued = await client.queued(SAFE, onchain)
        plan = next_nonce(onchain, queued)
        p = await propose(client, SafeTx(**{**ST.__dict__, "nonce": plan.nonce}), chain_id=1)
    assert [q.nonce for q in queued] == [6, 5] and {q.safe_tx_hash for q in queued} == set(pending)
    assert plan.nonce == 7 and plan.queued_nonces == (5, 6) and plan.onchain_nonce == 5
    # The queue request is the v2 list, filtered and ordered like the Safe app's queue.
    get = next(r for r in service.received if r[0] == "GET" and "/safes/" in r[1])
    assert get[1] == f"/tx-service/eth/api/v2/safes/{SAFE}/multisig-transactions/"
    assert service.queue(SAFE)[-1]["safeTxHash"] == p.safe_tx_hash
    assert [t["nonce"] for t in service.queue(SAFE)] == [3, 5, 6, 7]
    # An independent EIP-712 computation (eth-account) of the transaction at nonce 7.
    body = {"safe": SAFE, "to": MULTISEND, "value": "0", "data": ST.data, "operation": 1,
            "nonce": "7"}  # fmt: skip
    assert p.safe_tx_hash == safe_tx_hash_reference(body, 1)
    assert p.nonce == 7 and p.queued


def test_next_nonce_rules() -> None:
    from agent.sinks.safe_service import QueuedTx

    def q(n: int, executed: bool = False) -> QueuedTx:
        return QueuedTx(n, f"0x{n:064x}", executed)

    assert next_nonce(5, ()).nonce == 5  # nothing queued: the on-chain nonce
    assert next_nonce(5, (q(5),)).nonce == 6
    assert next_nonce(5, (q(8), q(5))).nonce == 9  # after a gap too, as the Safe app does
    assert next_nonce(5, (q(3), q(4))).nonce == 5  # stale ones below the on-chain nonce
    assert next_nonce(5, (q(6, executed=True),)).nonce == 5
    assert next_nonce(5, (q(5),), at_least=9).nonce == 9  # already posted in this tick


async def test_sender_not_owner_or_delegate(service: FakeSafeService) -> None:
    service.delegates = set()
    async with http() as h:
        with pytest.raises(SourceError) as ei:
            await propose(SafeServiceClient(h, cfg(service.base)),
                          SafeTx(**{**ST.__dict__, "nonce": 0}), chain_id=1)  # fmt: skip
    msg = str(ei.value)
    assert msg.startswith(f"safe-tx-service: rejected the proposal for Safe {SAFE} nonce 0")
    assert f"HTTP 422: sender: Sender={DELEGATE} is not an owner or delegate." in msg
    assert "hint: register the key's address as a delegate" in msg
    assert "hedge-agent safe add-delegate" in msg
    assert "\n" not in msg and API_KEY not in msg
    assert service.txs == {}


async def test_contract_tx_hash_mismatch(service: FakeSafeService) -> None:
    service.chain_id = 11155111  # the service is on another chain than we signed for
    async with http() as h:
        with pytest.raises(SourceError) as ei:
            await propose(SafeServiceClient(h, cfg(service.base)),
                          SafeTx(**{**ST.__dict__, "nonce": 7}), chain_id=1)  # fmt: skip
    msg = str(ei.value)
    assert "HTTP 422: contractTransactionHash: Contract-transaction-hash=0x" in msg
    assert "does not match provided contract-tx-hash=" in msg
    assert "hint: the service hashed the transaction differently" in msg
    assert "\n" not in msg and API_KEY not in msg


@pytest.mark.parametrize("key", [None, "sk_wrong_key_9876543210"])
async def test_401_without_the_key(service: FakeSafeService, key: str | None) -> None:
    conf = cfg(service.base, api_key=SecretStr(key) if key else None)  # self-hosted: optional
    async with http() as h:
        client = SafeServiceClient(h, conf)
        with pytest.raises(SourceError) as ei:
            await propose(client, SafeTx(**{**ST.__dict__, "nonce": 1}), chain_id=1)
        with pytest.raises(SourceError) as q:
            await client.queued(SAFE, 0)
    msg = str(ei.value)
    assert "HTTP 401: detail: " in msg and "sinks.safe_service.api_key" in msg
    assert "\n" not in msg
    assert "HTTP 401" in str(q.value)
    if key:
        assert key not in msg and key not in str(q.value)
        assert service.posts()[0][1]["Authorization"] == f"Bearer {key}"
    else:
        assert "Authorization" not in service.posts()[0][1]
    assert service.txs == {}


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("safe_tx_service_post_multisig_422_sender_not_owner_or_delegate.json",
         "HTTP 422: sender: Sender=0x5E69fb460c9950F5AE90DafFc4C4F32EcafaCaA5 is not an owner or delegate."),
        ("safe_tx_service_post_multisig_422_signer_not_owner_or_delegate.json",
         "HTTP 422: signature: Signer=0x309835815F6033b5ef843E3346AF53cF343F920e is not an owner or delegate."),
        ("safe_tx_service_post_multisig_422_signature_null.json",
         "HTTP 422: signature: This field may not be null. (hint: a required field was empty)"),
        ("safe_tx_service_get_safe_info_422_code50_service_test_assertion.json",
         "HTTP 422: code 50: Cannot get Safe info from blockchain"),
    ],
)  # fmt: skip
@needs_samples
async def test_real_422_bodies(service: FakeSafeService, sample: str, expected: str) -> None:
    body = (SAMPLES / sample).read_text(encoding="utf-8")
    service.force_post = (422, body)
    async with http() as h:
        with pytest.raises(SourceError) as ei:
            await propose(SafeServiceClient(h, cfg(service.base)),
                          SafeTx(**{**ST.__dict__, "nonce": 3}), chain_id=1)  # fmt: skip
    assert expected in str(ei.value)
    assert "\n" not in str(ei.value)


@needs_samples
def test_describe_other_bodies() -> None:
    # Node util.inspect dump (not JSON): one bounded line, the field still named.
    text = SAMPLES / "safe_tx_service_post_multisig_422_contract_tx_hash_mismatch_node_inspect.txt"
    line = describe_service_error(422, text.read_text(encoding="utf-8"))
    assert line.startswith("HTTP 422: contractTransactionHash: data: {")
    assert "\n" not in line and "hint: the service hashed" in line
    # Documented serializer messages are attributed to their field.
    nonce = json.dumps(
        {"nonFieldErrors": [f"Tx with nonce=4 for safe={SAFE} already executed in tx-hash=0xab"]}
    )
    assert describe_service_error(422, nonce).startswith("HTTP 422: nonce: Tx with nonce=4")
    one = json.dumps({"nonFieldErrors": ["Just one signature is expected if using delegates"]})
    assert describe_service_error(422, one) == (
        "HTTP 422: signature: Just one signature is expected if using delegates"
    )
    two = json.dumps({"to": ["This field is required."], "nonce": ["A valid integer is required."]})
    assert describe_service_error(422, two) == (
        "HTTP 422: to: This field is required. | nonce: A valid integer is required."
        " (hint: a required field was empty)"
    )
    long = json.dumps({"nonFieldErrors": ["Sender=0x1 is not an owner or delegate. " + "x" * 5000]})
    assert len(describe_service_error(422, long)) < 700
    assert describe_service_error(502, "<html>\n<b>Bad gateway</b></html>") == (
        "HTTP 502: <html> <b>Bad gateway</b></html>"
    )


async def test_read_back_is_checked(service: FakeSafeService) -> None:
    orig = service._render

    def lying(t: dict[str, Any], api: str) -> dict[str, Any]:
        return orig(t, api) | {"nonce": "8"}

    service._render = lying  # type: ignore[method-assign]
    async with http() as h:
        p = await propose(SafeServiceClient(h, cfg(service.base)),
                          SafeTx(**{**ST.__dict__, "nonce": 7}), chain_id=1)  # fmt: skip
    assert not p.queued and p.read_back_error is not None
    assert "nonce 8 != 7" in p.read_back_error


async def test_legacy_v1_only_for_an_old_self_hosted_service() -> None:
    svc = FakeSafeService(owners=[OWNER], delegates={DELEGATE}, version="5.17.1")
    server = TestServer(svc.app(), host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("/tx-service/eth"))
        svc.add_pending(SAFE, 0)
        with capture_logs() as logs:
            async with http() as h:
                client = SafeServiceClient(h, cfg(base, api_key=None))
                queued = await client.queued(SAFE, 0)
                p = await propose(client, SafeTx(**{**ST.__dict__, "nonce": 1}), chain_id=1)
    finally:
        await server.close()
    assert [q.nonce for q in queued] == [0]  # v1's integer nonce
    assert p.api == "v1" and p.queued and p.nonce == 1
    assert svc.posts()[0][0] == f"/tx-service/eth/api/v1/safes/{SAFE}/multisig-transactions/"
    legacy = [e for e in logs if e["event"] == "safe_service.legacy_v1"]
    assert len(legacy) == 1 and legacy[0]["service_version"] == "5.17.1"
    assert legacy[0]["log_level"] == "warning"


async def test_current_self_hosted_and_safe_hosted_use_v2(service: FakeSafeService) -> None:
    async with http() as h:
        assert await SafeServiceClient(h, cfg(service.base)).api() == "v2"
        # A Safe-hosted service is v2 without asking (nothing is sent: no network here).
        hosted = SafeServiceClient(h, cfg("https://api.safe.global/tx-service/eth"))
        n = len(service.received)
        assert await hosted.api() == "v2"
    assert len(service.received) == n


async def test_api_key_is_never_logged(service: FakeSafeService) -> None:
    with capture_logs() as logs:
        async with http() as h:
            sink = SafeServiceSink(h, cfg(service.base), chain_id=1)
            ok = await sink.submit(SafeTx(**{**ST.__dict__, "nonce": 2}), block=1)
            service.delegates = set()
            bad = await sink.submit(SafeTx(**{**ST.__dict__, "nonce": 3}), block=1)
    assert ok["queued"] and "error" in bad
    assert logs and API_KEY not in repr(logs) and DELEGATE_KEY[2:] not in repr(logs)
    assert API_KEY not in json.dumps([ok, bad])


async def test_sink_never_raises_when_the_service_is_down() -> None:
    async with http() as h:
        sink = SafeServiceSink(h, cfg("http://127.0.0.1:9/tx-service/eth"), chain_id=1)
        out = await sink.submit(SafeTx(**{**ST.__dict__, "nonce": 2}), block=1)
    assert out["error"].startswith("safe-tx-service: ")
    assert "127.0.0.1:9" in out["error"] and "\n" not in out["error"]


def test_config_rules() -> None:
    # Safe-hosted: the key is required, and the error names the field.
    with pytest.raises(ValidationError, match=r"sinks\.safe_service\.api_key is required"):
        SafeServiceConfig(enabled=True, delegate_key=SecretStr(DELEGATE_KEY))
    with pytest.raises(ValidationError, match="api_key is required"):
        SafeServiceConfig(enabled=True, delegate_key=SecretStr(DELEGATE_KEY),
                          base_url="https://safe-transaction-mainnet.safe.global", api_key=SecretStr(" "))  # fmt: skip
    # Self-hosted: optional. Off: nothing required.
    SafeServiceConfig(enabled=True, delegate_key=SecretStr(DELEGATE_KEY),
                      base_url="https://safe-tx.example.org")  # fmt: skip
    SafeServiceConfig()
    with pytest.raises(ValidationError, match=r"requires safe_service\.delegate_key"):
        SafeServiceConfig(enabled=True, api_key=SecretStr(API_KEY))
    with pytest.raises(ValidationError) as ei:
        cfg("http://127.0.0.1:1", delegate_key=SecretStr("0xnot-a-key-but-secret"))
    assert "delegate_key is not a 32-byte hex private key" in str(ei.value)
    assert "not-a-key-but-secret" not in str(ei.value)
    with pytest.raises(ValidationError, match="exclusive"):
        SinksConfig(safe_service=cfg("http://127.0.0.1:1"), live={"enabled": True})


def test_config_error_through_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from agent.config import load_settings

    p = tmp_path / "agent.toml"
    p.write_text(f'[sinks.safe_service]\nenabled = true\ndelegate_key = "{DELEGATE_KEY}"\n')
    with pytest.raises(ConfigError) as ei:
        load_settings(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: invalid configuration: sinks.safe_service")
    assert (
        "sinks.safe_service.api_key is required for the Safe-hosted service api.safe.global" in msg
    )
    assert DELEGATE_KEY not in msg and "\n" not in msg
    monkeypatch.setenv("HEDGE_AGENT_SINKS__SAFE_SERVICE__API_KEY", API_KEY)
    s = load_settings(p)
    assert isinstance(s, Settings) and s.sinks.safe_service.api_key is not None
    assert API_KEY not in repr(s)


async def test_off_and_unplanned() -> None:
    async with HttpClient() as h:
        with pytest.raises(ConfigError, match="enabled is false"):
            await propose(SafeServiceClient(h, SafeServiceConfig()), ST, chain_id=1)
        with pytest.raises(ConfigError, match="no nonce planned"):
            await propose(SafeServiceClient(h, cfg("http://127.0.0.1:9")), ST, chain_id=1)


@pytest.mark.parametrize("bad", [None, "7.0", "-1", "²", True, 7.0])
async def test_malformed_queue_nonce_is_one_line(service: FakeSafeService, bad: object) -> None:
    from agent.core.errors import MalformedResponse

    orig = service._render
    service._render = lambda t, api: orig(t, api) | {"nonce": bad}  # type: ignore[method-assign]
    service.add_pending(SAFE, 5)
    async with http() as h:
        with pytest.raises(MalformedResponse) as ei:
            await SafeServiceClient(h, cfg(service.base)).queued(SAFE, 5)
    assert str(ei.value) == (
        f"safe-tx-service: queue results[0].nonce (v2): expected a non-negative integer, got {bad!r}"
    )


async def test_publish_posts_at_the_reserved_nonce_and_keeps_the_plan(
    service: FakeSafeService, tmp_path: Path
) -> None:
    """The sink stage: the nonce plan made before the simulation goes into the record; only a
    simulated proposal is posted, at the draft's nonce; a failed simulation posts nothing."""
    from agent.core.rpc import RpcClient
    from agent.planner.draft import Draft, ProposalHeader
    from agent.simulator.fork import SimulationResult
    from agent.simulator.outcome import Outcome
    from agent.sinks.journal import ProposalJournal
    from agent.sinks.publish import ProposalSinks
    from agent.store.ledger import ProposalLedger

    def draft(key: str, st: SafeTx | None) -> Draft:
        header = ProposalHeader(key, key, "2026-01-01T00:00:00+00:00", "mainnet", 1, 100, SAFE,
                                (), {}, {})  # fmt: skip
        return Draft(header, "collateral_top_up", safe_tx=st)

    def sim(ok: bool) -> SimulationResult:
        return SimulationResult(ok, 99, None, None, (), error=None if ok else "reverted")

    plan = {"nonce": 7, "onchain_nonce": 5, "queued_nonces": [5, 6]}
    store = ProposalLedger(tmp_path / "agent.sqlite")
    sinks_cfg = SinksConfig(safe_tx_builder_dir=None, safe_service=cfg(service.base))
    async with http() as h, RpcClient("http://127.0.0.1:9") as rpc:  # rpc: never called here
        sinks = ProposalSinks(sinks_cfg, journal=ProposalJournal(tmp_path / "p.jsonl"),
                              ledger=store, rpc=rpc, http=h, chain_id=1)  # fmt: skip
        # no Safe transaction: nothing to reserve, no request
        plain = draft("k0", None)
        assert await sinks.at_service_nonce(plain) == (plain, None)
        st = SafeTx(**{**ST.__dict__, "nonce": 7})
        failed = await sinks.publish(Outcome(draft("k1", st), sim(False)), session_id="s",
                                     at=1, service_nonce=plan)  # fmt: skip
        assert failed is not None and failed["safe_service"] == plan
        assert failed["safe_tx"]["nonce"] == 7 and service.posts() == []
        ok = await sinks.publish(Outcome(draft("k2", st), sim(True)), session_id="s", at=1,
                                 service_nonce=plan)  # fmt: skip
    store.close()
    assert ok is not None
    ss = ok["safe_service"]
    assert ss["queued"] and ss["nonce"] == 7 and ss["queued_nonces"] == [5, 6]
    ((_, _, body),) = service.posts()
    assert body["nonce"] == "7" and ss["safe_tx_hash"] == safe_tx_hash_reference(body, 1)


# -- issue 24: idempotent proposals --------------------------------------------------------------


async def test_a_transaction_the_service_holds_is_not_posted_again(
    service: FakeSafeService,
) -> None:
    """The same transaction at the same nonce (a retry after a crash): found by its safeTxHash
    and recorded as queued, without a second post."""
    st = SafeTx(**{**ST.__dict__, "nonce": 7})
    async with http() as h:
        client = SafeServiceClient(h, cfg(service.base))
        first = await propose(client, st, chain_id=1)
        again = await propose(client, st, chain_id=1)
    assert len(service.posts()) == 1 and len(service.queue(SAFE)) == 1
    assert first.queued and not first.already_queued
    assert again.queued and again.already_queued and again.safe_tx_hash == first.safe_tx_hash
    assert again.as_dict()["already_queued"] is True


async def test_a_lost_reply_is_queued_when_the_service_has_it(service: FakeSafeService) -> None:
    """Every reply to the post comes after the client's timeout, but the service queued the
    transaction: the proposal says queued (not rejected), with the lost reply noted."""
    service.late_replies, service.reply_delay_s = 5, 1.0
    st = SafeTx(**{**ST.__dict__, "nonce": 7})
    async with http() as h:
        p = await propose(SafeServiceClient(h, cfg(service.base, timeout_s=0.3)), st, chain_id=1)
    assert p.queued and p.post_error is not None and "timeout after" in p.post_error
    body = {"safe": SAFE, "to": MULTISEND, "value": "0", "data": ST.data, "operation": 1,
            "nonce": "7"}  # fmt: skip
    assert p.safe_tx_hash == safe_tx_hash_reference(body, 1) and len(service.queue(SAFE)) == 1


async def test_a_refused_post_is_still_an_error(service: FakeSafeService) -> None:
    service.refuse_posts = {0}
    async with http() as h:
        with pytest.raises(SourceError, match="is not an owner or delegate"):
            await propose(SafeServiceClient(h, cfg(service.base)),
                          SafeTx(**{**ST.__dict__, "nonce": 7}), chain_id=1)  # fmt: skip
    assert service.txs == {}


def test_the_queue_entry_of_the_same_transaction_keeps_its_nonce() -> None:
    """``already_queued`` matches by the hash the SERVICE computed (eth-account's EIP-712, not
    ours) at the queued nonce: the same call at nonce 6 is found; another call is not."""
    from agent.sinks.safe_service import QueuedTx, already_queued

    def queued(nonce: int, data: str) -> QueuedTx:
        body = {"safe": SAFE, "to": SAFE, "value": "0", "data": data, "operation": 0,
                "nonce": str(nonce)}  # fmt: skip
        return QueuedTx(nonce, safe_tx_hash_reference(body, 1), False)

    st = SafeTx(SAFE, SAFE, 0, "0x01", 0)
    q = (queued(5, "0x"), queued(6, "0x01"), queued(7, "0x02"))
    found = already_queued(st, q, chain_id=1)
    assert found is not None and found.nonce == 6
    assert already_queued(SafeTx(SAFE, SAFE, 0, "0x03", 0), q, chain_id=1) is None
    assert already_queued(st, q, chain_id=10) is None  # another chain: another hash
    executed = (QueuedTx(6, q[1].safe_tx_hash, True),)
    assert already_queued(st, executed, chain_id=1) is None


def test_safe_tx_hash_covers_every_field_in_order_against_eth_account() -> None:
    """With every gas field non-zero and distinct (the proposals leave them 0, which hides a
    swapped pair), our safeTxHash equals eth-account's EIP-712 hash of the same message, and
    changing any one field or the nonce changes it (mutation audit: hash over wrong fields)."""
    refund = to_checksum_address("0x" + "ab" * 20)
    token = to_checksum_address("0x" + "cd" * 20)
    st = SafeTx(SAFE, MULTISEND, 3, "0x8d80ff0a01", 1, safe_tx_gas=50_000, base_gas=21_000,
                gas_price=7, gas_token=token, refund_receiver=refund)  # fmt: skip
    body = {"safe": SAFE, "to": MULTISEND, "value": "3", "data": "0x8d80ff0a01", "operation": 1,
            "safeTxGas": "50000", "baseGas": "21000", "gasPrice": "7", "gasToken": token,
            "refundReceiver": refund, "nonce": "9"}  # fmt: skip
    ours = "0x" + safe_tx_hash(st, chain_id=10, nonce=9).hex()
    assert ours == safe_tx_hash_reference(body, 10)
    swapped = SafeTx(**{**st.__dict__, "safe_tx_gas": 21_000, "base_gas": 50_000})
    assert safe_tx_hash(swapped, chain_id=10, nonce=9) != safe_tx_hash(st, chain_id=10, nonce=9)
    assert safe_tx_hash(st, chain_id=10, nonce=10) != safe_tx_hash(st, chain_id=10, nonce=9)
    assert safe_tx_hash(st, chain_id=1, nonce=9) != safe_tx_hash(st, chain_id=10, nonce=9)
