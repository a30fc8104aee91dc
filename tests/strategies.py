"""Hypothesis strategies and real SDK captures for tests of envelope ingestion.

Public names:

- ``sample_envelopes()``: ``{name: bytes}`` of every ``*.envelope`` capture in
  ``tests.conftest.samples_dir()``, empty when that directory is missing.
- ``ItemModel`` / ``EnvelopeModel``: an envelope described as data, with ``to_bytes()``
  giving its wire form; ``ItemModel.headers`` is the item header as sent.
- ``envelope_models()``: ``EnvelopeModel`` values that ``parse_envelope`` must accept
  under default ``Limits()``: framed and unframed payloads, binary payloads, ``\\r``,
  empty payloads, at most one event, with or without a trailing newline.
- ``valid_envelopes()``: the same as bytes.
- ``malformed_envelopes()``: bytes made by breaking valid envelopes and real captures:
  wrong or huge lengths, truncation, missing newlines, non-object or broken JSON
  headers, deep nesting, bad event ids, inserted or flipped bytes. Nearly all are
  invalid; a mutation may by chance leave one valid.
- ``small_limits()``: a ``Limits`` whose size and count limits are tiny, so fuzzed
  envelopes reach every 413 path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from faultlens.config import Limits
from tests.conftest import samples_dir

__all__ = [
    "EnvelopeModel",
    "ItemModel",
    "envelope_models",
    "malformed_envelopes",
    "sample_envelopes",
    "small_limits",
    "valid_envelopes",
]


@functools.cache
def sample_envelopes() -> dict[str, bytes]:
    directory = samples_dir()
    if not directory.is_dir():
        return {}
    return {
        path.name.removesuffix(".envelope"): path.read_bytes()
        for path in sorted(directory.glob("*.envelope"))
    }


def small_limits() -> Limits:
    return Limits(
        max_envelope_size=4096,
        max_event_size=64,
        max_attachment_size=48,
        max_replay_size=40,
        max_session_size=32,
        max_sessions_per_envelope=2,
        max_attachments_per_envelope=2,
        max_client_report_size=24,
        max_check_in_size=24,
        max_other_item_size=56,
        max_items_per_envelope=5,
        max_json_depth=4,
    )


# --- Valid envelopes ------------------------------------------------------------------


@dataclass(frozen=True)
class ItemModel:
    type: str
    payload: bytes
    #: True: the header carries ``length``; False: the payload ends at a newline.
    framed: bool
    extra_headers: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = {"type": self.type, **self.extra_headers}
        if self.framed:
            headers["length"] = len(self.payload)
        return headers

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.headers) + b"\n" + self.payload


@dataclass(frozen=True)
class EnvelopeModel:
    headers: dict[str, Any]
    items: list[ItemModel]
    trailing_newline: bool

    def to_bytes(self) -> bytes:
        parts = [orjson.dumps(self.headers), *(item.to_bytes() for item in self.items)]
        return b"\n".join(parts) + (b"\n" if self.trailing_newline else b"")


_KNOWN_TYPES = (
    "event",
    "attachment",
    "transaction",
    "span",
    "session",
    "sessions",
    "client_report",
    "replay_event",
    "replay_recording",
    "feedback",
    "user_report",
    "check_in",
    "log",
    "trace_metric",
    "profile",
    "profile_chunk",
)

_hex_ids = st.binary(min_size=16, max_size=16).map(bytes.hex)
_event_ids = st.one_of(
    _hex_ids,
    _hex_ids.map(str.upper),
    _hex_ids.map(lambda h: f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"),
)
_type_names = st.one_of(st.sampled_from(_KNOWN_TYPES), st.text(min_size=1, max_size=8))
_line_payloads = st.one_of(
    st.just(b'{"message":"hello"}'),
    st.binary(max_size=32).map(lambda data: data.replace(b"\n", b"")),
)
_binary_payloads = st.one_of(
    st.binary(max_size=32),
    st.just(b"line one\r\nline two\n\x00\xff"),
)
_item_extras = st.sampled_from(
    [
        {},
        {"filename": "crash.log", "content_type": "text/plain"},
        {"filename": None, "attachment_type": "event.attachment"},
        {"item_count": 3, "content_type": "application/vnd.sentry.items.log+json"},
        {"platform": "javascript", "sample": 0.25, "flag": True},
    ]
)
_items = st.one_of(
    st.builds(ItemModel, _type_names, _binary_payloads, st.just(True), _item_extras),
    st.builds(ItemModel, _type_names, _line_payloads, st.just(False), _item_extras),
)
_envelope_headers = st.one_of(
    st.sampled_from(
        [
            {},
            {"sent_at": "2026-01-02T03:04:05.678Z"},
            {"dsn": "http://publickey@127.0.0.1:8000/42", "sdk": {"name": "js"}},
        ]
    ),
    st.builds(lambda event_id: {"event_id": event_id}, _event_ids),
)


def _one_event_at_most(
    headers: dict[str, Any], items: list[ItemModel], trailing_newline: bool
) -> EnvelopeModel:
    """An envelope of these parts, with every event after the first made an
    attachment."""
    event_positions = [i for i, item in enumerate(items) if item.type == "event"]
    for position in event_positions[1:]:
        old = items[position]
        items[position] = ItemModel("attachment", old.payload, old.framed)
    return EnvelopeModel(headers, items, trailing_newline)


_envelope_models = st.builds(
    _one_event_at_most, _envelope_headers, st.lists(_items, max_size=5), st.booleans()
)


def envelope_models() -> st.SearchStrategy[EnvelopeModel]:
    return _envelope_models


def valid_envelopes() -> st.SearchStrategy[bytes]:
    return envelope_models().map(EnvelopeModel.to_bytes)


# --- Malformed envelopes --------------------------------------------------------------

_Mutation = Callable[[st.DrawFn, EnvelopeModel], bytes]

_BAD_LENGTHS: list[object] = [-1, 2**63 - 1, 1.5, "12", True, [], {}, 10**30]


def _bad_length(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """One item declares a length that is negative, too long, huge or not an int."""
    if not model.items:
        return _wrap_items(model, [b'{"type":"event","length":-1}\n'])
    index = draw(st.integers(0, len(model.items) - 1))
    item = model.items[index]
    length = draw(
        st.one_of(
            st.sampled_from(_BAD_LENGTHS),
            st.integers(1, 1000).map(lambda extra: len(item.payload) + extra),
            st.integers(0, len(item.payload)),
        )
    )
    header = {**item.headers, "length": length}
    if length == 10**30:  # orjson cannot write it; clients can.
        raw_header = orjson.dumps(item.headers)[:-1] + b',"length":' + b"9" * 31 + b"}"
    else:
        raw_header = orjson.dumps(header)
    broken = raw_header + b"\n" + item.payload
    return _replace_item(model, index, broken)


def _non_object_header(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """The envelope header or an item header is JSON but not an object."""
    replacement = draw(
        st.sampled_from([b"[]", b"[1,2]", b"42", b'"event"', b"null", b"true", b""])
    )
    return _replace_some_header(draw, model, replacement)


def _broken_json_header(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """A header line that is not JSON at all."""
    replacement = draw(
        st.one_of(
            st.sampled_from(
                [
                    b'{"type":',
                    b'{"type":"event"',
                    b"{'type':'event'}",
                    b'{"type":"event"}}',
                    b'{"type":NaN}',
                    b'{"type":"\xff\xfe"}',
                    b'{"type":"event","length":1e400}',
                ]
            ),
            st.binary(max_size=24).map(lambda data: data.replace(b"\n", b"")),
        )
    )
    return _replace_some_header(draw, model, replacement)


def _bad_item_type(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """An item header without a usable ``type``."""
    header = draw(
        st.sampled_from(
            [b"{}", b'{"length":0}', b'{"type":5}', b'{"type":""}', b'{"type":null}']
        )
    )
    return _wrap_items(model, [header + b"\n"])


def _deep_nesting(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """A header nested around max_json_depth, or past orjson's own recursion limit."""
    depth = draw(st.sampled_from([3, 4, 5, 63, 64, 65, 1023, 1024, 1025, 5000]))
    opener, closer = draw(st.sampled_from([(b'{"a":', b"}"), (b"[", b"]")]))
    nested = opener * depth + b"1" + closer * depth
    header = b'{"type":"event","x":' + nested + b"}"
    if draw(st.booleans()):
        return _wrap_items(model, [header + b"\n{}"])
    return b'{"x":' + nested + b"}\n" + model.to_bytes().partition(b"\n")[2]


def _bad_event_id(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    event_id = draw(
        st.one_of(
            st.sampled_from(["", "xyz", "0" * 31, "0" * 33, "{" + "0" * 32 + "}"]),
            st.integers(-(2**63), 2**63 - 1),
            st.lists(st.booleans(), max_size=2),
        )
    )
    headers = {**model.headers, "event_id": event_id}
    return EnvelopeModel(headers, model.items, model.trailing_newline).to_bytes()


def _too_many(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """Repeated items of one type: several events, attachments, sessions or any."""
    item_type = draw(st.sampled_from(["event", "attachment", "session", "sessions"]))
    count = draw(st.sampled_from([2, 3, 6, 31, 101, 1001]))
    item = f'{{"type":"{item_type}","length":0}}\n\n'.encode()
    return _wrap_items(model, [item] * count)


def _oversized_item(draw: st.DrawFn, model: EnvelopeModel) -> bytes:
    """An item just over a tiny limit (see small_limits), framed or by line."""
    item_type = draw(st.sampled_from(_KNOWN_TYPES))
    payload = b"x" * draw(st.integers(20, 80))
    bigger = ItemModel(item_type, payload, draw(st.booleans()))
    return _wrap_items(model, [bigger.to_bytes()])


def _structural_mutations() -> list[_Mutation]:
    return [
        _bad_length,
        _non_object_header,
        _broken_json_header,
        _bad_item_type,
        _deep_nesting,
        _bad_event_id,
        _too_many,
        _oversized_item,
    ]


@st.composite
def malformed_envelopes(draw: st.DrawFn) -> bytes:
    samples = sample_envelopes()
    if samples and draw(st.integers(0, 4)) == 0:
        data = draw(st.sampled_from(sorted(samples.values())))
    else:
        model = draw(envelope_models())
        mutation = draw(st.sampled_from(_structural_mutations()))
        data = mutation(draw, model)
    for _ in range(draw(st.integers(0 if data else 1, 3))):
        data = _byte_mutation(draw, data)
    return data


def _byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncate, drop a newline, insert bytes, flip a byte or double the data."""
    kind = draw(st.sampled_from(["truncate", "newline", "insert", "flip", "double"]))
    # Hypothesis favours small numbers; counting from either end spreads the damage.
    position = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        position = len(data) - position
    if kind == "truncate":
        return data[:position]
    if kind == "newline":
        newline = data.find(b"\n", position)
        return data if newline < 0 else data[:newline] + data[newline + 1 :]
    if kind == "insert":
        inserted = draw(
            st.one_of(
                st.binary(min_size=1, max_size=8), st.sampled_from([b"\n", b"\r"])
            )
        )
        return data[:position] + inserted + data[position:]
    if kind == "flip" and position < len(data):
        flipped = draw(st.integers(0, 255))
        return data[:position] + bytes([flipped]) + data[position + 1 :]
    return data + data


def _wrap_items(model: EnvelopeModel, extra_items: list[bytes]) -> bytes:
    """The model's bytes with raw items (each ending in a newline) appended."""
    base = model.to_bytes()
    if not base.endswith(b"\n"):
        base += b"\n"
    return base + b"".join(extra_items)


def _replace_item(model: EnvelopeModel, index: int, raw_item: bytes) -> bytes:
    parts = [orjson.dumps(model.headers)]
    for position, item in enumerate(model.items):
        parts.append(raw_item if position == index else item.to_bytes())
    return b"\n".join(parts) + (b"\n" if model.trailing_newline else b"")


def _replace_some_header(
    draw: st.DrawFn, model: EnvelopeModel, replacement: bytes
) -> bytes:
    """Replace the envelope header (index -1) or one item's header line."""
    index = draw(st.integers(-1, len(model.items) - 1))
    if index < 0:
        return replacement + b"\n" + model.to_bytes().partition(b"\n")[2]
    payload = model.items[index].payload
    return _replace_item(model, index, replacement + b"\n" + payload)
