"""Severity classification: which failures are errors and which are only warnings.

A report's level decides who gets paged, so it is chosen from what is known about the
failure, in this order:

1. a ``FaultlensError`` subclass's own ``severity``;
2. the first matching rule given to ``init(severity_rules=...)``;
3. the default rules below;
4. the level the event already has (``error`` for exceptions, the log level for logs).

Default rules:

- ``KeyboardInterrupt``, ``SystemExit``, ``MemoryError``, ``RecursionError`` → fatal
- HTTP status 5xx → error; HTTP status 4xx → warning (the client's mistake, not ours)
- logger level CRITICAL → fatal (already so in the event)

A rule matches on any of exception type (the class or a subclass, by class or dotted
name), error code, HTTP status (one value or an inclusive range) and logger name
(exact, or a prefix ending in "."); every field it gives must match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from faultlens_sdk.errors import SEVERITIES, FaultlensError, Severity


@dataclass(frozen=True, slots=True)
class SeverityRule:
    """Map failures that match every given field to ``severity``."""

    severity: Severity
    exception: type[BaseException] | str | None = None
    code: str | None = None
    status: int | tuple[int, int] | None = None
    logger: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        if (self.exception, self.code, self.status, self.logger) == (None,) * 4:
            raise ValueError("a severity rule needs at least one field to match")

    def matches(
        self,
        exc: BaseException | None,
        code: str | None,
        status: int | None,
        logger: str | None,
    ) -> bool:
        if self.exception is not None and not _is_instance(exc, self.exception):
            return False
        if self.code is not None and code != self.code:
            return False
        if self.status is not None:
            if status is None:
                return False
            low, high = (
                self.status if isinstance(self.status, tuple) else (self.status,) * 2
            )
            if not low <= status <= high:
                return False
        return self.logger is None or _logger_matches(logger, self.logger)


def _is_instance(exc: BaseException | None, wanted: type[BaseException] | str) -> bool:
    if exc is None:
        return False
    if isinstance(wanted, type):
        return isinstance(exc, wanted)
    return any(
        wanted in (k.__qualname__, f"{k.__module__}.{k.__qualname__}")
        for k in type(exc).__mro__
    )


def _logger_matches(logger: str | None, wanted: str) -> bool:
    if logger is None:
        return False
    if wanted.endswith("."):
        return logger.startswith(wanted) or logger == wanted[:-1]
    return logger == wanted


DEFAULT_RULES: tuple[SeverityRule, ...] = (
    SeverityRule("fatal", exception=KeyboardInterrupt),
    SeverityRule("fatal", exception=SystemExit),
    SeverityRule("fatal", exception=MemoryError),
    SeverityRule("fatal", exception=RecursionError),
    SeverityRule("error", status=(500, 599)),
    SeverityRule("warning", status=(400, 499)),
)


class SeverityClassifier:
    """Applies the application's rules, then the defaults."""

    def __init__(self, rules: Iterable[SeverityRule] = ()) -> None:
        self.rules: Sequence[SeverityRule] = (*rules, *DEFAULT_RULES)

    def classify(
        self,
        exc: BaseException | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        logger: str | None = None,
    ) -> Severity | None:
        """The severity for this failure, or ``None`` to keep the event's own."""
        if isinstance(exc, FaultlensError):
            return exc.severity
        for rule in self.rules:
            if rule.matches(exc, code, status, logger):
                return rule.severity
        return None

    def event_processor(
        self, event: dict[str, Any], hint: dict[str, Any]
    ) -> dict[str, Any]:
        """Set ``event["level"]`` from the exception, tags and logger of the event."""
        exc_info = hint.get("exc_info")
        exc = exc_info[1] if exc_info else None
        tags = event.get("tags") or {}
        status = str(tags.get("http.status_code", ""))
        level = self.classify(
            exc,
            code=tags.get("error.code"),
            status=int(status) if status.isdigit() else None,
            logger=event.get("logger"),
        )
        if level is not None:
            event["level"] = level
        return event
