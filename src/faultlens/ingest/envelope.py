"""Envelope framing: split a decompressed body into its headers and items.

An envelope is a JSON header line followed by items, each a JSON header line and a
payload. A payload is either ``length`` bytes (binary-safe) or, without ``length``, the
rest of its line. Everything here is pure: bytes in, :class:`Envelope` or an
:class:`~faultlens.ingest.errors.IngestError` out, with every size, count and JSON
nesting depth bounded by :class:`~faultlens.config.Limits`. Item payloads stay bytes;
callers parse the ones they use with :func:`parse_json_payload`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from faultlens.config import Limits
from faultlens.ingest.decompress import decompress
from faultlens.ingest.errors import BadRequest, PayloadTooLarge

_NEWLINE: Final = 0x0A
_EVENT_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
_PLAIN_TYPE = re.compile(r"[a-z0-9_.-]{1,32}")

#: Rate-limit and outcome data category of each item type. An ``event`` counts as
#: ``error`` here; Sentry counts one without an exception as ``default``, which only a
#: caller that has parsed the payload can tell.
_CATEGORIES: Final[dict[str, str]] = {
    "event": "error",
    "attachment": "attachment",
    "transaction": "transaction",
    "span": "span",
    "session": "session",
    "sessions": "session",
    "client_report": "internal",
    "replay_event": "replay",
    "replay_recording": "replay",
    "replay_video": "replay",
    "feedback": "feedback",
    "user_report": "default",
    "check_in": "monitor",
    "log": "log_item",
    "trace_metric": "trace_metric",
    "profile": "profile",
    "profile_chunk": "profile_chunk",
}

#: The :class:`Limits` field that caps one payload of each item type; other types
#: fall under ``max_other_item_size``.
_SIZE_LIMITS: Final[dict[str, str]] = {
    "event": "max_event_size",
    "transaction": "max_event_size",
    "feedback": "max_event_size",
    "attachment": "max_attachment_size",
    "replay_recording": "max_replay_size",
    "session": "max_session_size",
    "sessions": "max_session_size",
    "client_report": "max_client_report_size",
    "check_in": "max_check_in_size",
}
_OTHER_SIZE_LIMIT: Final = "max_other_item_size"


@dataclass(frozen=True)
class Item:
    """One envelope item: its JSON header and its payload bytes."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        item_type = self.headers.get("type")
        return item_type if isinstance(item_type, str) else ""

    @property
    def category(self) -> str:
        """The data category for rate limits and outcomes; ``default`` if unknown."""
        return _CATEGORIES.get(self.type, "default")


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope: its JSON header (possibly empty) and its items in order."""

    headers: dict[str, Any]
    items: list[Item]

    @property
    def event_id(self) -> str | None:
        """The header's ``event_id`` as 32 lower-case hex digits, if it has one."""
        return normalize_event_id(self.headers.get("event_id"))


def normalize_event_id(value: object) -> str | None:
    """An event id as 32 lower-case hex digits; None stays None.

    Accepts the plain and the dashed UUID form in either case. Raises BadRequest for
    anything else.
    """
    if value is None:
        return None
    if isinstance(value, str) and _EVENT_ID.fullmatch(value.lower()):
        return value.lower().replace("-", "")
    shown = repr(value)[:48] if isinstance(value, str) else type(value).__name__
    raise BadRequest(
        f"event_id {shown} is not an event id; expected 32 hex digits "
        "or a UUID such as 'b748f040-927e-45be-b079-3f465a037e79'"
    )


def parse_envelope(data: bytes, limits: Limits) -> Envelope:
    """Parse a decompressed envelope body.

    Raises BadRequest for broken framing or JSON, a header that is not an object, an
    item without a string ``type``, more than one ``event`` item or more items than
    ``max_items_per_envelope``; PayloadTooLarge (naming the item type) for an item over
    its size limit or too many attachments or sessions.
    """
    if len(data) > limits.max_envelope_size:
        raise PayloadTooLarge(
            f"the envelope is {len(data)} bytes, over the {limits.max_envelope_size}"
            "-byte limit (max_envelope_size); send fewer items per envelope"
        )
    if not data:
        raise BadRequest("the envelope is empty; expected a JSON header line")

    header_end = _line_end(data, 0)
    headers = parse_json_payload(data[:header_end], limits, "envelope header")
    # Checked now so that Envelope.event_id cannot fail on a parsed envelope.
    normalize_event_id(headers.get("event_id"))

    counts = _ItemCounts(limits)
    items: list[Item] = []
    position = header_end + 1
    while position < len(data):
        item, position = _read_item(data, position, limits)
        counts.add(item.type)
        items.append(item)
    return Envelope(headers=headers, items=items)


def parse_json_payload(payload: bytes, limits: Limits, what: str) -> dict[str, Any]:
    """Parse a payload that must be one JSON object, nested at most max_json_depth.

    Raises BadRequest naming ``what`` for invalid JSON (NaN and Infinity included),
    a value that is not an object, or one nested too deeply.
    """
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest(
            f"the {what} must be a JSON object, got a JSON {_json_kind(value)}"
        )
    if _nesting_exceeds(payload, limits.max_json_depth):
        raise BadRequest(
            f"the {what} nests deeper than {limits.max_json_depth} levels "
            "(max_json_depth); flatten the data"
        )
    return value


def check_json_payload(payload: bytes, what: str) -> None:
    """Check that a payload is one JSON object, without the nesting-depth walk.

    The door uses this: it refuses broken JSON with a 400 at the cost of one parse,
    and leaves the depth check (:func:`parse_json_payload`) to processing, where a
    payload nested too deeply is dropped and counted as invalid. orjson refuses
    nesting past 1024 levels on its own, so the parse itself stays bounded.
    """
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the {what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest(
            f"the {what} must be a JSON object, got a JSON {_json_kind(value)}"
        )


def parse_store_body(data: bytes, limits: Limits) -> dict[str, Any]:
    """Parse a legacy ``/store/`` body: a JSON event, or base64 of zlib of one.

    The event is bounded by ``max_event_size`` after decoding (PayloadTooLarge with
    item type ``event``).
    """
    body = data.strip()
    if not body:
        raise BadRequest("the store body is empty; expected a JSON event")
    if not body.startswith(b"{"):
        body = _decode_store_base64(body, limits)
    if len(body) > limits.max_event_size:
        raise PayloadTooLarge(
            f"the event is {len(body)} bytes, over the {limits.max_event_size}-byte "
            "limit (max_event_size); trim it before sending",
            item_type="event",
        )
    return parse_json_payload(body, limits, "store body")


def _decode_store_base64(body: bytes, limits: Limits) -> bytes:
    try:
        raw = base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise BadRequest(
            "the store body is neither a JSON object nor base64 "
            f"({exc}); send the event as JSON"
        ) from exc
    if raw.lstrip().startswith(b"{"):
        return raw
    return decompress(raw, "deflate", limits.max_event_size, item_type="event")


def _read_item(data: bytes, start: int, limits: Limits) -> tuple[Item, int]:
    """Read the item whose header starts at ``start``; return it and where the next
    item starts."""
    header_end = _line_end(data, start)
    headers = parse_json_payload(data[start:header_end], limits, "item header")
    item_type = headers.get("type")
    if not isinstance(item_type, str) or not item_type:
        raise BadRequest(
            f"an item header has type {_describe(item_type)}; expected a non-empty "
            'string such as {"type":"event"}'
        )

    name = _type_name(item_type)
    payload_start = min(header_end + 1, len(data))
    length = _declared_length(headers, name, len(data) - payload_start)
    if length is None:
        payload_end = _line_end(data, payload_start)
    else:
        payload_end = payload_start + length
        if payload_end < len(data) and data[payload_end] != _NEWLINE:
            raise BadRequest(
                f"the {name} item's {length}-byte payload is followed by "
                f"byte 0x{data[payload_end]:02x}; expected a newline or the end of the "
                "envelope (is its length right?)"
            )

    _check_item_size(item_type, name, payload_end - payload_start, limits)
    item = Item(headers=headers, payload=data[payload_start:payload_end])
    return item, payload_end + 1


def _declared_length(headers: dict[str, Any], name: str, remaining: int) -> int | None:
    length = headers.get("length")
    if length is None:
        return None
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise BadRequest(
            f"the {name} item has length {_describe(length)}; expected a "
            "non-negative integer number of payload bytes"
        )
    if length > remaining:
        raise BadRequest(
            f"the {name} item declares length {length} but only {remaining} "
            "bytes follow its header; the envelope is truncated or the length wrong"
        )
    return length


def _check_item_size(item_type: str, name: str, size: int, limits: Limits) -> None:
    limit_name = _SIZE_LIMITS.get(item_type, _OTHER_SIZE_LIMIT)
    limit: int = getattr(limits, limit_name)
    if size > limit:
        raise PayloadTooLarge(
            f"the {name} item is {size} bytes, over the {limit}-byte limit "
            f"({limit_name}); send a smaller {name}",
            item_type=name,
        )


class _ItemCounts:
    """Running counts of an envelope's items, refused as soon as one is over."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._items = 0
        self._events = 0
        self._attachments = 0
        self._sessions = 0

    def add(self, item_type: str) -> None:
        limits = self._limits
        self._items += 1
        if self._items > limits.max_items_per_envelope:
            raise BadRequest(
                f"the envelope has more than {limits.max_items_per_envelope} items "
                "(max_items_per_envelope); split it"
            )
        if item_type == "event":
            self._events += 1
            if self._events > 1:
                raise BadRequest(
                    "the envelope has more than one event item; send one per envelope"
                )
        elif item_type == "attachment":
            self._attachments += 1
            if self._attachments > limits.max_attachments_per_envelope:
                raise PayloadTooLarge(
                    "the envelope has more than "
                    f"{limits.max_attachments_per_envelope} attachments "
                    "(max_attachments_per_envelope)",
                    item_type="attachment",
                )
        elif item_type in ("session", "sessions"):
            self._sessions += 1
            if self._sessions > limits.max_sessions_per_envelope:
                raise PayloadTooLarge(
                    "the envelope has more than "
                    f"{limits.max_sessions_per_envelope} session items "
                    "(max_sessions_per_envelope)",
                    item_type="session",
                )


def _type_name(item_type: str) -> str:
    """The item type as messages and outcomes show it: short and printable, since
    unknown types are accepted and the client chooses them."""
    return item_type if _PLAIN_TYPE.fullmatch(item_type) else repr(item_type[:32])


def _line_end(data: bytes, start: int) -> int:
    """Index of the newline ending the line at ``start``, or the end of ``data``."""
    end = data.find(b"\n", start)
    return len(data) if end < 0 else end


_BRACKETS_AND_QUOTES = b'"[]{}'
_ALL_BUT_BRACKETS_AND_QUOTES: Final = bytes(
    b for b in range(256) if b not in _BRACKETS_AND_QUOTES
)


def _nesting_exceeds(text: bytes, max_depth: int) -> bool:
    """Whether JSON ``text``, already parsed as valid, nests deeper than allowed.

    Works on the text with C-speed byte operations: walking the parsed objects of a
    20 KB event in Python cost four times the parse itself. Escaped backslashes and
    quotes go first, so every quote left delimits a string; then everything but
    brackets and quotes; then the strings. What remains is a short skeleton of
    balanced brackets, and each pass removes its innermost level, so the depth is
    the number of passes it takes to empty it: at most ``max_depth`` passes.
    """
    unescaped = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = unescaped.translate(None, _ALL_BUT_BRACKETS_AND_QUOTES)
    skeleton = b"".join(marks.split(b'"')[::2])
    for _ in range(max_depth):
        if not skeleton:
            return False
        # The NUL keeps "{[]}" from losing two levels in one pass.
        marked = skeleton.replace(b"[]", b"\0").replace(b"{}", b"\0")
        skeleton = marked.replace(b"\0", b"")
    return bool(skeleton)


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _describe(value: object) -> str:
    """A short rendering of a client-sent JSON value for an error message."""
    if isinstance(value, str):
        return repr(value[:32])
    if isinstance(value, dict | list):
        return f"a JSON {_json_kind(value)}"
    return orjson.dumps(value).decode()
