"""In-process rate limiting of reports, so an error storm cannot flood the server.

Each report gets a fingerprint (its ``fingerprint`` if the application set one, else
the error code, exception type and innermost in-app frame, or the logger and message
template of a log event). A token bucket per fingerprint lets a burst through, then a
steady trickle; a global bucket caps all reports together.

Nothing is silently lost: a suppressed report is counted twice over. The sentry-sdk
client records it as a lost event (reason ``before_send``), which goes to the server
in the next client report; and the next report of the same fingerprint that is sent
carries ``contexts.rate_limit.suppressed``, the number held back since the last one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorRateLimit:
    """Limits for reports; the defaults let 10 of a kind through, then 1 per 5 s."""

    burst: int = 10
    per_second: float = 0.2
    global_burst: int = 100
    global_per_second: float = 5.0
    max_fingerprints: int = 5000

    def __post_init__(self) -> None:
        if self.burst < 1 or self.global_burst < 1 or self.max_fingerprints < 1:
            raise ValueError("bursts and max_fingerprints must be at least 1")
        if self.per_second < 0 or self.global_per_second < 0:
            raise ValueError("rates must not be negative")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0

    def take(self, now: float, capacity: int, rate: float) -> bool:
        self.tokens = min(capacity, self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ReportLimiter:
    """Decides, per report, whether it is sent; thread-safe."""

    def __init__(self, limits: ErrorRateLimit) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._global = _Bucket(limits.global_burst, time.monotonic())
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def admit(self, fingerprint: str) -> tuple[bool, int]:
        """Whether to send, and how many of this fingerprint were held back before."""
        limits = self.limits
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(fingerprint)
            if bucket is None:
                bucket = _Bucket(limits.burst, now)
                self._buckets[fingerprint] = bucket
                if len(self._buckets) > limits.max_fingerprints:
                    # The oldest fingerprint's pending count is dropped from the
                    # context; its reports were still counted as lost events.
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(fingerprint)
            allowed = bucket.take(now, limits.burst, limits.per_second)
            if allowed and not self._global.take(
                now, limits.global_burst, limits.global_per_second
            ):
                # The per-fingerprint token is returned: the global cap, not this
                # fingerprint, held the report back.
                bucket.tokens += 1
                allowed = False
            if not allowed:
                bucket.suppressed += 1
                return False, 0
            held_back, bucket.suppressed = bucket.suppressed, 0
            return True, held_back

    def before_send(
        self, event: dict[str, Any], hint: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A ``before_send`` hook: ``None`` suppresses the report."""
        allowed, held_back = self.admit(fingerprint_of(event))
        if not allowed:
            return None
        if held_back:
            contexts = event.setdefault("contexts", {})
            contexts["rate_limit"] = {"suppressed": held_back}
        return event


def fingerprint_of(event: dict[str, Any]) -> str:
    """A cheap, stable key for "the same failure" in this process."""
    custom = event.get("fingerprint")
    if custom and custom != ["{{ default }}"]:
        return "fp:" + "|".join(map(str, custom))
    tags = event.get("tags") or {}
    code = tags.get("error.code", "")
    values = (event.get("exception") or {}).get("values") or []
    if values:
        last = values[-1]
        frames = (last.get("stacktrace") or {}).get("frames") or []
        in_app = [f for f in frames if f.get("in_app")] or frames
        where = ""
        if in_app:
            top = in_app[-1]
            where = f"{top.get('module') or top.get('filename')}:{top.get('function')}"
        return f"exc:{code}:{last.get('type')}:{where}"
    logentry = event.get("logentry") or {}
    template = logentry.get("message") or event.get("message") or ""
    return f"log:{code}:{event.get('logger', '')}:{template}"
