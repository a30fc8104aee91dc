"""Tests of event processing, and the helpers they share."""

from __future__ import annotations

from typing import Any

import pytest

from faultlens.config import Limits
from faultlens.ingest.envelope import parse_envelope, parse_json_payload
from faultlens.processing.normalize import normalize_event, parse_timestamp
from tests.conftest import samples_dir
from tests.strategies import sample_envelopes

CLIENT_IP = "203.0.113.7"


def sample_event(prefix: str) -> tuple[str, dict[str, Any]]:
    """The envelope event id and event payload of the real SDK capture ``prefix``.

    Skips the test when the captures are not beside the repository.
    """
    names = [name for name in sample_envelopes() if name.startswith(prefix + "-")]
    if len(names) != 1:
        pytest.skip(f"SDK capture {prefix!r} not found in {samples_dir()}")
    envelope = parse_envelope(sample_envelopes()[names[0]], Limits())
    item = next(item for item in envelope.items if item.type == "event")
    assert envelope.event_id is not None
    return envelope.event_id, parse_json_payload(item.payload, Limits(), "event")


def normalized_sample(prefix: str) -> dict[str, Any]:
    """A capture's event, normalised as if received a second after it was sent."""
    event_id, raw = sample_event(prefix)
    sent = parse_timestamp(raw.get("timestamp"))
    assert sent is not None
    return normalize_event(
        raw,
        event_id=event_id,
        received_at=sent + 1,
        client_ip=CLIENT_IP,
        limits=Limits(),
    )
