"""Small immutable records passed between pipeline stages."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Observation:
    """One normalised data point.

    ``ts`` is the time the value refers to (unix seconds, UTC). ``known_at`` is when it became
    known to the world (a macro print's release time); ``None`` means known at ``ts``. Signals
    must only use observations with ``known_at or ts`` at or before their evaluation time.
    """

    key: str  # e.g. "tvl.aave-v3.ethereum.usd", "macro.cpi.index"
    ts: int
    value: float
    unit: str  # e.g. "usd", "apr", "apy", "index", "usd_per_eth", "bps"
    source: str  # e.g. "onchain:devnet:multicall", "defillama:/protocol/aave-v3", "scenario:stress"
    known_at: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.value, float) or math.isnan(self.value) or math.isinf(self.value):
            raise ValueError(
                f"{self.source}: {self.key} value is not a finite float: {self.value!r}"
            )

    @property
    def available_at(self) -> int:
        return self.ts if self.known_at is None else self.known_at
