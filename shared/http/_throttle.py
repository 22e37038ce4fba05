"""Per-tenant request rate limits, per instance: a token bucket for each tenant, so one noisy
tenant cannot starve the others. THROTTLE_REQUESTS_PER_MINUTE, off when 0."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["TenantThrottle"]


class TenantThrottle:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, tenant: str) -> int | None:
        """None when the request may go ahead (a token is taken); else seconds to wait."""
        if self.per_minute <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[tenant] = (tokens - 1.0, now)
                return None
            self._buckets[tenant] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._rate))
