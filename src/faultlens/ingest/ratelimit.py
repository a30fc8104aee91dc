"""Per-key and per-project rate limits for ingestion, as token buckets in memory.

This is the embedded adapter: limits hold per process. Several ``faultlens serve``
processes share limits only through the Redis adapter.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from faultlens.config import RateLimits


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Limited:
    """A refusal: how long to wait and which scope ran out."""

    retry_after: int
    scope: str

    def header(self) -> str:
        """The ``X-Sentry-Rate-Limits`` value: all categories, this scope."""
        return f"{self.retry_after}::{self.scope}"


class TokenBuckets:
    """Token buckets by name; thread-safe; the clock is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def take(self, name: str, rate: float, burst: float) -> float:
        """Take one token; return 0 if granted, else seconds until one is free."""
        if rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(burst, now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / rate


class IngestRateLimiter:
    """Applies the configured key and project limits to one envelope."""

    def __init__(
        self, settings: RateLimits, buckets: TokenBuckets | None = None
    ) -> None:
        self._settings = settings
        self._buckets = buckets or TokenBuckets()

    def check(self, public_key: str, project_id: int) -> Limited | None:
        s = self._settings
        wait = self._buckets.take(f"key:{public_key}", s.key_per_second, s.key_burst)
        if wait:
            return Limited(max(1, math.ceil(wait)), "key")
        wait = self._buckets.take(
            f"project:{project_id}", s.project_per_second, s.project_burst
        )
        if wait:
            return Limited(max(1, math.ceil(wait)), "project")
        return None
