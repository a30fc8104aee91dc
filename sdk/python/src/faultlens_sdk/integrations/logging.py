"""The current request's id and tenant on stdlib log records.

``init`` already reports log records (ERROR and above as events, INFO and above as
breadcrumbs) through sentry-sdk's ``LoggingIntegration``. This module makes the
request context available to the application's own log output::

    from faultlens_sdk.integrations.logging import install_record_context

    install_record_context()
    logging.basicConfig(format="%(asctime)s %(request_id)s %(tenant)s %(message)s")

or, for one handler only::

    handler.addFilter(RequestContextFilter())

Both set ``record.request_id`` and ``record.tenant`` to the values of the request
being handled when the record was created, and to ``"-"`` outside a request (or
while the tenant is unknown). A value passed with ``extra=`` wins.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from faultlens_sdk.integrations import PLACEHOLDER, record_fields

__all__ = ["PLACEHOLDER", "RequestContextFilter", "install_record_context"]

FIELDS = ("request_id", "tenant")

_SysExcInfo = (
    tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
)

_install_lock = threading.Lock()
_installed = False


def _stamp(record: logging.LogRecord) -> None:
    attributes = record.__dict__
    if all(name in attributes for name in FIELDS):
        return
    request_id, tenant = record_fields()
    attributes.setdefault("request_id", request_id)
    attributes.setdefault("tenant", tenant)


def install_record_context() -> None:
    """Give every log record created from now on ``request_id`` and ``tenant``.

    Wraps the current log record factory, so factories installed earlier keep
    working; calling it again does nothing. The values are taken when the record is
    created, so a handler that formats it later, in another thread (``QueueHandler``),
    still prints the request that logged it.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        _wrap_record_factory()
        _wrap_make_record()
        _installed = True


def _wrap_record_factory() -> None:
    previous = logging.getLogRecordFactory()

    def record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _stamp(record)
        return record

    logging.setLogRecordFactory(record_factory)


_MakeRecord = Callable[..., logging.LogRecord]


def _wrap_make_record() -> None:
    # ``Logger.makeRecord`` refuses an ``extra`` key that the factory already set
    # (KeyError "Attempt to overwrite"), so ``extra={"request_id": ...}``, which
    # applications with their own request ids commonly pass, would start raising
    # from the logging call. Those two keys are set after the record is made
    # instead, which also lets them win over the context's values.
    original: _MakeRecord = logging.Logger.makeRecord

    def make_record(
        self: logging.Logger,
        name: str,
        level: int,
        fn: str,
        lno: int,
        msg: object,
        args: Any,
        exc_info: _SysExcInfo | None,
        func: str | None = None,
        extra: Mapping[str, object] | None = None,
        sinfo: str | None = None,
    ) -> logging.LogRecord:
        if extra is None or all(key not in extra for key in FIELDS):
            return original(
                self, name, level, fn, lno, msg, args, exc_info, func, extra, sinfo
            )
        given = {key: value for key, value in extra.items() if key in FIELDS}
        rest = {key: value for key, value in extra.items() if key not in FIELDS}
        record = original(
            self, name, level, fn, lno, msg, args, exc_info, func, rest, sinfo
        )
        record.__dict__.update(given)
        return record

    logging.Logger.makeRecord = make_record  # type: ignore[method-assign]


class RequestContextFilter(logging.Filter):
    """Set ``record.request_id`` and ``record.tenant``; never drops a record.

    Attach it to a handler (``handler.addFilter(RequestContextFilter())``) when only
    that handler's format needs the fields. It reads the context of the thread the
    handler runs in: put it on handlers that run in the logging thread, not behind
    a ``QueueHandler`` (use ``install_record_context`` there). Attributes the record
    already has (from ``extra=`` or the record factory) are kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _stamp(record)
        return True
