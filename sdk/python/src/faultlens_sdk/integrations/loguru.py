"""A loguru sink that reports to Faultlens, and a patcher that adds request context.

::

    from loguru import logger
    from faultlens_sdk.integrations.loguru import faultlens_patcher, faultlens_sink

    logger.configure(patcher=faultlens_patcher)
    logger.add(faultlens_sink, level="INFO")
    logger.add(sys.stderr, format="{extra[request_id]} {extra[tenant]} {message}")

The patcher puts ``request_id`` and ``tenant`` into ``record["extra"]`` (``"-"``
outside a request, so formats can always name them; a value bound with
``logger.bind`` wins). The sink turns records at ERROR and above into events, with
the exception if the record has one (``logger.exception``, ``opt(exception=...)``),
``logger`` set to the module that logged and ``extra`` to the record's extra; INFO
up to ERROR become breadcrumbs. ``FaultlensSink(level=..., event_level=...)``
changes both thresholds; ``None`` turns either off.

loguru fills in ``{}`` arguments before any sink sees the record, so a message event
carries the formatted message only: the server groups such events by their text.
Log the variable parts with ``logger.bind(...)`` or keyword arguments (they go to
``extra``) to keep one issue per kind of message.

Add the sink without ``enqueue=True``: it then runs in the thread that logged, so the
event gets that request's scope (breadcrumbs, user). With ``enqueue=True`` it runs in
loguru's worker thread; the request id and tenant still reach the event as tags if
the patcher is configured, since they travel in the record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sentry_sdk.utils import capture_internal_exceptions

from faultlens_sdk.context import current
from faultlens_sdk.integrations import (
    PLACEHOLDER,
    add_log_breadcrumb,
    as_exc_info,
    capture_log_event,
    record_fields,
)

__all__ = ["FaultlensSink", "faultlens_patcher", "faultlens_sink"]

FIELDS = ("request_id", "tenant")


def faultlens_patcher(record: dict[str, Any]) -> None:
    """Add ``request_id`` and ``tenant`` to ``record["extra"]``; keeps bound values."""
    request_id, tenant = record_fields()
    extra = record["extra"]
    extra.setdefault("request_id", request_id)
    extra.setdefault("tenant", tenant)


class FaultlensSink:
    """The sink; ``faultlens_sink`` is an instance with the defaults.

    ``level``: records at or above it (and below ``event_level``) become
    breadcrumbs. ``event_level``: records at or above it become events. loguru's
    own levels compare as the stdlib's do (TRACE 5 ... CRITICAL 50).
    """

    def __init__(
        self,
        *,
        level: int | None = logging.INFO,
        event_level: int | None = logging.ERROR,
    ) -> None:
        self.level = level
        self.event_level = event_level

    def __call__(self, message: Any) -> None:
        record: Mapping[str, Any] = message.record
        levelno = int(record["level"].no)
        as_event = self.event_level is not None and levelno >= self.event_level
        as_crumb = self.level is not None and levelno >= self.level
        if not (as_event or as_crumb):
            return
        # A failure here must not surface as a loguru "logging error"; sentry-sdk
        # keeps the error for its own debug output.
        with capture_internal_exceptions():
            self._report(record, levelno, as_event)

    def _report(self, record: Mapping[str, Any], levelno: int, as_event: bool) -> None:
        name = record.get("name")
        logger = name if isinstance(name, str) else None
        text = str(record["message"])
        raw_extra: Mapping[str, Any] = record.get("extra") or {}
        extra = {
            key: value
            for key, value in raw_extra.items()
            if not (key in FIELDS and value == PLACEHOLDER)
        }
        if not as_event:
            add_log_breadcrumb(
                levelno=levelno,
                logger=logger,
                message=text,
                timestamp=record.get("time"),
                data=extra,
            )
            return
        tags: dict[str, str] = {}
        if current() is None:
            # Not in the request's thread (``enqueue=True``, or a thread that did
            # not copy the context): the patcher's values are all that is left.
            tags = {
                key: value
                for key in FIELDS
                if isinstance(value := raw_extra.get(key), str) and value != PLACEHOLDER
            }
        capture_log_event(
            levelno=levelno,
            logger=logger,
            message=text,
            exc_info=as_exc_info(record.get("exception")),
            extra=extra,
            tags=tags,
            mechanism="loguru",
        )


faultlens_sink = FaultlensSink()
