"""The agent's HTTP client: one shared aiohttp session and a stack of small middleware layers.

Shape (as in web3.py's middleware): a *send* is ``async (Request) -> Response`` and a *layer* is
``(send) -> send``. The stack, outermost first::

    retry -> metrics -> json -> rate_limit -> [recording] -> transport

* ``transport`` is the ONE place aiohttp/status errors are translated into ``agent.core.errors``:
  timeouts and connection errors -> TransportError; 429 -> RateLimited (with Retry-After);
  other non-2xx -> HttpStatusError (a SourceError with ``status`` and a short body snippet).
  ``decode_json`` is the one place JSON is decoded: HTML pages, truncated or non-standard JSON
  -> MalformedResponse naming the source and the URL *path*.
* Every layer above sees only AgentErrors. ``retry`` is the layer shared with the JSON-RPC
  client (:mod:`agent.core.retry`); ``json`` decodes inside it, so a body cut short is retried.

Secrets: API keys are passed in ``Request.secrets`` (and/or as query params whose names look like
keys). Every URL and body snippet that reaches a message, a log line or a recording goes through
``redact`` (:mod:`agent.core.redact`, the one redaction of the project).

The module also holds tiny JSON-shape helpers (``expect_dict``, ``num`` ...) that the collectors use
so arbitrary JSON only ever raises MalformedResponse.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from agent.core.errors import (
    HttpStatusError,
    MalformedResponse,
    RateLimited,
    SourceError,
    TransportError,
)
from agent.core.metrics import METRICS
from agent.core.redact import redact, redact_value, snippet
from agent.core.retry import RetryPolicy, parse_retry_after, truncated_json, with_retries

__all__ = [
    "HttpClient",
    "HttpStatusError",
    "RateLimit",
    "Request",
    "Response",
    "RetryPolicy",
    "parse_retry_after",
    "rate_limit_layer",
    "redact",
]

log = structlog.get_logger(__name__)

# -- request / response ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    source: str  # names the data source in errors and metrics ("fred", "defillama")
    method: str  # "GET" | "POST"
    url: str
    params: Mapping[str, str] | None = None
    json_body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 20.0
    label: str = ""  # metrics "method" (endpoint name); defaults to the URL path
    secrets: tuple[str, ...] = ()  # values scrubbed from every message/log/recording
    idempotent: bool = True  # only idempotent requests are retried
    attempt: int = 0  # set by the retry layer
    expect_json: bool = False  # decode under the retry layer (a body cut short is retried)

    @property
    def metric_name(self) -> str:
        return self.label or urlsplit(self.url).path or "/"

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    @property
    def safe_path(self) -> str:
        """The URL path without query, secrets scrubbed: what error messages name."""
        parts = urlsplit(self.url)
        return self.redact(f"{parts.netloc}{parts.path}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    url: str
    elapsed_s: float = 0.0
    data: Any = None  # the decoded JSON, for requests that expect it

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


Send = Callable[[Request], Awaitable[Response]]
Layer = Callable[[Send], Send]


# -- the one place errors are translated ------------------------------------------------------


def check_status(req: Request, resp: Response) -> Response:
    if 200 <= resp.status < 300:
        return resp
    snip = snippet(resp.body, req.secrets)
    if resp.status == 429:
        ra = parse_retry_after(resp.headers.get("retry-after"))
        raise RateLimited(
            req.source,
            f"HTTP 429 from {req.safe_path}"
            + (f" (Retry-After {ra:g}s)" if ra is not None else ""),
            retry_after=ra,
        )
    raise HttpStatusError(
        req.source,
        f"HTTP {resp.status} from {req.safe_path}: {snip}",
        resp.status,
        redact(resp.body[:4096].decode("utf-8", "replace"), req.secrets),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def decode_json(req: Request, resp: Response) -> Any:
    """Decode a 2xx body. NaN/Infinity are rejected: they are not JSON and would poison floats."""
    try:
        text = resp.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedResponse(req.source, f"body of {req.safe_path} is not UTF-8: {e}") from e
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        truncated = isinstance(e, ValueError) and truncated_json(text, e)
        kind = (
            "an HTML page"
            if resp.content_type == "text/html" or text.lstrip()[:1] == "<"
            else "JSON cut short"
            if truncated
            else "invalid JSON"
        )
        raise MalformedResponse(
            req.source,
            f"{req.safe_path} returned {kind} (HTTP {resp.status}, {len(resp.body)} bytes): "
            f"{e if not isinstance(e, RecursionError) else 'nested too deeply'}; "
            f"body starts {snippet(text, req.secrets, 80)!r}",
            truncated=truncated,
        ) from e


# -- JSON shape helpers (collectors) ---------------------------------------------------------


def expect_dict(source: str, v: object, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise MalformedResponse(source, f"{what}: expected an object, got {type(v).__name__}")
    return v


def expect_list(source: str, v: object, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise MalformedResponse(source, f"{what}: expected an array, got {type(v).__name__}")
    return v


def num(v: object) -> float:
    """A finite float from a JSON number or decimal string; ValueError otherwise (bools rejected:
    ``True`` is an int in Python but never a price)."""
    if isinstance(v, bool) or v is None:
        raise ValueError(f"not a number: {v!r}")
    if isinstance(v, int | float):
        try:
            f = float(v)
        except OverflowError as e:
            raise ValueError(f"number out of range: {v!r}") from e
    elif isinstance(v, str):
        s = v.strip()
        if not s or len(s) > 64:
            raise ValueError(f"not a number: {v[:40]!r}")
        try:
            f = float(s)
        except ValueError as e:
            raise ValueError(f"not a number: {s!r}") from e
    else:
        raise ValueError(f"not a number: {type(v).__name__}")
    if not math.isfinite(f):
        raise ValueError(f"not finite: {v!r}")
    return f


MAX_TS = 10**11  # year ~5138: anything later is garbage, and it keeps ints inside int64/pandas


def unix_s(v: object, *, ms: bool = False) -> int:
    """Integer unix seconds from a JSON number/string (``ms=True`` floors milliseconds)."""
    f = num(v)
    if ms:
        f = f / 1000.0
    if not 0 <= f < MAX_TS:
        raise ValueError(f"timestamp out of range: {v!r}")
    return int(f)


# -- layers ---------------------------------------------------------------------------------


def retry_layer(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> Layer:
    """The shared retry layer (:mod:`agent.core.retry`) around an HTTP send."""
    rand = rng or random.Random()

    def wrap(send: Send) -> Send:
        async def call(req: Request) -> Response:
            return await with_retries(
                lambda n: send(dataclasses.replace(req, attempt=n)),
                policy,
                source=req.source,
                what=req.safe_path,
                idempotent=req.idempotent,
                sleep=sleep,
                rng=rand,
            )

        return call

    return wrap


def json_layer(send: Send) -> Send:
    """Decode the body of requests that expect JSON, inside the retry layer."""

    async def call(req: Request) -> Response:
        resp = await send(req)
        if not req.expect_json:
            return resp
        return dataclasses.replace(resp, data=decode_json(req, resp))

    return call


def metrics_layer(clock: Callable[[], float] = time.perf_counter) -> Layer:
    def wrap(send: Send) -> Send:
        async def call(req: Request) -> Response:
            t0 = clock()
            try:
                resp = await send(req)
            except BaseException:
                METRICS.record(
                    req.source, req.metric_name, clock() - t0, error=True, retry=req.attempt > 0
                )
                raise
            METRICS.record(req.source, req.metric_name, clock() - t0, retry=req.attempt > 0)
            return resp

        return call

    return wrap


@dataclass(frozen=True)
class RateLimit:
    rate_per_s: float  # sustained requests per second
    burst: int = 1


class _TokenBucket:
    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.rate = limit.rate_per_s
        self.capacity = float(max(1, limit.burst))
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self.lock = asyncio.Lock()

    async def take(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        async with self.lock:  # FIFO-ish: waiters queue on the lock, not busy-spin
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await sleep((1.0 - self.tokens) / self.rate)


def rate_limit_layer(
    limits: Mapping[str, RateLimit],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Layer:
    buckets: dict[str, _TokenBucket] = {}

    def wrap(send: Send) -> Send:
        async def call(req: Request) -> Response:
            limit = limits.get(req.source)
            if limit is not None and limit.rate_per_s > 0:
                bucket = buckets.get(req.source)
                if bucket is None:
                    bucket = buckets[req.source] = _TokenBucket(limit, clock)
                await bucket.take(sleep)
            return await send(req)

        return call

    return wrap


def recording_layer(path: Path, *, max_body_chars: int = 1_000_000) -> Layer:
    """Append every exchange (redacted) to a JSONL file: fixtures for tests, evidence for audits."""

    def write(entry: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def wrap(send: Send) -> Send:
        async def call(req: Request) -> Response:
            entry: dict[str, Any] = {
                "at": int(time.time()),
                "source": req.source,
                "method": req.method,
                "url": req.redact(req.url),
                "params": redact_value(dict(req.params or {}), req.secrets),
                "json": redact_value(req.json_body, req.secrets),
            }
            try:
                resp = await send(req)
            except SourceError as e:
                entry["error"] = str(e)
                with contextlib.suppress(OSError):
                    write(entry)
                raise
            entry["status"] = resp.status
            entry["body"] = redact(
                resp.body.decode("utf-8", "replace")[:max_body_chars], req.secrets
            )
            # A short synchronous append: recording is a debugging aid, and must never break collection.
            with contextlib.suppress(OSError):
                write(entry)
            return resp

        return call

    return wrap


# -- transport and client --------------------------------------------------------------------


def bare_session(timeout_s: float) -> aiohttp.ClientSession:
    """A bare aiohttp session for exchanges whose answers are passed on or judged as they come,
    without this module's retries, rate limits or decoding: reachability probes (one request
    each) and the fork relay's forwarding (the upstream's status and body go back to the fork
    unchanged; the relay rotates the chain's pool itself). The caller closes it."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))


class HttpClient:
    """One aiohttp session shared by every collector. Create it inside the running loop, use it as
    ``async with HttpClient(...) as http:`` (or call ``close()``)."""

    def __init__(
        self,
        *,
        timeout_s: float = 20.0,
        retry: RetryPolicy | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        record_path: Path | None = None,
        user_agent: str = "defi-hedge-agent/0.1",
        max_body_bytes: int = 64 * 1024 * 1024,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        extra_layers: Sequence[Layer] = (),
    ) -> None:
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self.user_agent = user_agent
        self._session = session
        self._owns_session = session is None
        send: Send = self._transport
        if record_path is not None:
            send = recording_layer(record_path)(send)
        for layer in extra_layers:
            send = layer(send)
        send = rate_limit_layer(rate_limits or {}, sleep=sleep)(send)
        send = json_layer(send)
        send = metrics_layer()(send)
        send = retry_layer(retry or RetryPolicy(), sleep=sleep, rng=rng)(send)
        self._send = send

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": self.user_agent})
            self._owns_session = True
        return self._session

    async def _transport(self, req: Request) -> Response:
        t0 = time.perf_counter()
        try:
            async with self.session().request(
                req.method,
                req.url,
                params=dict(req.params) if req.params else None,
                json=req.json_body if req.method != "GET" else None,
                headers=dict(req.headers),
                timeout=aiohttp.ClientTimeout(total=req.timeout_s),
                allow_redirects=True,
            ) as r:
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise MalformedResponse(
                            req.source,
                            f"{req.safe_path}: body larger than {self.max_body_bytes} bytes",
                        )
                    chunks.append(chunk)
                resp = Response(
                    status=r.status,
                    headers={k.lower(): v for k, v in r.headers.items()},
                    body=b"".join(chunks),
                    url=req.redact(str(r.url)),
                    elapsed_s=time.perf_counter() - t0,
                )
        except TimeoutError as e:
            raise TransportError(
                req.source, f"timeout after {req.timeout_s:g}s on {req.safe_path}"
            ) from e
        except aiohttp.InvalidURL as e:
            raise SourceError(req.source, f"invalid URL {req.redact(str(e))}") from e
        except aiohttp.ClientError as e:
            # aiohttp messages may include the full URL with query: scrub it.
            raise TransportError(
                req.source, f"{type(e).__name__} on {req.safe_path}: {req.redact(str(e))}"
            ) from e
        return check_status(req, resp)

    async def request(self, req: Request) -> Response:
        return await self._send(req)

    async def _json(self, req: Request) -> Any:
        resp = await self._send(dataclasses.replace(req, expect_json=True))
        return resp.data

    async def get_json(
        self,
        source: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        label: str = "",
        secrets: Sequence[str] = (),
    ) -> Any:
        return await self._json(
            Request(
                source=source,
                method="GET",
                url=url,
                params=params,
                headers={"Accept": "application/json", **(headers or {})},
                timeout_s=timeout_s or self.timeout_s,
                label=label,
                secrets=tuple(secrets),
            )
        )

    async def post_json(
        self,
        source: str,
        url: str,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        label: str = "",
        secrets: Sequence[str] = (),
        idempotent: bool = True,
    ) -> Any:
        """POST a JSON body. Read-only APIs (Hyperliquid info, BLS, GraphQL queries) are idempotent
        and retried; pass ``idempotent=False`` for writes."""
        return await self._json(
            Request(
                source=source,
                method="POST",
                url=url,
                json_body=body,
                headers={"Accept": "application/json", **(headers or {})},
                timeout_s=timeout_s or self.timeout_s,
                label=label,
                secrets=tuple(secrets),
                idempotent=idempotent,
            )
        )
