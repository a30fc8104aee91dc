"""Severity rules raise or lower an event's level."""

from __future__ import annotations

from typing import Any

import pytest

from faultlens.processing.severity import SeverityRule, classify, parse_rules
from tests.processing import normalized_sample


def event(**fields: Any) -> dict[str, Any]:
    return {"level": "error", **fields}


def payment_error(level: str = "warning") -> dict[str, Any]:
    exception = {"type": "GatewayTimeout", "module": "shop.payments", "value": "slow"}
    return event(level=level, exception={"values": [exception]})


def test_exception_type_rule_raises_the_level() -> None:
    rules = [SeverityRule("exception_type", "GatewayTimeout", "fatal")]

    assert classify(payment_error("warning"), rules) == "fatal"


def test_exception_type_matches_module_qualified_names_and_globs() -> None:
    qualified = [
        SeverityRule("exception_type", "shop.payments.GatewayTimeout", "fatal")
    ]
    glob = [SeverityRule("exception_type", "shop.*.Gateway*", "fatal")]
    elsewhere = [SeverityRule("exception_type", "billing.*", "fatal")]

    assert classify(payment_error(), qualified) == "fatal"
    assert classify(payment_error(), glob) == "fatal"
    assert classify(payment_error(), elsewhere) == "warning"


def test_exception_type_rule_matches_a_cause_in_the_chain() -> None:
    chained = normalized_sample("py-02")
    rules = [SeverityRule("exception_type", "KeyError", "fatal")]

    assert chained["exception"]["values"][-1]["type"] != "KeyError"
    assert classify(chained, rules) == "fatal"


def test_logger_rule_lowers_the_level() -> None:
    logged = normalized_sample("py-04")
    rules = [SeverityRule("logger", "probe.*", "debug")]

    assert logged["level"] == "error"
    assert classify(logged, rules) == "debug"
    assert classify(logged, [SeverityRule("logger", "probe", "debug")]) == "error"


def test_tag_rule_matches_the_named_tag_value() -> None:
    rules = [SeverityRule("tag", "clinic-*", "fatal", key="tenant")]

    assert classify(event(tags={"tenant": "clinic-3"}), rules) == "fatal"
    assert classify(event(tags={"tenant": "lab-1"}), rules) == "error"
    assert classify(event(tags={"site": "clinic-3"}), rules) == "error"


def test_matching_is_case_sensitive() -> None:
    rules = [SeverityRule("exception_type", "gatewaytimeout", "fatal")]

    assert classify(payment_error(), rules) == "warning"


def test_first_matching_rule_wins() -> None:
    rules = [
        SeverityRule("logger", "healthcheck", "debug"),
        SeverityRule("exception_type", "GatewayTimeout", "info"),
        SeverityRule("exception_type", "*", "fatal"),
    ]

    assert classify(payment_error(), rules) == "info"
    assert classify({**payment_error(), "logger": "healthcheck"}, rules) == "debug"


def test_without_a_match_the_level_is_the_events_own_normalised() -> None:
    rules = [SeverityRule("logger", "other", "fatal")]

    assert classify(event(level="warn"), rules) == "warning"
    assert classify({}, rules) == "error"


def test_parse_rules_builds_rules_from_json_objects() -> None:
    data = [
        {"match": "exception_type", "pattern": "Timeout*", "level": "fatal"},
        {"match": "tag", "key": "tenant", "pattern": "acme", "level": "info"},
    ]

    assert parse_rules(data) == [
        SeverityRule("exception_type", "Timeout*", "fatal"),
        SeverityRule("tag", "acme", "info", key="tenant"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"match": "logger"}, "must be a JSON list"),
        (["logger"], r"rule #0: expected an object; got str"),
        (
            [{"match": "logger", "pattern": "x", "level": "info", "patern": "y"}],
            r"rule #0: unknown field\(s\) 'patern'",
        ),
        (
            [{"match": "logger", "level": "info"}],
            r"rule #0: missing field\(s\) 'pattern'",
        ),
        (
            [
                {"match": "logger", "pattern": "x", "level": "info"},
                {"match": "message", "pattern": "x", "level": "info"},
            ],
            r"rule #1: 'match' must be one of exception_type, logger, tag; "
            r"got 'message'",
        ),
        (
            [{"match": "logger", "pattern": "x", "level": "loud"}],
            r"'level' must be one of fatal, error, warning, info, debug; got 'loud'",
        ),
        ([{"match": "logger", "pattern": "", "level": "info"}], "non-empty string"),
        ([{"match": "logger", "pattern": 3, "level": "info"}], "non-empty string"),
        ([{"match": "tag", "pattern": "x", "level": "info"}], "needs 'key'"),
        (
            [{"match": "logger", "pattern": "x", "level": "info", "key": "k"}],
            "'key' only applies to 'tag' rules",
        ),
    ],
)
def test_parse_rules_explains_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules(data)
