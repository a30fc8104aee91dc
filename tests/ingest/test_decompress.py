import contextlib
import functools
import gzip
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from faultlens.ingest.decompress import decompress, decompress_replay
from faultlens.ingest.errors import BadRequest, IngestError, PayloadTooLarge

MiB = 1024 * 1024
DATA = b'{"event_id":"00000000000000000000000000000000"}\n' + bytes(range(256)) * 40


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstd,
}


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_each_encoding_round_trips(encoding: str) -> None:
    body = COMPRESSORS[encoding](DATA)

    assert decompress(body, encoding, len(DATA)) == DATA


def test_deflate_also_accepts_raw_deflate_without_the_zlib_wrapper() -> None:
    assert decompress(raw_deflate(DATA), "deflate", len(DATA)) == DATA


@pytest.mark.parametrize("encoding", [None, "", "identity", "UTF-8", "utf-8", " , "])
def test_identity_and_ignored_values_leave_the_body_alone(encoding: str | None) -> None:
    assert decompress(DATA, encoding, len(DATA)) == DATA


def test_encoding_names_are_case_insensitive() -> None:
    assert decompress(gzip.compress(DATA), "GZip", len(DATA)) == DATA


def test_stacked_encodings_are_undone_in_reverse_order() -> None:
    # "gzip, br": gzip was applied first, so it is undone last.
    body = brotli.compress(gzip.compress(DATA))

    assert decompress(body, "gzip, br", len(DATA)) == DATA


def test_identity_inside_a_stack_is_ignored() -> None:
    assert decompress(gzip.compress(DATA), "identity, gzip", len(DATA)) == DATA


def test_more_than_two_stacked_encodings_are_refused() -> None:
    body = gzip.compress(gzip.compress(gzip.compress(DATA)))

    with pytest.raises(BadRequest, match="stacks 3 encodings"):
        decompress(body, "gzip, gzip, gzip", MiB)


@pytest.mark.parametrize("encoding", ["compress", "lz4", "gzip;q=1", "br, snappy"])
def test_an_unknown_encoding_is_a_bad_request(encoding: str) -> None:
    with pytest.raises(BadRequest, match="unsupported Content-Encoding"):
        decompress(DATA, encoding, MiB)


def test_concatenated_gzip_members_are_all_decoded() -> None:
    body = gzip.compress(b"first|") + gzip.compress(b"second")

    assert decompress(body, "gzip", 100) == b"first|second"


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_trailing_garbage_after_a_stream_is_a_bad_request(encoding: str) -> None:
    body = COMPRESSORS[encoding](DATA) + b"garbage"

    with pytest.raises(BadRequest):
        decompress(body, encoding, MiB)


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_a_truncated_stream_is_a_bad_request(encoding: str) -> None:
    body = COMPRESSORS[encoding](DATA)

    with pytest.raises(BadRequest):
        decompress(body[: len(body) - 8], encoding, MiB)


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_data_that_is_not_compressed_is_a_bad_request(encoding: str) -> None:
    with pytest.raises(BadRequest):
        decompress(b'{"not":"compressed"}\n' * 20, encoding, MiB)


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_an_empty_body_with_an_encoding_is_a_bad_request(encoding: str) -> None:
    with pytest.raises(BadRequest, match="body is empty"):
        decompress(b"", encoding, MiB)


@pytest.mark.parametrize("encoding", [*sorted(COMPRESSORS), "identity"])
def test_output_exactly_at_the_limit_is_accepted(encoding: str) -> None:
    compress = COMPRESSORS.get(encoding, bytes)

    assert decompress(compress(DATA), encoding, len(DATA)) == DATA


@pytest.mark.parametrize("encoding", [*sorted(COMPRESSORS), "identity"])
def test_output_one_byte_over_the_limit_is_413(encoding: str) -> None:
    compress = COMPRESSORS.get(encoding, bytes)

    with pytest.raises(PayloadTooLarge) as caught:
        decompress(compress(DATA), encoding, len(DATA) - 1)
    assert caught.value.item_type == "envelope"
    assert str(len(DATA) - 1) in caught.value.detail


def test_the_limit_applies_across_gzip_members() -> None:
    body = gzip.compress(b"a" * 60) + gzip.compress(b"b" * 60)

    assert decompress(body, "gzip", 120) == b"a" * 60 + b"b" * 60
    with pytest.raises(PayloadTooLarge):
        decompress(body, "gzip", 119)


def test_the_caller_names_the_item_type_of_a_413() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decompress(gzip.compress(DATA), "gzip", 10, item_type="event")
    assert caught.value.item_type == "event"


def test_a_zstd_frame_asking_for_a_window_beyond_the_limit_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=24)
    compressor = zstandard.ZstdCompressor(compression_params=params)
    stream = compressor.compressobj()
    body = stream.compress(DATA) + stream.flush()  # streamed: no content size

    with pytest.raises(BadRequest, match="zstd"):
        decompress(body, "zstd", MiB)


# --- Bombs ----------------------------------------------------------------------------
#
# Each bomb inflates to 1 GiB of zeros; the limit is 1 MiB. They are built a chunk at a
# time so the test itself never holds the gigabyte.

BOMB_CHUNK = bytes(MiB)
BOMB_CHUNKS = 1024
BOMB_SIZE = MiB * BOMB_CHUNKS
LIMIT = MiB


@functools.cache
def _deflate_bomb_body() -> tuple[bytes, int, int]:
    """Raw deflate of the bomb, plus its CRC-32 and Adler-32.

    A full flush after each chunk resets the compressor, so every chunk compresses to
    the same bytes and one compressed chunk can be repeated.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(BOMB_CHUNK) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.compress(b"") + compressor.flush()
    crc, adler = 0, 1
    for _ in range(BOMB_CHUNKS):
        crc = zlib.crc32(BOMB_CHUNK, crc)
        adler = zlib.adler32(BOMB_CHUNK, adler)
    return block * BOMB_CHUNKS + final, crc, adler


def gzip_bomb() -> bytes:
    body, crc, _ = _deflate_bomb_body()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + body + struct.pack("<II", crc, BOMB_SIZE & 0xFFFFFFFF)


def zlib_bomb() -> bytes:
    body, _, adler = _deflate_bomb_body()
    return b"\x78\xda" + body + struct.pack(">I", adler)


def brotli_bomb() -> bytes:
    compressor = brotli.Compressor(quality=1)
    parts: list[bytes] = [compressor.process(BOMB_CHUNK) for _ in range(BOMB_CHUNKS)]
    parts.append(compressor.finish())
    return b"".join(parts)


def zstd_bomb() -> bytes:
    stream = zstandard.ZstdCompressor(level=1).compressobj()
    parts = [stream.compress(BOMB_CHUNK) for _ in range(BOMB_CHUNKS)]
    return b"".join(parts) + stream.flush()


BOMBS: dict[str, Callable[[], bytes]] = {
    "gzip": gzip_bomb,
    "deflate": zlib_bomb,
    "br": brotli_bomb,
    "zstd": zstd_bomb,
}


@pytest.mark.parametrize("encoding", sorted(BOMBS))
def test_a_bomb_is_refused_with_413_in_memory_near_the_limit(encoding: str) -> None:
    bomb = BOMBS[encoding]()
    assert len(bomb) < 2 * LIMIT  # the point of a bomb: small on the wire

    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            decompress(bomb, encoding, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert caught.value.item_type == "envelope"
    assert peak < 4 * LIMIT, f"peak {peak} bytes while decoding a {encoding} bomb"


def test_a_gzip_bomb_stacked_under_brotli_is_refused() -> None:
    body = brotli.compress(gzip_bomb())

    with pytest.raises(PayloadTooLarge):
        decompress(body, "gzip, br", LIMIT)


def test_a_replay_bomb_is_refused_as_a_replay_recording() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decompress_replay(zlib_bomb(), LIMIT)
    assert caught.value.item_type == "replay_recording"


# --- Replay recordings ----------------------------------------------------------------

RECORDING = b'[{"type":4,"timestamp":1,"data":{"href":"http://127.0.0.1/"}}]'


@pytest.mark.parametrize(
    "encode", [zlib.compress, gzip.compress, bytes], ids=["zlib", "gzip", "plain"]
)
def test_replay_recordings_decode_as_zlib_gzip_or_plain(
    encode: Callable[[bytes], bytes],
) -> None:
    assert decompress_replay(encode(RECORDING), len(RECORDING)) == RECORDING


def test_a_replay_recording_that_is_neither_comes_back_as_sent() -> None:
    damaged = zlib.compress(RECORDING)[:-6]

    assert decompress_replay(damaged, MiB) == damaged


def test_a_plain_replay_recording_over_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decompress_replay(RECORDING, len(RECORDING) - 1)
    assert caught.value.item_type == "replay_recording"


def test_a_compressed_replay_recording_over_the_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        decompress_replay(zlib.compress(RECORDING), len(RECORDING) - 1)


# --- Arbitrary input ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=256),
        st.sampled_from(sorted(COMPRESSORS)).map(lambda e: COMPRESSORS[e](DATA)),
    ),
    encoding=st.sampled_from([*sorted(COMPRESSORS), "gzip, br", "br, zstd"]),
    cut=st.integers(0, 64),
)
def test_arbitrary_bodies_only_ever_raise_ingest_errors(
    body: bytes, encoding: str, cut: int
) -> None:
    with contextlib.suppress(IngestError):
        decompress(body[cut:], encoding, 4096)
