"""Structure-aware fuzzing of the envelope parser with broken envelopes.

Whatever arrives, parse_envelope either returns an Envelope or raises an IngestError
(which becomes a 4xx); any other exception would be a 500, and a parse that does not
finish would hold a worker forever.
"""

import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultlens.config import Limits
from faultlens.ingest.envelope import Envelope, parse_envelope
from faultlens.ingest.errors import IngestError
from tests.strategies import malformed_envelopes, small_limits

#: Far above the milliseconds one parse of these small inputs takes.
PARSE_DEADLINE_SECONDS = 5.0


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"parse_envelope did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_malformed_envelopes_only_ever_raise_ingest_errors() -> None:
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=10_000,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        data=malformed_envelopes(), limits=st.sampled_from([Limits(), small_limits()])
    )
    def parse(data: bytes, limits: Limits) -> None:
        with deadline(PARSE_DEADLINE_SECONDS):
            try:
                result = parse_envelope(data, limits)
            except IngestError as exc:
                outcomes[type(exc).__name__] += 1
                assert exc.detail
            else:
                assert isinstance(result, Envelope)
                outcomes["accepted"] += 1

    parse()

    # The mutations must really break envelopes, and reach both kinds of refusal.
    assert sum(outcomes.values()) >= 10_000
    assert outcomes["BadRequest"] > outcomes["accepted"]
    assert outcomes["PayloadTooLarge"] > 0
