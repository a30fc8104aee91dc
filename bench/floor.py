"""The least CPU any Python server must spend to meet the ingestion targets.

The targets ask the server to accept a share of the minimal app's rate and to
process a smaller share, on the machine the generator also runs on. Some of that
work no design can skip, whatever it does besides. For each accepted envelope: the
HTTP handling the minimal app itself pays, the generator's own cost per request,
inflating the body and reading the envelope and item headers to check framing and
sizes, parsing the event's JSON (the protocol answers malformed JSON with a 400,
so it is checked before the answer), one durable insert. For each processed event:
serialising it again after normalising, compressing it (stored raw, a 20 KB event
breaks the disk target on its own) and one insert. The JSON is counted once, as
if processing could reuse the door's parse, which a worker in another process
cannot; and what the server does beyond these steps (timestamps, grouping, issue
counters, the event loop's hand-offs) is left out. So the sum is a floor, generous
to the server. Each step is timed on the benchmark's own envelopes, in this
process, with the fastest calls the server's dependencies offer, over a few hundred
distinct envelopes so that caches help no more than they help a server.

If the floor alone needs more cores than the machine has, the targets are out of
reach on it for any implementation that does these steps in Python; the report
says so beside the measured rates.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson
import zstandard

from envelopes import GzipTemplate
from faultlens.storage.sqlite.store import COMPRESSION_LEVEL

#: Distinct bodies per template: the steps run over more data than the CPU caches
#: hold, as a server meets it, rather than over one hot buffer.
_COPIES = 64
#: Timed calls per step and repeat; the best repeat counts, as the floor.
_CALLS = 512
_REPEATS = 3
#: Envelopes per transaction in the insert steps, near what group commit reaches
#: at 32 clients.
_BATCH = 32


@dataclass(frozen=True)
class StepCosts:
    """CPU microseconds per call of each unavoidable step."""

    inflate: float
    frame: float
    inbox_insert: float
    parse_event: float
    serialise_event: float
    compress_event: float
    store_insert: float

    def door(self) -> float:
        """What accepting one envelope costs beyond HTTP and the generator."""
        return self.inflate + self.frame + self.parse_event + self.inbox_insert

    def processing(self) -> float:
        return self.serialise_event + self.compress_event + self.store_insert


@dataclass(frozen=True)
class Floor:
    """The floor at one level, from step costs and the minimal app's run there."""

    steps: StepCosts
    #: CPU microseconds per request of the generator and of the minimal app.
    generator: float
    http: float
    accepted_per_second: float
    processed_per_second: float
    cores: int

    def cores_needed(self) -> float:
        accept = self.generator + self.http + self.steps.door()
        work = self.accepted_per_second * accept
        work += self.processed_per_second * self.steps.processing()
        return work / 1e6

    def reachable(self) -> bool:
        return self.cores_needed() <= self.cores


def measure_steps(templates: Sequence[GzipTemplate]) -> StepCosts:
    """Time each step on the templates' bodies; CPU time of this thread only."""
    bodies = [
        t.body(uuid.uuid4().hex.encode("ascii"))
        for _ in range(_COPIES)
        for t in templates
    ]
    envelopes = [zlib.decompress(body, wbits=31) for body in bodies]
    events = [_event_payload(envelope) for envelope in envelopes]
    parsed = [orjson.loads(event) for event in events]
    serialised = [orjson.dumps(value) for value in parsed]
    compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
    packed = [compressor.compress(data) for data in serialised]

    with tempfile.TemporaryDirectory(prefix="faultlens-floor-") as tmp:
        return StepCosts(
            inflate=_per_call(bodies, lambda b: zlib.decompress(b, wbits=31)),
            frame=_per_call(envelopes, _item_headers),
            inbox_insert=_insert_cost(Path(tmp) / "inbox.db", bodies),
            parse_event=_per_call(events, orjson.loads),
            serialise_event=_per_call(parsed, orjson.dumps),
            compress_event=_per_call(serialised, compressor.compress),
            store_insert=_insert_cost(Path(tmp) / "store.db", packed),
        )


def _item_headers(envelope: bytes) -> list[dict[str, object]]:
    # The envelope header and each item's: the least a door reads to check sizes.
    end = envelope.find(b"\n")
    headers = [orjson.loads(envelope[:end])]
    while end + 1 < len(envelope):
        start, end = end + 1, envelope.find(b"\n", end + 1)
        end = len(envelope) if end < 0 else end
        header = orjson.loads(envelope[start:end])
        headers.append(header)
        length = header.get("length")
        if isinstance(length, int):
            end = end + 1 + length
        else:
            found = envelope.find(b"\n", end + 1)
            end = len(envelope) if found < 0 else found
    return headers


def _event_payload(envelope: bytes) -> bytes:
    lines = envelope.split(b"\n")
    for header, payload in zip(lines[1::2], lines[2::2], strict=False):
        if orjson.loads(header).get("type") == "event":
            return payload
    raise ValueError("expected an event item in the benchmark envelope, found none")


T = TypeVar("T")


def _per_call(inputs: Sequence[T], step: Callable[[T], object]) -> float:
    best = float("inf")
    for _ in range(_REPEATS):
        started = time.thread_time_ns()
        for i in range(_CALLS):
            step(inputs[i % len(inputs)])
        best = min(best, time.thread_time_ns() - started)
    return best / _CALLS / 1e3


def _insert_cost(path: Path, blobs: Sequence[bytes]) -> float:
    """One row per blob, ``_BATCH`` rows a transaction, WAL with full sync.

    Thread CPU time leaves out the wait for fsync, which costs the disk, not a core.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, received_at REAL NOT NULL,"
        " event_id TEXT NOT NULL, body BLOB NOT NULL)"
    )
    best = float("inf")
    rows = _CALLS - _CALLS % _BATCH
    ids = [uuid.uuid4().hex for _ in range(rows)]
    for _ in range(_REPEATS):
        started = time.thread_time_ns()
        for first in range(0, rows, _BATCH):
            conn.execute("BEGIN")
            for i in range(first, first + _BATCH):
                conn.execute(
                    "INSERT INTO entries (received_at, event_id, body)"
                    " VALUES (?, ?, ?)",
                    (1.0, ids[i], blobs[i % len(blobs)]),
                )
            conn.execute("COMMIT")
        best = min(best, time.thread_time_ns() - started)
    conn.close()
    return best / rows / 1e3


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
