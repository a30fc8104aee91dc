"""Envelopes made by the real ``sentry-sdk``, for tests that need raw request bodies.

The SDK runs in a child process so its global client never leaks into the test
process; a transport there keeps each serialized envelope and prints it. The DSN
is the one the shared SDK captures were taken with, so the same rewriting applies.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import uuid

__all__ = [
    "capture_handled_exception",
    "capture_message_warning",
    "with_fresh_event_id",
]

_SETUP = """
import sys
import sentry_sdk
from sentry_sdk.transport import Transport

class Keep(Transport):
    def capture_envelope(self, envelope):
        sys.stdout.buffer.write(envelope.serialize())

sentry_sdk.init(
    dsn="http://publickey@127.0.0.1:8765/43",
    transport=Keep,
    release="shop@1.4.2",
    environment="production",
)
"""

_HANDLED_EXCEPTION = """
def checkout(order):
    return order["total"] / order["items"]

try:
    checkout({"total": 10, "items": 0})
except ZeroDivisionError:
    sentry_sdk.capture_exception()
"""

_MESSAGE_WARNING = """
sentry_sdk.capture_message("stock is low for sku 4417", level="warning")
"""


@functools.cache
def capture_handled_exception() -> bytes:
    """The uncompressed envelope of one handled ``ZeroDivisionError``."""
    return _capture(_HANDLED_EXCEPTION)


@functools.cache
def capture_message_warning() -> bytes:
    """The uncompressed envelope of one ``capture_message`` at warning level."""
    return _capture(_MESSAGE_WARNING)


def with_fresh_event_id(envelope: bytes) -> tuple[str, bytes]:
    """A new event id, and ``envelope`` with it in its header and its event alike."""
    old = envelope.split(b'"event_id":"', 1)[1][:32]
    new = uuid.uuid4().hex
    return new, envelope.replace(old, new.encode())


def _capture(scenario: str) -> bytes:
    script = textwrap.dedent(_SETUP) + textwrap.dedent(scenario)
    script += "\nsentry_sdk.flush()\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, check=True, timeout=60
    )
    if b'"type":"event"' not in done.stdout:
        raise RuntimeError(f"sentry-sdk produced no event: {done.stderr.decode()}")
    return done.stdout
