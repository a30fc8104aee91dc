"""Real SDK envelopes for the ingestion benchmark, each request with a fresh event id.

The envelopes come from the real ``sentry-sdk``: it runs in this process against a
transport that keeps each serialized envelope instead of sending it. The SDK gzips
its bodies at level 9 when ``brotli`` is absent, and a benchmark must send a new
event id on every request so that the server cannot deduplicate the load away.

Compressing 20 KB at level 9 costs about a quarter of a millisecond, more than
the load generator may spend on a request. So each template is compressed once, in
pieces split around the event id; each piece is a run of raw deflate blocks that
ends on a byte boundary. Per request the id is written between the pieces as a
32-byte *stored* (uncompressed) deflate block, and only the gzip trailer is
computed, its CRC-32 from tables (see ``_CrcStep``). The result is one valid gzip
member that any gzip decoder reads, within a few percent of a level-9 gzip of the
same text, built in a few microseconds.
"""

from __future__ import annotations

import gzip
import logging
import random
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

EVENT_ID_LENGTH = 32
#: gzip header: magic, deflate, no flags, no mtime, "max compression", unknown OS.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
#: A non-final stored block of exactly one event id, starting on a byte boundary.
_STORED_ID_HEADER = b"\x00" + struct.pack(
    "<HH", EVENT_ID_LENGTH, 0xFFFF ^ EVENT_ID_LENGTH
)
#: Stands for an event id in compression history; see ``_deflate_piece``.
_NEVER_MATCHED = b"\x00" * EVENT_ID_LENGTH
_WINDOW = 32 * 1024
_MAX_TEMPLATES = 64
_MAX_TARGET_SIZE = 1_000_000
#: Public key and project the SDK is pointed at; nothing listens on port 1.
_CAPTURE_DSN = "http://benchkey@127.0.0.1:1/1"

log = logging.getLogger("bench.checkout")


@dataclass(frozen=True)
class _CrcStep:
    """``zlib.crc32(piece, crc)`` as a function of ``crc``, without reading ``piece``.

    CRC-32 is affine over GF(2): continuing a CRC across a fixed piece maps the
    previous value through a 32x32 bit matrix and XORs a constant. The matrix is
    kept as four 256-entry tables, one per byte of the previous value, so a step
    costs four lookups instead of a pass over 20 KB.
    """

    tables: tuple[tuple[int, ...], ...]
    constant: int

    @classmethod
    def over(cls, piece: bytes) -> _CrcStep:
        constant = zlib.crc32(piece, 0)
        columns = [zlib.crc32(piece, 1 << bit) ^ constant for bit in range(32)]
        tables = tuple(
            tuple(_xor_columns(columns[8 * k : 8 * k + 8], byte) for byte in range(256))
            for k in range(4)
        )
        return cls(tables=tables, constant=constant)

    def __call__(self, crc: int) -> int:
        t0, t1, t2, t3 = self.tables
        return (
            t0[crc & 0xFF]
            ^ t1[(crc >> 8) & 0xFF]
            ^ t2[(crc >> 16) & 0xFF]
            ^ t3[crc >> 24]
            ^ self.constant
        )


def _xor_columns(columns: list[int], byte: int) -> int:
    result = 0
    for bit, column in enumerate(columns):
        if byte >> bit & 1:
            result ^= column
    return result


@dataclass(frozen=True)
class GzipTemplate:
    """A captured envelope, pre-compressed around the places its event id goes."""

    plain: tuple[bytes, ...]
    deflated: tuple[bytes, ...]
    crc_of_first: int
    #: One per piece after the first: carries the CRC across that piece.
    crc_steps: tuple[_CrcStep, ...]
    uncompressed_size: int

    @classmethod
    def from_envelope(cls, envelope: bytes, event_id: str) -> GzipTemplate:
        plain = tuple(envelope.split(event_id.encode("ascii")))
        if len(plain) < 2:
            raise ValueError(
                f"expected event id {event_id} inside the captured envelope, found "
                "none; capture the envelope and its id from the same event"
            )
        deflated = []
        history = b""
        for i, piece in enumerate(plain):
            deflated.append(_deflate_piece(piece, history, last=i == len(plain) - 1))
            history += piece + _NEVER_MATCHED
        return cls(
            plain=plain,
            deflated=tuple(deflated),
            crc_of_first=zlib.crc32(plain[0]),
            crc_steps=tuple(_CrcStep.over(piece) for piece in plain[1:]),
            uncompressed_size=len(envelope),
        )

    @property
    def compressed_size(self) -> int:
        ids = (len(_STORED_ID_HEADER) + EVENT_ID_LENGTH) * (len(self.plain) - 1)
        return len(_GZIP_HEADER) + sum(map(len, self.deflated)) + ids + 8

    def body(self, event_id: bytes) -> bytes:
        """The gzip body of this envelope with ``event_id`` (32 hex bytes) in it."""
        if len(event_id) != EVENT_ID_LENGTH:
            raise ValueError(
                f"expected a {EVENT_ID_LENGTH}-character hex event id, got "
                f"{len(event_id)} characters; pass uuid4().hex encoded as ASCII"
            )
        chunks = [_GZIP_HEADER, self.deflated[0]]
        crc = self.crc_of_first
        stored_id = _STORED_ID_HEADER + event_id
        for step, deflated in zip(self.crc_steps, self.deflated[1:], strict=True):
            chunks += (stored_id, deflated)
            crc = step(zlib.crc32(event_id, crc))
        chunks.append(struct.pack("<II", crc, self.uncompressed_size & 0xFFFFFFFF))
        return b"".join(chunks)

    def plain_body(self, event_id: bytes) -> bytes:
        """The uncompressed envelope with ``event_id``; used to check ``body``."""
        return event_id.join(self.plain)


def _deflate_piece(piece: bytes, history: bytes, *, last: bool) -> bytes:
    # The text before the piece is a preset dictionary, so back-references reach
    # it as they would in one stream; the ids in it are NUL bytes, which JSON
    # never contains, so no reference can copy a stale id. A sync flush ends the
    # piece on a byte boundary.
    if history:
        compressor = zlib.compressobj(
            9, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=history[-_WINDOW:]
        )
    else:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(piece)
    return head + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def verify(template: GzipTemplate, event_id: bytes) -> None:
    """Check that a spliced body decompresses to the envelope, or raise."""
    expected = template.plain_body(event_id)
    body = template.body(event_id)
    streamed = zlib.decompressobj(16 + zlib.MAX_WBITS)
    got = streamed.decompress(body) + streamed.flush()
    if got != expected or gzip.decompress(body) != expected or streamed.unused_data:
        raise AssertionError(
            "a spliced gzip body does not decompress to its envelope; the deflate "
            "pieces or the stored-block header are malformed"
        )


class _KeepingTransport(Transport):
    """Keeps serialized envelopes instead of sending them anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


class PaymentDeclinedError(Exception):
    """An application error with a domain message, like real services raise."""


def capture_templates(count: int, target_size: int) -> list[GzipTemplate]:
    """Capture ``count`` error envelopes of about ``target_size`` bytes each."""
    if not 1 <= count <= _MAX_TEMPLATES:
        raise ValueError(f"expected 1..{_MAX_TEMPLATES} templates, got {count}")
    if not 4_000 <= target_size <= _MAX_TARGET_SIZE:
        raise ValueError(
            f"expected an envelope size of 4000..{_MAX_TARGET_SIZE} bytes, "
            f"got {target_size}; the SDK's own event is already about 4 KB"
        )
    transport = _KeepingTransport()
    log.setLevel(logging.INFO)  # so the SDK's logging integration sees breadcrumbs
    sentry_sdk.init(
        dsn=_CAPTURE_DSN,
        transport=transport,
        release="bench-app@1.4.2",
        environment="production",
        server_name="bench-host-1",
        max_breadcrumbs=100,
    )
    try:
        templates = [
            _capture_one(transport, kind, target_size) for kind in range(count)
        ]
    finally:
        sentry_sdk.get_client().close()
    return templates


def _capture_one(
    transport: _KeepingTransport, kind: int, target_size: int
) -> GzipTemplate:
    # Capture once to learn the SDK's own size for this error, then again with a
    # request payload sized to reach the target; a third pass corrects for the
    # JSON escaping of that payload.
    padding = 0
    for _ in range(3):
        transport.envelopes.clear()
        # A fresh isolation scope: breadcrumbs must not pile up across captures.
        with sentry_sdk.isolation_scope() as scope:
            event_id = _raise_and_capture(scope, kind, padding)
        envelope = transport.envelopes[-1].serialize()
        padding = max(0, padding + target_size - len(envelope))
    if event_id is None:
        raise RuntimeError("the SDK dropped the benchmark event; check its options")
    return GzipTemplate.from_envelope(envelope, event_id)


def _raise_and_capture(scope: Any, kind: int, padding: int) -> str | None:
    rng = random.Random(kind)
    scope.set_user({"id": f"user-{rng.randrange(10_000)}"})
    scope.set_tag("tenant", f"clinic-{rng.randrange(100)}")
    scope.set_tag("endpoint", ("checkout", "claims", "intake", "billing")[kind % 4])
    scope.set_context("order", {"items": rng.randrange(1, 9), "currency": "EUR"})
    scope.set_extra("request_body", _payload_text(rng, padding))
    for step in range(20):
        sentry_sdk.add_breadcrumb(
            category="http",
            message=f"GET /api/v2/patients/{rng.randrange(10**6)}/visits",
            data={"status_code": 200, "duration_ms": rng.randrange(3, 400)},
        )
        if step % 2:
            log.info("step %d of checkout for cart %s", step, rng.randrange(10**9))
    try:
        _descend(depth=6 + kind % 5, kind=kind, cart={"lines": list(range(8))})
    except Exception:
        return sentry_sdk.capture_exception()
    raise RuntimeError("the benchmark error path did not raise")


def _descend(depth: int, kind: int, cart: dict[str, list[int]]) -> None:
    attempt = {"depth": depth, "kind": kind, "lines": len(cart["lines"])}
    if depth > 0:
        _descend(depth - 1, kind, cart)
        return
    if kind % 4 == 0:
        print(attempt["lines"] / (attempt["depth"]))
    elif kind % 4 == 1:
        print(cart["missing-discount-code"])
    elif kind % 4 == 2:
        try:
            int(f"{attempt['kind']}x")
        except ValueError as exc:
            raise PaymentDeclinedError("card declined after retry") from exc
    raise LookupError(f"no tariff for plan {kind}")


def _payload_text(rng: random.Random, size: int) -> str:
    # Order-like JSON text: compresses like real request bodies, not like zeros.
    parts: list[str] = []
    total = 0
    while total < size:
        line = (
            f'{{"sku":"SKU-{rng.randrange(10**6):06d}","qty":{rng.randrange(1, 5)},'
            f'"price":{rng.randrange(100, 99999) / 100},"note":"{rng.random():.6f}"}},'
        )
        parts.append(line)
        total += len(line)
    return "".join(parts)[:size]
