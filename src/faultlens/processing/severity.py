"""Severity rules: let a project raise or lower the level of matching events.

An SDK's level says how the *code* felt about an error; a project often knows better
("a ``TimeoutError`` from the payments client pages someone", "anything from the
``healthcheck`` logger is noise"). Rules are tried in order and the first that
matches sets the level; with none matching, the event keeps its own level.

Patterns are exact strings or shell-style globs (``*``, ``?``, ``[...]``), matched
case-sensitively because exception types and logger names are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal, get_args

from faultlens.processing.normalize import LEVELS, normalize_level

RuleMatch = Literal["exception_type", "logger", "tag"]

_MATCH_KINDS: tuple[str, ...] = get_args(RuleMatch)
_RULE_KEYS = frozenset({"match", "pattern", "level", "key"})


@dataclass(frozen=True)
class SeverityRule:
    """One rule: events whose ``match`` target fits ``pattern`` get ``level``.

    ``exception_type`` matches any exception in the chain, by ``type`` or by
    ``module.type``; ``logger`` matches the logger name; ``tag`` matches the value of
    the tag named ``key``.
    """

    match: RuleMatch
    pattern: str
    level: str
    key: str | None = None

    def __post_init__(self) -> None:
        if self.match not in _MATCH_KINDS:
            raise ValueError(
                f"'match' must be one of {', '.join(_MATCH_KINDS)}; got {self.match!r}"
            )
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(
                f"'pattern' must be a non-empty string; got {self.pattern!r}"
            )
        if self.level not in LEVELS:
            raise ValueError(
                f"'level' must be one of {', '.join(LEVELS)}; got {self.level!r}"
            )
        self._check_key()

    def _check_key(self) -> None:
        if self.match == "tag" and (not isinstance(self.key, str) or not self.key):
            raise ValueError(
                f"a 'tag' rule needs 'key', the tag's name; got {self.key!r}. "
                'Example: {"match": "tag", "key": "tenant", "pattern": "acme*", ...}'
            )
        if self.match != "tag" and self.key is not None:
            raise ValueError(
                f"'key' only applies to 'tag' rules; remove it from this "
                f"{self.match!r} rule"
            )

    def matches(self, event: Mapping[str, Any]) -> bool:
        return any(_fits(candidate, self.pattern) for candidate in self._targets(event))

    def _targets(self, event: Mapping[str, Any]) -> list[str]:
        if self.match == "logger":
            return [event["logger"]] if isinstance(event.get("logger"), str) else []
        if self.match == "tag":
            tags = event.get("tags")
            value = tags.get(self.key) if isinstance(tags, Mapping) else None
            return [value] if isinstance(value, str) else []
        return _exception_types(event)


def classify(event: Mapping[str, Any], rules: Sequence[SeverityRule]) -> str:
    """The event's level after the first matching rule, if any."""
    for rule in rules:
        if rule.matches(event):
            return rule.level
    return normalize_level(event.get("level"))


def parse_rules(data: object) -> list[SeverityRule]:
    """Build rules from their JSON form, a list of objects with the rule's fields."""
    if not isinstance(data, list):
        raise ValueError(
            f"severity rules must be a JSON list of objects; got {type(data).__name__}"
        )
    return [_parse_rule(index, item) for index, item in enumerate(data)]


def _parse_rule(index: int, item: object) -> SeverityRule:
    where = f"severity rule #{index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object; got {type(item).__name__}")
    unknown = sorted(set(item) - _RULE_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(_RULE_KEYS))}"
        )
    missing = [name for name in ("match", "pattern", "level") if name not in item]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(map(repr, missing))}")

    try:
        return SeverityRule(
            match=item["match"],
            pattern=item["pattern"],
            level=item["level"],
            key=item.get("key"),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _exception_types(event: Mapping[str, Any]) -> list[str]:
    container = event.get("exception")
    values = container.get("values") if isinstance(container, Mapping) else None
    names: list[str] = []
    for exc in values if isinstance(values, list) else []:
        kind = exc.get("type") if isinstance(exc, Mapping) else None
        if not isinstance(kind, str):
            continue
        names.append(kind)
        if isinstance(exc.get("module"), str):
            names.append(f"{exc['module']}.{kind}")
    return names


def _fits(value: str, pattern: str) -> bool:
    return value == pattern or fnmatchcase(value, pattern)
