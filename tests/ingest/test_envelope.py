import base64
import dataclasses
import zlib
from collections import Counter

import orjson
import pytest
from hypothesis import given, settings

from faultlens.config import Limits
from faultlens.ingest.envelope import (
    Envelope,
    Item,
    normalize_event_id,
    parse_envelope,
    parse_json_payload,
    parse_store_body,
)
from faultlens.ingest.errors import BadRequest, PayloadTooLarge
from tests.conftest import samples_dir
from tests.strategies import EnvelopeModel, envelope_models, sample_envelopes

LIMITS = Limits()

# What each capture holds, from the capture notes in the protocol description.
SAMPLE_ITEMS: dict[str, list[str]] = {
    "js-01-session-init": ["session"],
    "js-02-pageload-spans": ["span"],
    "js-03-replay-segment0-session-mode": ["replay_event", "replay_recording"],
    "js-04-session-update-errored": ["session"],
    "js-05-handled-error-with-cause": ["event"],
    "js-06-session-update-2": ["session"],
    "js-07-unhandled-onerror": ["event"],
    "js-08-unhandled-rejection": ["event"],
    "js-09-capture-message-warning": ["event"],
    "js-10-replay-segment1": ["replay_event", "replay_recording"],
    "js-11-event-with-attachments": ["event", "attachment", "attachment"],
    "js-12-feedback": ["feedback"],
    "js-13-replay-segment2": ["replay_event", "replay_recording"],
    "js-14-spans-after-unload": ["span"],
    "js-buffer-02-pageload-spans": ["span"],
    "js-buffer-04-error-triggers-replay": ["event"],
    "js-buffer-05-replay-segment0-buffer-type": ["replay_event", "replay_recording"],
    "js-buffer-08-replay-segment1-buffer-type": ["replay_event", "replay_recording"],
    "js-nocompress-07-replay-segment0-plain-json": ["replay_event", "replay_recording"],
    "js-nocompress-09-replay-segment1-plain-json": ["replay_event", "replay_recording"],
    "js-nocors-01-replay-seg0-first-try": ["replay_event", "replay_recording"],
    "js-nocors-02-replay-seg0-retry1": ["replay_event", "replay_recording"],
    "js-nocors-03-replay-seg0-retry2": ["replay_event", "replay_recording"],
    "js-react-00-session-unhandled": ["session"],
    "js-react-01-errorboundary-error": ["event"],
    "js-tunnel-01-event-dsn-in-envelope-header": ["event"],
    "py-01-handled-exception": ["event"],
    "py-02-chained-unhandled-excepthook": ["event"],
    "py-03-capture-message-warning": ["event"],
    "py-04-logging-error-logentry": ["event"],
    "py-05-event-with-attachments": ["event", "attachment", "attachment"],
    "py-06-session-error-event": ["event"],
    "py-07-session-update": ["session"],
    "py-08-wsgi-request-error": ["event"],
    "py-09-wsgi-aggregate-sessions": ["sessions"],
    "py-10-client-report": ["client_report"],
    "py-11-transaction-error-event": ["event"],
    "py-12-transaction": ["transaction"],
    "py-13-checkin-in-progress": ["check_in"],
    "py-14-checkin-ok": ["check_in"],
    "py-15-logs": ["log"],
    "py-16-trace-metrics": ["trace_metric"],
    "py-17-brotli-when-brotli-installed": ["event"],
}


def small(**changes: int) -> Limits:
    return dataclasses.replace(LIMITS, **changes)


def envelope(*lines: bytes) -> bytes:
    return b"\n".join(lines)


# --- Real SDK captures ----------------------------------------------------------------


def test_every_capture_is_listed_here() -> None:
    if not samples_dir().is_dir():
        pytest.skip(f"no SDK captures at {samples_dir()}; set FAULTLENS_SAMPLES_DIR")
    assert set(sample_envelopes()) == set(SAMPLE_ITEMS)


@pytest.mark.parametrize("name", sorted(SAMPLE_ITEMS))
def test_every_capture_parses_into_its_items(name: str) -> None:
    data = sample_envelopes().get(name)
    if data is None:
        pytest.skip(f"no SDK captures at {samples_dir()}; set FAULTLENS_SAMPLES_DIR")

    parsed = parse_envelope(data, LIMITS)

    assert Counter(item.type for item in parsed.items) == Counter(SAMPLE_ITEMS[name])
    for item in parsed.items:
        if "length" in item.headers:
            assert len(item.payload) == item.headers["length"]
        if item.type not in ("attachment", "replay_recording"):
            assert parse_json_payload(item.payload, LIMITS, item.type)


def test_python_captures_with_an_event_carry_its_id_in_the_header() -> None:
    data = sample_envelopes().get("py-05-event-with-attachments")
    if data is None:
        pytest.skip(f"no SDK captures at {samples_dir()}; set FAULTLENS_SAMPLES_DIR")

    parsed = parse_envelope(data, LIMITS)
    event = parse_json_payload(parsed.items[0].payload, LIMITS, "event")

    assert parsed.event_id == event["event_id"]
    assert b"\x00" in parsed.items[1].payload + parsed.items[2].payload


# --- Framing --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(envelope_models())
def test_generated_envelopes_parse_back_into_what_was_written(
    model: EnvelopeModel,
) -> None:
    parsed = parse_envelope(model.to_bytes(), LIMITS)

    assert parsed.headers == model.headers
    assert [item.headers for item in parsed.items] == [i.headers for i in model.items]
    assert [item.payload for item in parsed.items] == [i.payload for i in model.items]


def test_a_length_framed_payload_is_binary_safe() -> None:
    payload = b"a\nb\r\n\x00\xff\n"
    header = orjson.dumps({"type": "attachment", "length": len(payload)})
    data = envelope(b"{}", header, payload)

    (item,) = parse_envelope(data, LIMITS).items

    assert item.payload == payload


def test_a_payload_without_length_runs_to_the_newline() -> None:
    data = envelope(
        b"{}", b'{"type":"event"}', b'{"a":1}', b'{"type":"session"}', b"{}"
    )

    items = parse_envelope(data, LIMITS).items

    assert [(i.type, i.payload) for i in items] == [
        ("event", b'{"a":1}'),
        ("session", b"{}"),
    ]


def test_a_carriage_return_belongs_to_the_payload() -> None:
    data = envelope(b"{}", b'{"type":"log"}', b"{}\r", b"")

    (item,) = parse_envelope(data, LIMITS).items

    assert item.payload == b"{}\r"


@pytest.mark.parametrize("trailing", [b"", b"\n"])
def test_the_final_newline_is_optional(trailing: bytes) -> None:
    framed = b'{}\n{"type":"attachment","length":2}\nab' + trailing
    unframed = b'{}\n{"type":"event"}\n{}' + trailing

    assert parse_envelope(framed, LIMITS).items[0].payload == b"ab"
    assert parse_envelope(unframed, LIMITS).items[0].payload == b"{}"


def test_empty_payloads_are_legal() -> None:
    attachment = b'{"type":"attachment","length":0}'
    data = envelope(b"{}", attachment, b"", b'{"type":"log"}', b"")

    items = parse_envelope(data, LIMITS).items

    assert [(i.type, i.payload) for i in items] == [("attachment", b""), ("log", b"")]


def test_an_item_header_at_the_very_end_has_an_empty_payload() -> None:
    (item,) = parse_envelope(b'{}\n{"type":"log"}', LIMITS).items

    assert item.payload == b""


@pytest.mark.parametrize(
    "data", [b"{}", b"{}\n", b'{"sent_at":"2026-01-01T00:00:00Z"}']
)
def test_an_envelope_may_have_no_items(data: bytes) -> None:
    assert parse_envelope(data, LIMITS).items == []


def test_unknown_item_types_are_kept_for_the_caller_to_skip() -> None:
    data = envelope(b"{}", b'{"type":"hologram","length":3}', b"xyz")

    (item,) = parse_envelope(data, LIMITS).items

    assert (item.type, item.category, item.payload) == ("hologram", "default", b"xyz")


def test_a_null_length_means_no_length() -> None:
    data = envelope(b"{}", b'{"type":"event","length":null}', b"{}")

    assert parse_envelope(data, LIMITS).items[0].payload == b"{}"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n", "envelope header is not valid JSON"),
        (b"[]\n", "must be a JSON object, got a JSON array"),
        (b'"x"', "must be a JSON object, got a JSON string"),
        (b"{\n", "envelope header is not valid JSON"),
        (b'{}\n\n{"type":"event"}\n{}', "item header is not valid JSON"),
        (b"{}\n[1]\n", "item header must be a JSON object"),
        (b"{}\n{}\n", "expected a non-empty string"),
        (b'{}\n{"type":7}\n', "has type 7"),
        (b'{}\n{"type":""}\n', "has type ''"),
        (b'{}\n{"type":"a","length":-1}\nx', "has length -1"),
        (b'{}\n{"type":"a","length":1.0}\nx', "has length 1.0"),
        (b'{}\n{"type":"a","length":true}\nx', "has length true"),
        (b'{}\n{"type":"a","length":"1"}\nx', "has length '1'"),
        (b'{}\n{"type":"a","length":[]}\nx', "has length a JSON array"),
        (b'{}\n{"type":"a","length":99999999999999999999}\nx', "has length"),
        (b'{}\n{"type":"a","length":4}\nabc', "only 3 bytes follow"),
        (b'{}\n{"type":"a","length":2}', "only 0 bytes follow"),
        (b'{}\n{"type":"a","length":2}\nabc', "followed by byte 0x63"),
        (b'{}\n{"type":"event","x":NaN}\n{}', "not valid JSON"),
        (b'{}\n{"type":"\xff"}\n{}', "not valid JSON"),
        (b'{"event_id":"nope"}\n', "event_id 'nope' is not an event id"),
        (b'{"event_id":12}\n', "event_id int is not an event id"),
    ],
)
def test_broken_framing_is_a_bad_request(data: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_envelope(data, LIMITS)


def test_more_than_one_event_is_a_bad_request() -> None:
    data = envelope(b"{}", b'{"type":"event"}', b"{}", b'{"type":"event"}', b"{}")

    with pytest.raises(BadRequest, match="more than one event"):
        parse_envelope(data, LIMITS)


# --- Event ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "b748f040927e45beb0793f465a037e79",
        "B748F040927E45BEB0793F465A037E79",
        "b748f040-927e-45be-b079-3f465a037e79",
        "B748F040-927E-45BE-B079-3F465A037E79",
    ],
)
def test_event_ids_are_normalised_to_lower_case_hex(raw: str) -> None:
    parsed = parse_envelope(orjson.dumps({"event_id": raw}), LIMITS)

    assert parsed.event_id == raw.lower().replace("-", "")
    assert len(parsed.event_id) == 32


def test_no_event_id_is_none() -> None:
    assert parse_envelope(b"{}", LIMITS).event_id is None
    assert parse_envelope(b'{"event_id":null}', LIMITS).event_id is None


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "b748f040927e45beb0793f465a037e7",
        "b748f040927e45beb0793f465a037e790",
        "g748f040927e45beb0793f465a037e79",
        "{b748f040-927e-45be-b079-3f465a037e79}",
        "b748f040-927e45be-b079-3f465a037e79",
        "b748f040927e45beb0793f465a037e79\n",
        42,
        ["b748f040927e45beb0793f465a037e79"],
    ],
)
def test_malformed_event_ids_are_bad_requests(raw: object) -> None:
    with pytest.raises(BadRequest, match="not an event id"):
        normalize_event_id(raw)
    with pytest.raises(BadRequest):
        Envelope(headers={"event_id": raw}, items=[]).event_id  # noqa: B018


# --- Categories -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item_type", "category"),
    [
        ("event", "error"),
        ("attachment", "attachment"),
        ("transaction", "transaction"),
        ("span", "span"),
        ("session", "session"),
        ("sessions", "session"),
        ("client_report", "internal"),
        ("replay_event", "replay"),
        ("replay_recording", "replay"),
        ("replay_video", "replay"),
        ("feedback", "feedback"),
        ("user_report", "default"),
        ("check_in", "monitor"),
        ("log", "log_item"),
        ("trace_metric", "trace_metric"),
        ("profile", "profile"),
        ("profile_chunk", "profile_chunk"),
        ("statsd", "default"),
        ("never-heard-of-it", "default"),
    ],
)
def test_each_item_type_has_its_data_category(item_type: str, category: str) -> None:
    assert Item(headers={"type": item_type}, payload=b"").category == category


# --- Size and count limits ------------------------------------------------------------

SIZE_LIMITS = [
    ("event", "max_event_size"),
    ("transaction", "max_event_size"),
    ("feedback", "max_event_size"),
    ("attachment", "max_attachment_size"),
    ("replay_recording", "max_replay_size"),
    ("session", "max_session_size"),
    ("sessions", "max_session_size"),
    ("client_report", "max_client_report_size"),
    ("check_in", "max_check_in_size"),
    ("replay_event", "max_other_item_size"),
    ("span", "max_other_item_size"),
    ("log", "max_other_item_size"),
    ("unknown_type", "max_other_item_size"),
]


def _limits_with(field: str, value: int) -> Limits:
    # Every item limit large, then the one under test small, so only it can trip.
    sizes = {
        name: 10_000
        for name in (
            "max_event_size",
            "max_attachment_size",
            "max_replay_size",
            "max_session_size",
            "max_client_report_size",
            "max_check_in_size",
            "max_other_item_size",
        )
    }
    return small(**{**sizes, field: value})


def _one_item(item_type: str, size: int, framed: bool = True) -> bytes:
    header = {"type": item_type, "length": size} if framed else {"type": item_type}
    return envelope(b"{}", orjson.dumps(header), b"x" * size)


@pytest.mark.parametrize(("item_type", "field"), SIZE_LIMITS)
def test_an_item_exactly_at_its_limit_is_accepted(item_type: str, field: str) -> None:
    limits = _limits_with(field, 100)

    (item,) = parse_envelope(_one_item(item_type, 100), limits).items

    assert len(item.payload) == 100


@pytest.mark.parametrize(("item_type", "field"), SIZE_LIMITS)
def test_an_item_one_byte_over_its_limit_is_413(item_type: str, field: str) -> None:
    limits = _limits_with(field, 100)

    with pytest.raises(PayloadTooLarge) as caught:
        parse_envelope(_one_item(item_type, 101), limits)

    assert caught.value.item_type == item_type
    assert field in caught.value.detail


def test_a_client_chosen_type_name_is_shown_short_and_printable() -> None:
    weird_type = "log\r\nX-Injected: 1" + "z" * 10_000
    data = _one_item(weird_type, 101)

    with pytest.raises(PayloadTooLarge) as caught:
        parse_envelope(data, _limits_with("max_other_item_size", 100))

    assert "\r" not in caught.value.detail and "\n" not in caught.value.detail
    assert len(caught.value.detail) < 300
    assert "\n" not in caught.value.item_type and len(caught.value.item_type) < 40


def test_the_size_limit_applies_to_payloads_without_length_too() -> None:
    limits = _limits_with("max_event_size", 100)

    assert parse_envelope(_one_item("event", 100, framed=False), limits).items
    with pytest.raises(PayloadTooLarge):
        parse_envelope(_one_item("event", 101, framed=False), limits)


def test_the_envelope_size_limit_is_checked_first() -> None:
    data = _one_item("attachment", 50)
    exactly = small(max_envelope_size=len(data))

    assert parse_envelope(data, exactly).items
    with pytest.raises(PayloadTooLarge) as caught:
        parse_envelope(data, small(max_envelope_size=len(data) - 1))
    assert caught.value.item_type == "envelope"


def _many(item_types: list[str]) -> bytes:
    items = [orjson.dumps({"type": t, "length": 0}) + b"\n\n" for t in item_types]
    return b"{}\n" + b"".join(items)


def test_attachments_up_to_the_count_limit_are_accepted() -> None:
    limits = small(max_attachments_per_envelope=3)

    assert len(parse_envelope(_many(["attachment"] * 3), limits).items) == 3
    with pytest.raises(PayloadTooLarge) as caught:
        parse_envelope(_many(["attachment"] * 4), limits)
    assert caught.value.item_type == "attachment"


def test_session_and_sessions_items_share_one_count_limit() -> None:
    limits = small(max_sessions_per_envelope=3)

    assert parse_envelope(_many(["session", "sessions", "session"]), limits).items
    with pytest.raises(PayloadTooLarge) as caught:
        parse_envelope(_many(["session", "sessions", "session", "sessions"]), limits)
    assert caught.value.item_type == "session"


def test_items_beyond_the_envelope_count_limit_are_a_bad_request() -> None:
    limits = small(max_items_per_envelope=5)

    assert len(parse_envelope(_many(["log"] * 5), limits).items) == 5
    with pytest.raises(BadRequest, match="max_items_per_envelope"):
        parse_envelope(_many(["log"] * 6), limits)


def test_header_nesting_at_the_depth_limit_is_accepted_and_one_more_refused() -> None:
    limits = small(max_json_depth=4)
    at_limit = b'{"a":{"b":[{"c":1}]}}'  # 4 containers deep
    over = b'{"a":{"b":[{"c":[]}]}}'

    assert parse_envelope(at_limit, limits).headers["a"]["b"][0]["c"] == 1
    with pytest.raises(BadRequest, match="deeper than 4"):
        parse_envelope(over, limits)
    item_over = envelope(b"{}", b'{"type":"log","x":' + over + b"}", b"")
    with pytest.raises(BadRequest, match="item header nests deeper"):
        parse_envelope(item_over, limits)


# --- JSON payloads --------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_json_payload_nesting_is_bounded_by_max_json_depth() -> None:
    depth = LIMITS.max_json_depth

    assert parse_json_payload(_nested(depth), LIMITS, "event")
    with pytest.raises(BadRequest, match="event nests deeper"):
        parse_json_payload(_nested(depth + 1), LIMITS, "event")


def test_nesting_far_past_what_python_can_recurse_is_refused() -> None:
    with pytest.raises(BadRequest, match="event"):
        parse_json_payload(b"[" * 100_000 + b"]" * 100_000, LIMITS, "event")
    with pytest.raises(BadRequest, match="event"):
        parse_json_payload(_nested(50_000), LIMITS, "event")


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"1", b"null", b'"s"', b"{", b'{"a":NaN}', b'{"a":Infinity}', b"\xff"],
)
def test_a_payload_that_is_not_a_json_object_names_what_it_is(payload: bytes) -> None:
    with pytest.raises(BadRequest, match="the replay_event "):
        parse_json_payload(payload, LIMITS, "replay_event")


# --- Legacy store bodies --------------------------------------------------------------

EVENT = {"event_id": "b748f040927e45beb0793f465a037e79", "message": "hello"}


def test_a_store_body_may_be_plain_json() -> None:
    assert parse_store_body(b"  " + orjson.dumps(EVENT) + b"\n", LIMITS) == EVENT


def test_a_store_body_may_be_base64_of_zlib_json() -> None:
    body = base64.b64encode(zlib.compress(orjson.dumps(EVENT)))

    assert parse_store_body(body, LIMITS) == EVENT


def test_a_store_body_may_be_base64_of_plain_json() -> None:
    assert parse_store_body(base64.b64encode(orjson.dumps(EVENT)), LIMITS) == EVENT


def test_a_store_event_exactly_at_max_event_size_is_accepted() -> None:
    plain = orjson.dumps(EVENT)
    limits = small(max_event_size=len(plain))

    assert parse_store_body(plain, limits) == EVENT
    assert parse_store_body(base64.b64encode(zlib.compress(plain)), limits) == EVENT


@pytest.mark.parametrize("encode", ["plain", "base64", "base64+zlib"])
def test_a_store_event_over_max_event_size_is_413(encode: str) -> None:
    plain = orjson.dumps(EVENT)
    body = {
        "plain": plain,
        "base64": base64.b64encode(plain),
        "base64+zlib": base64.b64encode(zlib.compress(plain)),
    }[encode]

    with pytest.raises(PayloadTooLarge) as caught:
        parse_store_body(body, small(max_event_size=len(plain) - 1))
    assert caught.value.item_type == "event"


@pytest.mark.parametrize(
    "body",
    [b"", b"not base64!", base64.b64encode(b"\x78\x9cbroken"), b"[1,2]", b"{oops"],
)
def test_a_store_body_that_does_not_decode_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_store_body(body, LIMITS)
