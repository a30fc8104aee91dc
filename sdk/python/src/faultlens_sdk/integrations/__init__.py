"""Bridges from logging libraries to Faultlens.

- ``faultlens_sdk.integrations.logging``: request id and tenant on stdlib log
  records, for formatters (``%(request_id)s``); ``init`` already turns records into
  events and breadcrumbs through sentry-sdk's ``LoggingIntegration``.
- ``faultlens_sdk.integrations.structlog``: a processor for structlog's chain.
- ``faultlens_sdk.integrations.loguru``: a sink and a patcher for loguru.

All of them map levels alike (CRITICAL → fatal, ERROR → error, WARNING → warning,
INFO → info, DEBUG → debug) and report through ``sentry_sdk.capture_event``, so the
``before_send`` chain that ``init`` installs (enrichment, severity, rate limit)
applies to log events as to any other report.

This module holds what they share; it imports neither structlog nor loguru.
"""

from __future__ import annotations

# Not ``import logging``: the submodule ``faultlens_sdk.integrations.logging``, once
# imported, replaces a package global of that name.
import logging as stdlib_logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.utils import event_from_exception

from faultlens_sdk.context import RequestContext, current

#: What a log line shows for the request id or tenant outside a request.
PLACEHOLDER = "-"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

# Set while a tenant resolver runs. A resolver that logs (or whose ORM logs its
# queries) would otherwise ask for the tenant again from inside its own call.
_resolving: ContextVar[bool] = ContextVar("faultlens_resolving_tenant", default=False)


def event_level(levelno: int) -> str:
    """The Faultlens level for a numeric log level.

    Levels between the standard ones (loguru's SUCCESS, custom levels) take the
    nearest standard level below them.
    """
    if levelno >= stdlib_logging.CRITICAL:
        return "fatal"
    if levelno >= stdlib_logging.ERROR:
        return "error"
    if levelno >= stdlib_logging.WARNING:
        return "warning"
    if levelno >= stdlib_logging.INFO:
        return "info"
    return "debug"


def _tenant(ctx: RequestContext) -> str | None:
    if _resolving.get():
        return None
    token = _resolving.set(True)
    try:
        return ctx.tenant
    finally:
        _resolving.reset(token)


def request_fields() -> dict[str, str]:
    """``request_id`` and ``tenant`` of the current request; empty outside one.

    ``tenant`` is left out while it is unknown.
    """
    ctx = current()
    if ctx is None:
        return {}
    fields = {"request_id": ctx.request_id}
    tenant = _tenant(ctx)
    if tenant is not None:
        fields["tenant"] = tenant
    return fields


def record_fields() -> tuple[str, str]:
    """``(request_id, tenant)`` for a log line, with ``PLACEHOLDER`` for unknowns.

    Log formats name these fields unconditionally, so they always get a value.
    """
    fields = request_fields()
    return (
        fields.get("request_id", PLACEHOLDER),
        fields.get("tenant", PLACEHOLDER),
    )


def as_exc_info(value: Any) -> ExcInfo | None:
    """An ``exc_info`` triple from a triple or an exception; ``None`` otherwise."""
    if isinstance(value, BaseException):
        return type(value), value, value.__traceback__
    if (
        isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[1], BaseException)
    ):
        return type(value[1]), value[1], value[2]
    return None


def capture_log_event(
    *,
    levelno: int,
    logger: str | None,
    message: str,
    template: str | None = None,
    params: Sequence[Any] | Mapping[str, Any] = (),
    exc_info: ExcInfo | None = None,
    extra: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    mechanism: str = "logging",
) -> str | None:
    """Report one log entry as an event; its id, or ``None`` if it was not sent.

    With ``exc_info`` the event carries the exception and its stack trace, else it
    is a message event. ``template`` is the message before its ``params`` were
    filled in; the server groups message events by it.
    """
    client = sentry_sdk.get_client()
    if not client.is_active():
        return None
    event: dict[str, Any]
    hint: dict[str, Any]
    if exc_info is not None:
        sentry_event, hint = event_from_exception(
            exc_info,
            client_options=client.options,
            mechanism={"type": mechanism, "handled": True},
        )
        event = dict(sentry_event)
    else:
        event, hint = {}, {}
    event["level"] = event_level(levelno)
    if logger:
        event["logger"] = logger
    event["logentry"] = {
        "message": template if template is not None else message,
        "formatted": message,
        "params": list(params) if not isinstance(params, Mapping) else dict(params),
    }
    if extra:
        event["extra"] = dict(extra)
    if tags:
        event["tags"] = dict(tags)
    return sentry_sdk.capture_event(event, hint=hint)  # type: ignore[arg-type]


def add_log_breadcrumb(
    *,
    levelno: int,
    logger: str | None,
    message: str,
    timestamp: datetime | None = None,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Record one log entry as a breadcrumb on the current scope."""
    crumb: dict[str, Any] = {
        "type": "log",
        "level": event_level(levelno),
        "category": logger,
        "message": message,
        "data": dict(data or {}),
    }
    if timestamp is not None:
        crumb["timestamp"] = timestamp
    sentry_sdk.add_breadcrumb(crumb)


# When structlog renders through a stdlib logger, the record it hands over would be
# reported a second time by the LoggingIntegration that ``init`` installs, as a
# message made of the rendered line (a JSON blob or a dict's repr, timestamp and all,
# so every occurrence would open an issue of its own). The bridge that reported the
# entry announces the record to come; a filter on the integration's handlers drops
# that one record and nothing else.


@dataclass(slots=True)
class _Announced:
    name: str
    levelno: int
    record: stdlib_logging.LogRecord | None = None


_announced: ContextVar[_Announced | None] = ContextVar(
    "faultlens_announced_record", default=None
)


class _AlreadyReported(stdlib_logging.Filter):
    def filter(self, record: stdlib_logging.LogRecord) -> bool:
        announced = _announced.get()
        if (
            announced is None
            or announced.name != record.name
            or announced.levelno != record.levelno
        ):
            return True
        if announced.record is None:
            # The first record to match is the announced one; the event and the
            # breadcrumb handler both see it, later records do not match it.
            announced.record = record
        return announced.record is not record


_ALREADY_REPORTED = _AlreadyReported()


def announce_stdlib_record(logger: stdlib_logging.Logger, levelno: int) -> None:
    """Declare that the next record of ``logger`` at ``levelno`` is already reported.

    Only the next one, and only in this context (thread or task). Does nothing when
    the logger will not create that record, or when ``init`` set up no
    ``LoggingIntegration``.
    """
    if not logger.isEnabledFor(levelno):
        _announced.set(None)
        return
    integration = sentry_sdk.get_client().get_integration(LoggingIntegration)
    if integration is None:
        return
    # The integration keeps its handlers in private attributes; if a sentry-sdk
    # release renames them, the filter is simply not attached and the duplicate
    # is sent, which loses nothing.
    for attribute in ("_handler", "_breadcrumb_handler"):
        handler = getattr(integration, attribute, None)
        if isinstance(handler, stdlib_logging.Handler) and (
            _ALREADY_REPORTED not in handler.filters
        ):
            handler.addFilter(_ALREADY_REPORTED)
    _announced.set(_Announced(logger.name, levelno))


def clear_announcement() -> None:
    """Withdraw an announcement whose record never came (the chain dropped it)."""
    if _announced.get() is not None:
        _announced.set(None)
