"""An error storm: the in-process rate limit holds reports back and counts them."""

from __future__ import annotations

import math
import time

import sentry_sdk
from faultlens.testing import LiveServer

from faultlens_sdk import ErrorRateLimit
from tests.conftest import InitSdk

BURST, PER_SECOND = 5, 1.0


def fail() -> None:
    raise ConnectionError("pharmacy gateway refused the connection")


def capture_one() -> str | None:
    try:
        fail()
    except ConnectionError as exc:
        return sentry_sdk.capture_exception(exc)
    raise AssertionError("unreachable")


def test_ten_thousand_identical_errors_send_at_most_the_configured_number(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk(
        rate_limit=ErrorRateLimit(burst=BURST, per_second=PER_SECOND, global_burst=1000)
    )
    start = time.monotonic()
    sent = [event_id for _ in range(10_000) if (event_id := capture_one())]
    elapsed = time.monotonic() - start

    # What the bucket allows in that time, and no more.
    allowed = BURST + math.floor(elapsed * PER_SECOND)
    assert BURST <= len(sent) <= allowed
    held_back = 10_000 - len(sent)

    # Once the bucket refills, the next report carries the count held back since
    # the last one sent; together the sent reports account for every one held back.
    time.sleep(1.0 / PER_SECOND + 0.1)
    after = capture_one()
    assert after is not None
    sentry_sdk.flush(10)
    stored = [server.wait_event(event_id) for event_id in [*sent, after]]
    reported = sum(
        e.get("contexts", {}).get("rate_limit", {}).get("suppressed", 0) for e in stored
    )
    assert reported == held_back
    assert held_back > 9000

    # The client report reaches the server too: nothing vanished unaccounted.
    deadline = time.monotonic() + 20
    with server.api() as api:
        while True:
            stats = api.get(f"/api/v1/projects/{server.project_id}/stats").json()
            counted = stats["counters"].get("client_discard.error.before_send", 0)
            if counted >= held_back or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert counted == held_back
    assert stats["events_stored"] == len(sent) + 1


def test_the_global_cap_holds_back_different_errors_too(init_sdk: InitSdk) -> None:
    init_sdk(rate_limit=ErrorRateLimit(burst=100, global_burst=3, global_per_second=0))
    sent = []
    for i in range(20):
        try:
            raise ValueError(f"distinct failure {i}")
        except ValueError as exc:
            # Each from its own line would be a new fingerprint; the type and
            # frame are the same here, so give each its own fingerprint.
            with sentry_sdk.new_scope() as scope:
                scope.fingerprint = [f"failure-{i}"]
                sent.append(sentry_sdk.capture_exception(exc))
    assert sum(1 for s in sent if s) == 3
