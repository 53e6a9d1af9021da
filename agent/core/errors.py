"""The agent's exception tree. Library errors (aiohttp, eth_abi, sqlite3, pydantic) are translated
into these in one place per boundary, so callers catch ours and messages name the source.

    BaseException
    ├── Halt                    stop the daemon on purpose (error budget spent, unsafe state)
    │   └── LiveRefused         live sending refused (``agent.sinks.live``)
    └── Exception
        └── AgentError          see below

``Halt`` stands outside ``AgentError`` and ``Exception``, beside ``SystemExit``: the sites that
catch ``AgentError`` (a source failed, a plan could not be drafted: log it and go on) or
``Exception`` (one source must never stop the others) cannot swallow a deliberate stop. Only
the tick loop, the daemon's ``run`` and the command line name it.

    AgentError                  base; ``str(e)`` is a one-line message fit for an operator
    ├── ConfigError             a config file or value is wrong (names the file/key)
    ├── SourceError             a data source failed or answered nonsense (``source`` names it)
    │   ├── TransportError      connection refused, DNS, timeout
    │   │   └── RateLimited     HTTP 429 / JSON-RPC capacity errors (``retry_after`` seconds)
    │   ├── HttpStatusError     a non-2xx answer that is not a rate limit (``status``, ``body``)
    │   ├── MalformedResponse   unparseable, wrong shape, NaN/negative where impossible
    │   ├── StaleData           an oracle answer older than its heartbeat
    │   └── WrongChain          the RPC's chain id differs from configuration
    ├── RpcError                a JSON-RPC error object (``code``, ``data``)
    │   └── ExecutionReverted   eth_call / transaction reverted (``reason`` decoded when possible)
    ├── StoreError              the observation store failed
    ├── PlanningError           a decision cannot be turned into transactions
    ├── SimulationError         the fork could not be started or driven
    └── DevnetError             the local devnet is not up / could not be deployed
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    pass


class SourceError(AgentError):
    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class TransportError(SourceError):
    pass


class RateLimited(TransportError):
    def __init__(self, source: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(source, message)
        self.retry_after = retry_after


class HttpStatusError(SourceError):
    """A non-2xx answer that is not a rate limit. ``body`` keeps a bounded, redacted copy so a
    collector can turn a vendor's error JSON into a precise message (FRED's ``error_message``)."""

    def __init__(self, source: str, message: str, status: int, body: str) -> None:
        super().__init__(source, message)
        self.status = status
        self.body = body


class MalformedResponse(SourceError):
    """``truncated``: the body ended mid-value (a connection cut short), worth another try."""

    def __init__(self, source: str, message: str, *, truncated: bool = False) -> None:
        super().__init__(source, message)
        self.truncated = truncated


class StaleData(SourceError):
    pass


class WrongChain(SourceError):
    pass


class RpcError(AgentError):
    def __init__(self, source: str, code: int, message: str, data: object = None) -> None:
        super().__init__(f"{source}: JSON-RPC error {code}: {message}")
        self.source = source
        self.code = code
        self.rpc_message = message
        self.data = data


class ExecutionReverted(RpcError):
    def __init__(
        self, source: str, code: int, message: str, data: object = None, reason: str | None = None
    ) -> None:
        super().__init__(source, code, message, data)
        self.reason = reason


class StoreError(AgentError):
    pass


class PlanningError(AgentError):
    pass


class SimulationError(AgentError):
    pass


class DevnetError(AgentError):
    pass


class Halt(BaseException):  # a stop, like SystemExit, not an error
    """Raised to stop the daemon on purpose; the runner still runs shutdown. ``str(e)`` is
    the one-line reason."""
