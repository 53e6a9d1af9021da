"""Request counters and latency per source, filled by the RPC and HTTP client middleware.

One process-wide registry keeps the numbers the performance work measures (requests per tick,
per source) without threading a metrics object through every call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# (source, method, latency_s, error, retry): what an exporter needs to keep running totals.
Observer = Callable[[str, str, float, bool, bool], None]


@dataclass
class SourceStats:
    requests: int = 0
    errors: int = 0
    retries: int = 0
    total_latency_s: float = 0.0
    methods: dict[str, int] = field(default_factory=dict)

    @property
    def mean_latency_ms(self) -> float:
        return 1000.0 * self.total_latency_s / self.requests if self.requests else 0.0


class Metrics:
    def __init__(self) -> None:
        self.sources: dict[str, SourceStats] = {}
        # Called on every record; the per-tick ``reset`` does not touch them, so a Prometheus
        # exporter keeps totals over the daemon's life while ``tick.done`` logs per-tick counts.
        self.observers: list[Observer] = []

    def record(
        self,
        source: str,
        method: str,
        latency_s: float,
        *,
        error: bool = False,
        retry: bool = False,
    ) -> None:
        st = self.sources.setdefault(source, SourceStats())
        st.requests += 1
        st.total_latency_s += latency_s
        st.methods[method] = st.methods.get(method, 0) + 1
        if error:
            st.errors += 1
        if retry:
            st.retries += 1
        for observer in self.observers:
            observer(source, method, latency_s, error, retry)

    def snapshot(self) -> dict[str, dict[str, float | int]]:
        return {
            name: {
                "requests": st.requests,
                "errors": st.errors,
                "retries": st.retries,
                "mean_latency_ms": round(st.mean_latency_ms, 3),
            }
            for name, st in sorted(self.sources.items())
        }

    def reset(self) -> None:
        self.sources.clear()


METRICS = Metrics()
