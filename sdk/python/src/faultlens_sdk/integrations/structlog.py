"""A structlog processor: request context into the event dict, log entries to Faultlens.

Put it in the chain before the renderer, and before ``format_exc_info`` or
``dict_tracebacks`` (they replace ``exc_info`` with text, and the report needs the
exception itself)::

    import structlog
    from faultlens_sdk.integrations.structlog import faultlens_processor

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            faultlens_processor,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    )

For every entry it adds ``request_id`` and ``tenant`` (inside a request, unless the
entry already has them). Entries at ERROR and above (``log.exception`` included)
become events: with the exception when ``exc_info`` is given, else a message event;
``logger`` is the logger's name (the ``logger`` key that ``add_logger_name`` sets, or
the wrapped stdlib logger's name) and the entry's other keys become ``extra``.
Entries from INFO up to ERROR become breadcrumbs. ``FaultlensProcessor(level=...,
event_level=...)`` changes both thresholds; ``None`` turns either off.

Wrapping stdlib loggers (``structlog.stdlib.LoggerFactory``) works too: the record
that structlog then hands to the stdlib logger is not reported a second time by
``init``'s logging integration.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

from sentry_sdk.utils import capture_internal_exceptions

from faultlens_sdk.integrations import (
    ExcInfo,
    add_log_breadcrumb,
    announce_stdlib_record,
    as_exc_info,
    capture_log_event,
    clear_announcement,
    request_fields,
)

__all__ = ["FaultlensProcessor", "faultlens_processor"]

EventDict = MutableMapping[str, Any]

# structlog's method names (stdlib's and its own), and the aliases other wrapped
# loggers use.
_LEVELS = {
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "exception": logging.ERROR,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "failure": logging.ERROR,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "msg": logging.INFO,
    "debug": logging.DEBUG,
    "trace": 5,
}

# Keys that describe the entry rather than add to it; the rest become ``extra``.
_NOT_EXTRA = frozenset(
    {
        "event",
        "level",
        "logger",
        "logger_name",
        "timestamp",
        "exc_info",
        "exception",
        "stack_info",
        "positional_args",
    }
)


class FaultlensProcessor:
    """The processor; ``faultlens_processor`` is an instance with the defaults.

    ``level``: entries at or above it (and below ``event_level``) become
    breadcrumbs. ``event_level``: entries at or above it become events.
    """

    def __init__(
        self,
        *,
        level: int | None = logging.INFO,
        event_level: int | None = logging.ERROR,
    ) -> None:
        self.level = level
        self.event_level = event_level

    def __call__(
        self, logger: Any, method_name: str, event_dict: EventDict
    ) -> EventDict:
        added = []
        for key, value in request_fields().items():
            if key not in event_dict:
                event_dict[key] = value
                added.append(key)
        levelno = _levelno(method_name, event_dict)
        as_event = self.event_level is not None and levelno >= self.event_level
        as_crumb = self.level is not None and levelno >= self.level
        if not (as_event or as_crumb):
            clear_announcement()
            return event_dict
        # A failure here must not turn a log call into an exception in the caller;
        # sentry-sdk keeps the error for its own debug output.
        with capture_internal_exceptions():
            self._report(logger, method_name, event_dict, levelno, added, as_event)
        return event_dict

    def _report(
        self,
        logger: Any,
        method_name: str,
        event_dict: EventDict,
        levelno: int,
        added: list[str],
        as_event: bool,
    ) -> None:
        name = _logger_name(logger, event_dict)
        template, params, message = _message(event_dict)
        extra = {
            key: value
            for key, value in event_dict.items()
            if isinstance(key, str)
            and key not in _NOT_EXTRA
            and key not in added
            and not key.startswith("_")
        }
        if as_event:
            capture_log_event(
                levelno=levelno,
                logger=name,
                message=message,
                template=template,
                params=params,
                exc_info=_exc_info(method_name, event_dict),
                extra=extra,
                mechanism="structlog",
            )
        else:
            add_log_breadcrumb(
                levelno=levelno, logger=name, message=message, data=extra
            )
        if isinstance(logger, logging.Logger):
            announce_stdlib_record(logger, levelno)
        else:
            clear_announcement()


faultlens_processor = FaultlensProcessor()


def _levelno(method_name: str, event_dict: EventDict) -> int:
    levelno = _LEVELS.get(method_name)
    if levelno is None:
        # ``log.log(level, ...)`` on some wrappers, or a custom method: the
        # ``level`` key (from ``add_log_level``) may still say what it was.
        level = event_dict.get("level")
        if isinstance(level, int):
            return level
        levelno = _LEVELS.get(str(level).lower(), logging.NOTSET)
    return levelno


def _logger_name(logger: Any, event_dict: EventDict) -> str | None:
    for key in ("logger", "logger_name"):
        value = event_dict.get(key)
        if isinstance(value, str) and value:
            return value
    name = getattr(logger, "name", None)
    return name if isinstance(name, str) and name else None


def _message(
    event_dict: EventDict,
) -> tuple[str, tuple[Any, ...] | Mapping[str, Any], str]:
    """``(template, params, formatted)``.

    structlog's stdlib ``BoundLogger`` keeps ``%``-style arguments apart until
    ``PositionalArgumentsFormatter`` runs; the template groups such entries.
    """
    event = event_dict.get("event")
    template = "" if event is None else str(event)
    args = event_dict.get("positional_args")
    if not isinstance(args, tuple) or not args:
        return template, (), template
    params: tuple[Any, ...] | Mapping[str, Any] = args
    if len(args) == 1 and isinstance(args[0], Mapping):
        params = args[0]
    try:
        formatted = template % params
    except (TypeError, ValueError, KeyError):
        formatted = template
    return template, params, formatted


def _exc_info(method_name: str, event_dict: EventDict) -> ExcInfo | None:
    value = event_dict.get("exc_info")
    if value is True or (value is None and method_name == "exception"):
        return as_exc_info(sys.exc_info())
    return as_exc_info(value)
