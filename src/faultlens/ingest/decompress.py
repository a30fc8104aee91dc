"""Undo the request's ``Content-Encoding`` without trusting the client about size.

Every decoder here stops as soon as its output passes the caller's limit, so a small
body that inflates to gigabytes costs a few times the limit in memory, not gigabytes,
before it is refused with 413. Corrupt, truncated or trailing data is a 400: a stream is
accepted only when it ends exactly where the body ends.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import brotli
import zstandard

from faultlens.ingest.errors import BadRequest, PayloadTooLarge

_GZIP_WBITS = 31
_ZLIB_WBITS = 15
_RAW_DEFLATE_WBITS = -15
_GZIP_MAGIC = b"\x1f\x8b"

#: Content-Encoding values that mean "not compressed". ``utf-8`` is a bogus value
#: some older SDKs send.
_IDENTITY = frozenset({"", "identity", "utf-8"})

#: A body is decoded through at most this many encodings ("gzip, br"); more layers
#: only multiply the work a client can ask for.
_MAX_LAYERS = 2

#: zstd output is read in pieces this big: the reader allocates each piece up front,
#: so reading ``limit`` bytes at once would cost the whole limit on every request.
_ZSTD_READ_SIZE = 256 * 1024

#: The smallest window a zstd frame may declare (2**10 bytes, the format's minimum).
_ZSTD_MIN_WINDOW = 1 << 10

_Decoder = Callable[[bytes, int, str], bytes]


def decompress(
    body: bytes, encoding: str | None, limit: int, *, item_type: str = "envelope"
) -> bytes:
    """Decode ``body`` as sent with ``Content-Encoding: encoding``.

    Encodings are ``gzip``/``x-gzip``, ``deflate`` (zlib-wrapped, or raw deflate as
    some clients send), ``br`` and ``zstd``; none, ``identity`` and ``UTF-8`` mean the
    body is plain. Stacked encodings (``"gzip, br"``) are undone last-applied first.

    Raises PayloadTooLarge (for ``item_type``) once the output would exceed ``limit``
    bytes, and BadRequest for an unknown encoding or data that does not decode.
    """
    layers = _parse_encoding(encoding)
    data = body
    for name in reversed(layers):
        if not data:
            raise BadRequest(
                f"the body is empty but Content-Encoding says {name}; "
                "send a compressed body or drop the header"
            )
        data = _DECODERS[name](data, limit, item_type)
    if len(data) > limit:
        raise _too_large(limit, item_type)
    return data


def decompress_replay(payload: bytes, limit: int) -> bytes:
    """Decode a replay recording body, which SDKs send zlib-compressed or plain.

    Tries zlib, then gzip, then takes the bytes as they are; only the size limit is
    an error, because a recording that is neither is checked as JSON later.
    """
    item_type = "replay_recording"
    for decoder in (_inflate_zlib, _inflate_gzip):
        try:
            return decoder(payload, limit, item_type)
        except BadRequest:
            continue
    if len(payload) > limit:
        raise _too_large(limit, item_type)
    return payload


def _parse_encoding(encoding: str | None) -> list[str]:
    tokens = (token.strip().lower() for token in (encoding or "").split(","))
    layers = [token for token in tokens if token not in _IDENTITY]
    if len(layers) > _MAX_LAYERS:
        raise BadRequest(
            f"Content-Encoding {(encoding or '')[:64]!r} stacks {len(layers)} "
            "encodings; "
            f"at most {_MAX_LAYERS} are decoded"
        )
    for name in layers:
        if name not in _DECODERS:
            raise BadRequest(
                f"unsupported Content-Encoding {name[:32]!r}; use gzip, deflate, br, "
                "zstd or send the body uncompressed"
            )
    return layers


def _too_large(limit: int, item_type: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the {item_type} decompresses to more than the {limit}-byte limit; "
        "send less data per request",
        item_type=item_type,
    )


def _inflate(data: bytes, wbits: int, limit: int, item_type: str, label: str) -> bytes:
    """Inflate a zlib, gzip or raw deflate stream; gzip may hold several members."""
    parts: list[bytes] = []
    size = 0
    rest = data
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            # One more byte than allowed tells "exactly at the limit" from "over".
            out = decoder.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise BadRequest(f"the body is not valid {label} data ({exc})") from exc
        size += len(out)
        if size > limit:
            raise _too_large(limit, item_type)
        if not decoder.eof:
            raise BadRequest(f"the {label} stream is truncated; send the whole body")
        parts.append(out)

        rest = decoder.unused_data
        if not rest:
            return b"".join(parts)
        if wbits != _GZIP_WBITS or not rest.startswith(_GZIP_MAGIC):
            raise BadRequest(
                f"{len(rest)} bytes follow the end of the {label} stream; "
                "send only the compressed data"
            )


def _inflate_gzip(data: bytes, limit: int, item_type: str) -> bytes:
    return _inflate(data, _GZIP_WBITS, limit, item_type, "gzip")


def _inflate_zlib(data: bytes, limit: int, item_type: str) -> bytes:
    return _inflate(data, _ZLIB_WBITS, limit, item_type, "zlib")


def _inflate_deflate(data: bytes, limit: int, item_type: str) -> bytes:
    # HTTP's "deflate" is zlib-wrapped, but some clients send raw deflate. The two
    # header bytes tell them apart: a raw stream would have to open with a stored
    # block whose padding bits are not zero, which encoders never write.
    is_zlib = (
        len(data) >= 2
        and data[0] & 0x0F == zlib.DEFLATED
        and (data[0] << 8 | data[1]) % 31 == 0
    )
    wbits = _ZLIB_WBITS if is_zlib else _RAW_DEFLATE_WBITS
    return _inflate(data, wbits, limit, item_type, "deflate")


def _decode_brotli(data: bytes, limit: int, item_type: str) -> bytes:
    # output_buffer_limit (brotli >= 1.2) stops the output from growing once it
    # reaches the limit; without it one call could inflate a bomb completely.
    decoder = brotli.Decompressor()
    try:
        out: bytes = decoder.process(data, output_buffer_limit=limit + 1)
    except brotli.error as exc:
        raise BadRequest(f"the body is not valid brotli data ({exc})") from exc
    if len(out) > limit:
        raise _too_large(limit, item_type)
    if not decoder.is_finished():
        raise BadRequest("the brotli stream is truncated; send the whole body")
    return out


def _decode_zstd(data: bytes, limit: int, item_type: str) -> bytes:
    # The stream reader bounds the output but ends quietly on a cut-off frame, and
    # decompressobj notices a cut-off frame but cannot bound its output. Reading with
    # the first proves the output fits, which makes the second safe to run.
    # A frame declares its window, allocated before any output exists; refuse one
    # bigger than all the output we would accept rather than allocate it.
    window = max(limit, _ZSTD_MIN_WINDOW)
    context = zstandard.ZstdDecompressor(max_window_size=window)
    try:
        _check_zstd_size(context, data, limit, item_type)
        return _decode_zstd_frames(context, data)
    except zstandard.ZstdError as exc:
        raise BadRequest(f"the body is not valid zstd data ({exc})") from exc


def _check_zstd_size(
    context: zstandard.ZstdDecompressor, data: bytes, limit: int, item_type: str
) -> None:
    reader = context.stream_reader(data, read_across_frames=True)
    size = 0
    while chunk := reader.read(min(_ZSTD_READ_SIZE, limit - size + 1)):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, item_type)


def _decode_zstd_frames(context: zstandard.ZstdDecompressor, data: bytes) -> bytes:
    parts: list[bytes] = []
    rest = data
    while rest:
        frame = context.decompressobj()
        parts.append(frame.decompress(rest))
        if not frame.eof:
            raise BadRequest("the zstd stream is truncated; send the whole body")
        rest = frame.unused_data
    return b"".join(parts)


_DECODERS: dict[str, _Decoder] = {
    "gzip": _inflate_gzip,
    "x-gzip": _inflate_gzip,
    "deflate": _inflate_deflate,
    "br": _decode_brotli,
    "zstd": _decode_zstd,
}
