"""Normalisation of event payloads into the one stored shape."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from faultlens.config import Limits
from faultlens.processing.normalize import (
    MAX_BREADCRUMBS,
    MAX_FRAMES,
    MAX_MESSAGE_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_TITLE_LENGTH,
    event_culprit,
    event_search_tags,
    event_title,
    event_user_key,
    normalize_event,
)
from tests.processing import CLIENT_IP, normalized_sample

EVENT_ID = "b748f040927e45beb0793f465a037e79"
MOMENT = datetime(2026, 12, 3, 18, 16, 13, 617143, tzinfo=UTC)
RECEIVED = MOMENT.timestamp() + 2.0
LIMITS = Limits()


def normalize(raw: dict[str, Any], client_ip: str | None = CLIENT_IP) -> dict[str, Any]:
    return normalize_event(
        raw,
        event_id=EVENT_ID,
        received_at=RECEIVED,
        client_ip=client_ip,
        limits=LIMITS,
    )


# Timestamps


def test_float_timestamp_is_kept_and_receipt_recorded() -> None:
    event = normalize({"timestamp": MOMENT.timestamp()})

    assert event["timestamp"] == MOMENT.timestamp()
    assert event["received"] == RECEIVED
    assert "_meta" not in event


@pytest.mark.parametrize(
    "text",
    [
        MOMENT.isoformat().replace("+00:00", "Z"),
        MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
        MOMENT.astimezone(timezone(timedelta(hours=-8))).isoformat(),
        MOMENT.replace(tzinfo=None).isoformat(),
        MOMENT.replace(tzinfo=None).isoformat(sep=" "),
        MOMENT.strftime("%Y-%m-%dT%H:%M:%S.%f000z"),
    ],
)
def test_rfc3339_strings_with_z_offset_or_no_zone_read_as_the_same_instant(
    text: str,
) -> None:
    event = normalize({"timestamp": text})

    assert event["timestamp"] == pytest.approx(MOMENT.timestamp(), abs=1e-6)
    assert "_meta" not in event


def test_timestamp_older_than_max_age_is_clamped_and_original_kept() -> None:
    old = RECEIVED - LIMITS.max_event_age - 3600

    event = normalize({"timestamp": old})

    assert event["timestamp"] == RECEIVED - LIMITS.max_event_age
    assert event["_meta"]["timestamp"] == {"original": old, "reason": "clamped"}


def test_timestamp_in_the_future_is_clamped_and_original_string_kept() -> None:
    future = datetime.fromtimestamp(RECEIVED + 7200, UTC).isoformat()

    event = normalize({"timestamp": future})

    assert event["timestamp"] == RECEIVED + LIMITS.max_event_future
    assert event["_meta"]["timestamp"] == {"original": future, "reason": "clamped"}


@pytest.mark.parametrize(
    "bad", ["yesterday", "2026-13-45T00:00:00Z", "2026-12-03T25:00:00Z", True, {}]
)
def test_unparseable_timestamp_becomes_receipt_time_marked_invalid(bad: Any) -> None:
    event = normalize({"timestamp": bad})

    assert event["timestamp"] == RECEIVED
    assert event["_meta"]["timestamp"]["reason"] == "invalid"
    assert event["_meta"]["timestamp"]["original"] == (
        bad if isinstance(bad, str) else str(bad)
    )


def test_missing_timestamp_becomes_receipt_time_without_a_note() -> None:
    event = normalize({})

    assert event["timestamp"] == RECEIVED
    assert "_meta" not in event


# Levels


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("warning", "warning"),
        ("WARNING", "warning"),
        ("warn", "warning"),
        ("log", "info"),
        ("critical", "fatal"),
        (10, "debug"),
        (20, "info"),
        (30, "warning"),
        (40, "error"),
        (50, "fatal"),
        ("50", "fatal"),
        (None, "error"),
        ("verbose", "error"),
        (35, "error"),
        (True, "error"),
    ],
)
def test_levels_map_to_the_five_known_ones(given: Any, expected: str) -> None:
    assert normalize({"level": given})["level"] == expected


# Exceptions and breadcrumbs


FRAME = {
    "filename": "orders.py",
    "function": "charge",
    "module": "shop.orders",
    "lineno": 41,
    "colno": 7,
    "in_app": True,
    "context_line": "    raise PaymentError(order)",
}
EXCEPTION = {
    "type": "PaymentError",
    "value": "declined",
    "stacktrace": {"frames": [FRAME]},
}


def test_exception_as_bare_list_or_values_normalises_the_same() -> None:
    bare = normalize({"exception": [EXCEPTION]})
    wrapped = normalize({"exception": {"values": [EXCEPTION]}})

    assert bare["exception"] == wrapped["exception"]
    assert bare["exception"]["values"][0]["stacktrace"]["frames"] == [FRAME]


def test_exception_entries_that_are_not_objects_are_dropped() -> None:
    event = normalize({"exception": {"values": ["oops", 3, None, EXCEPTION]}})

    assert [exc["type"] for exc in event["exception"]["values"]] == ["PaymentError"]


def test_exception_without_frames_keeps_type_and_value() -> None:
    event = normalize({"exception": [{"type": "KeyError", "value": "'id'"}]})

    assert event["exception"]["values"] == [{"type": "KeyError", "value": "'id'"}]


def test_overlong_stack_keeps_both_ends_and_notes_the_cut() -> None:
    frames = [{**FRAME, "function": f"step{i}"} for i in range(MAX_FRAMES + 50)]

    event = normalize({"exception": [{**EXCEPTION, "stacktrace": {"frames": frames}}]})

    stacktrace = event["exception"]["values"][0]["stacktrace"]
    assert len(stacktrace["frames"]) == MAX_FRAMES
    assert stacktrace["frames"][0]["function"] == "step0"
    assert stacktrace["frames"][-1]["function"] == frames[-1]["function"]
    assert stacktrace["frames_omitted"] == [MAX_FRAMES // 2, 50 + MAX_FRAMES // 2]


def test_breadcrumbs_list_or_values_get_float_timestamps() -> None:
    crumbs = [
        {"timestamp": MOMENT.isoformat(), "message": "python style"},
        {"timestamp": MOMENT.timestamp(), "message": "browser style"},
        {"timestamp": "not a time", "message": "bad time", "level": "warn"},
    ]

    bare = normalize({"breadcrumbs": crumbs})
    wrapped = normalize({"breadcrumbs": {"values": crumbs}})

    assert bare["breadcrumbs"] == wrapped["breadcrumbs"]
    first, second, third = bare["breadcrumbs"]["values"]
    assert first["timestamp"] == pytest.approx(MOMENT.timestamp(), abs=1e-6)
    assert second["timestamp"] == MOMENT.timestamp()
    assert "timestamp" not in third
    assert third["level"] == "warning"


def test_only_the_newest_breadcrumbs_are_kept() -> None:
    crumbs = [{"message": f"crumb {i}"} for i in range(MAX_BREADCRUMBS + 5)]

    values = normalize({"breadcrumbs": crumbs})["breadcrumbs"]["values"]

    assert len(values) == MAX_BREADCRUMBS
    assert values[-1]["message"] == crumbs[-1]["message"]
    assert values[0]["message"] == crumbs[5]["message"]


# Messages


def test_plain_message_becomes_logentry_and_stays_displayable() -> None:
    event = normalize({"message": "disk almost full"})

    assert event["logentry"] == {
        "message": "disk almost full",
        "params": [],
        "formatted": "disk almost full",
    }
    assert event["message"] == "disk almost full"


def test_message_object_is_formatted_from_percent_template() -> None:
    event = normalize(
        {"message": {"message": "Order %s failed for %s", "params": [7, "jo"]}}
    )

    assert event["logentry"]["message"] == "Order %s failed for %s"
    assert event["logentry"]["formatted"] == "Order 7 failed for jo"
    assert event["message"] == "Order 7 failed for jo"


def test_logentry_with_given_formatted_keeps_it_and_wins_over_message() -> None:
    logentry = {
        "message": "Order %s failed",
        "params": [1],
        "formatted": "Order #1 failed",
    }

    event = normalize({"logentry": logentry, "message": "other text"})

    assert event["logentry"] == logentry
    assert event["message"] == "Order #1 failed"


@pytest.mark.parametrize(
    ("template", "params", "expected"),
    [
        ("user {} in {}", ["jo", "eu"], "user jo in eu"),
        ("user {name}", {"name": "jo"}, "user jo"),
        ("user %(name)s", {"name": "jo"}, "user jo"),
        ("total %.2f", [3.14159], "total 3.14"),
    ],
)
def test_templates_are_formatted_in_either_style(
    template: str, params: Any, expected: str
) -> None:
    event = normalize({"logentry": {"message": template, "params": params}})

    assert event["logentry"]["formatted"] == expected


@pytest.mark.parametrize(
    ("template", "params"),
    [
        ("count %d", ["not a number"]),
        ("%s and %s", ["only one"]),
        ("pad %999999999d", [1]),
        ("pad {:>999999999}", [1]),
        ("star %*d", [5, 1]),
        ("{0.__class__.__mro__}", ["x"]),
        ("{missing}", ["x"]),
        ("{unclosed", ["x"]),
        ("%(name)s", ["positional"]),
    ],
)
def test_bad_or_dangerous_templates_never_raise_and_show_the_template(
    template: str, params: Any
) -> None:
    event = normalize({"logentry": {"message": template, "params": params}})

    assert event["logentry"]["formatted"] == template


def test_long_message_is_cut_to_the_bound() -> None:
    event = normalize({"message": "x" * (MAX_MESSAGE_LENGTH * 2)})

    assert len(event["message"]) == MAX_MESSAGE_LENGTH


# Tags, user, other fields


def test_tags_become_strings_and_none_is_dropped() -> None:
    event = normalize(
        {
            "tags": {
                "shard": 7,
                "ratio": 0.5,
                "beta": True,
                "gone": None,
                "nested": {"b": 1, "a": [2]},
                "k" * 300: "v" * 300,
            }
        }
    )

    tags = event["tags"]
    assert tags["shard"] == "7"
    assert tags["ratio"] == "0.5"
    assert tags["beta"] == "true"
    assert "gone" not in tags
    assert tags["nested"] == '{"a":[2],"b":1}'
    assert tags["k" * MAX_TAG_LENGTH] == "v" * MAX_TAG_LENGTH


def test_tags_as_list_of_pairs_become_a_mapping() -> None:
    event = normalize({"tags": [["tenant", "acme"], ["shard", 3], ["broken"], "x"]})

    assert event["tags"] == {"tenant": "acme", "shard": "3"}


def test_tag_count_is_bounded() -> None:
    event = normalize({"tags": {f"t{i}": "v" for i in range(MAX_TAGS * 2)}})

    assert len(event["tags"]) == MAX_TAGS


def test_auto_ip_address_is_filled_from_the_connection() -> None:
    event = normalize({"user": {"id": "u-1", "ip_address": "{{auto}}"}})

    assert event["user"] == {"id": "u-1", "ip_address": CLIENT_IP}


def test_infer_ip_auto_fills_a_missing_address() -> None:
    event = normalize(
        {"user": {"id": "u-1"}, "sdk": {"settings": {"infer_ip": "auto"}}}
    )

    assert event["user"]["ip_address"] == CLIENT_IP


def test_infer_ip_auto_keeps_an_address_the_sdk_sent() -> None:
    event = normalize(
        {
            "user": {"ip_address": "198.51.100.4"},
            "sdk": {"settings": {"infer_ip": "auto"}},
        }
    )

    assert event["user"]["ip_address"] == "198.51.100.4"


def test_without_an_auto_request_no_address_is_added() -> None:
    event = normalize({"user": {"id": "u-1"}, "request": {"env": {"REMOTE_ADDR": "x"}}})

    assert event["user"] == {"id": "u-1"}


def test_auto_ip_without_a_known_client_is_removed() -> None:
    event = normalize({"user": {"id": 5, "ip_address": "{{auto}}"}}, client_ip=None)

    assert event["user"] == {"id": "5"}


def test_known_fields_are_kept_and_unknown_ones_dropped() -> None:
    raw = {
        "environment": "staging",
        "release": "shop@1.2.3",
        "dist": 7,
        "server_name": "web-1",
        "transaction": "/checkout",
        "logger": "shop.orders",
        "fingerprint": ["{{ default }}", "eu", 3, None],
        "contexts": {"os": {"name": "Linux"}},
        "extra": {"argv": ["x"]},
        "request": {"url": "http://example.invalid/"},
        "sdk": {"name": "sentry.python"},
        "modules": {"flask": "3.0"},
        "made_up": "dropped",
        "_meta": {"extra": {"": {"len": 9}}},
    }

    event = normalize(copy.deepcopy(raw))

    assert event["platform"] == "other"
    assert event["dist"] == "7"
    assert event["fingerprint"] == ["{{ default }}", "eu", "3"]
    for key in ("environment", "release", "server_name", "transaction", "logger"):
        assert event[key] == raw[key]
    for key in ("contexts", "extra", "request", "sdk", "modules"):
        assert event[key] == raw[key]
    assert "made_up" not in event
    assert "_meta" not in event


def test_non_list_fingerprint_and_non_object_fields_are_dropped() -> None:
    event = normalize({"fingerprint": "{{ default }}", "contexts": [1], "user": "jo"})

    assert "fingerprint" not in event
    assert "contexts" not in event
    assert "user" not in event


def test_the_input_is_not_changed() -> None:
    raw = {
        "timestamp": "garbage",
        "exception": [EXCEPTION],
        "breadcrumbs": [{"timestamp": MOMENT.isoformat()}],
        "user": {"ip_address": "{{auto}}"},
        "tags": {"shard": 7},
        "message": "hello",
    }
    before = copy.deepcopy(raw)

    normalize(raw)

    assert raw == before


def test_normalising_leaves_the_input_alone() -> None:
    raw = {
        "timestamp": "2026-12-03T10:00:00",
        "request": {"headers": {"Cookie": "session=secret"}},
        "exception": [{**EXCEPTION, "mechanism": {"type": "generic"}}],
        "breadcrumbs": [{"timestamp": "2026-12-03T09:59:00Z", "message": "m"}],
        "user": {"id": "u-1", "ip_address": "{{auto}}", "data": {"record": "MRN-1"}},
        "tags": {"shard": 7},
    }
    before = copy.deepcopy(raw)

    normalize(raw)

    assert raw == before


# Real SDK payloads


def test_python_sample_normalises_tags_user_and_timestamp() -> None:
    event = normalized_sample("py-01")

    assert isinstance(event["timestamp"], float)
    assert event["tags"]["shard"] == "7"
    assert event["user"]["ip_address"] == CLIENT_IP
    assert event["breadcrumbs"]["values"]
    assert all(
        isinstance(c["timestamp"], float) for c in event["breadcrumbs"]["values"]
    )


def test_browser_sample_infers_ip_and_wraps_bare_breadcrumbs() -> None:
    event = normalized_sample("js-05")

    assert event["user"]["ip_address"] == CLIENT_IP
    assert event["breadcrumbs"]["values"][0]["category"] == "ui.click"
    assert len(event["exception"]["values"]) == 2


def test_logging_sample_keeps_template_and_params() -> None:
    event = normalized_sample("py-04")

    assert event["logentry"]["message"] == "Order %s failed for user %s"
    assert event["logentry"]["params"] == [1234, "jane"]
    assert event["message"] == "Order 1234 failed for user jane"
    assert event["logger"] == "probe.orders"


# Titles, culprits, users, search tags


def test_title_is_type_and_value_of_the_primary_exception() -> None:
    event = normalized_sample("py-02")

    primary = event["exception"]["values"][-1]
    assert event_title(event) == f"{primary['type']}: {primary['value']}"


def test_title_of_a_synthetic_exception_is_the_message() -> None:
    event = normalized_sample("js-09")

    assert event_title(event) == event["message"]
    assert "type" not in event["exception"]["values"][-1]


def test_title_falls_back_to_the_first_message_line_then_a_placeholder() -> None:
    assert event_title(normalize({"message": "\nfirst line\nsecond"})) == "first line"
    assert event_title(normalize({})) == "<unlabeled event>"


def test_title_is_bounded() -> None:
    event = normalize({"exception": [{"type": "E", "value": "v" * 1000}]})

    assert len(event_title(event)) == MAX_TITLE_LENGTH


def test_culprit_is_the_transaction_else_the_last_in_app_frame() -> None:
    library = {**FRAME, "module": "requests.api", "function": "get", "in_app": False}
    stack = {"frames": [FRAME, library]}
    event = normalize({"exception": [{**EXCEPTION, "stacktrace": stack}]})

    assert event_culprit(event) == "shop.orders in charge"
    assert event_culprit({**event, "transaction": "/checkout"}) == "/checkout"
    assert event_culprit(normalize({"message": "no stack"})) == ""


def test_user_key_prefers_id_then_email_then_username_then_ip() -> None:
    full = {"id": "u-1", "email": "a@b.invalid", "username": "ab", "ip_address": "::1"}
    keys = []
    for drop in ("", "id", "email", "username", "ip_address"):
        full.pop(drop, None)
        keys.append(event_user_key(normalize({"user": dict(full)})))

    assert keys == ["id:u-1", "email:a@b.invalid", "username:ab", "ip:::1", None]


def test_search_tags_add_builtins_to_the_event_tags() -> None:
    event = normalized_sample("py-01")

    tags = event_search_tags(event)

    assert tags["tenant"] == "acme"
    assert tags["environment"] == event["environment"]
    assert tags["release"] == event["release"]
    assert tags["level"] == event["level"]
    assert tags["user"] == event_user_key(event)
    assert "logger" not in tags
