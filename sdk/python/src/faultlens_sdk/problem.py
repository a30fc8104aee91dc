"""Turning an exception into a report and an RFC 9457 problem document.

Every middleware (ASGI, WSGI, Django) ends up here, so all of them answer alike::

    HTTP/1.1 409 Conflict
    Content-Type: application/problem+json
    X-Request-ID: 7f0c...

    {"type": "urn:faultlens:error:PATIENT_RECORD_LOCKED", "title": "Conflict",
     "status": 409, "detail": "The record is being edited by someone else.",
     "code": "PATIENT_RECORD_LOCKED", "event_id": "4c1d...", "request_id": "7f0c...",
     "instance": "urn:faultlens:request:7f0c..."}

``instance`` names the request, not its URL, because URLs in a healthcare API often
hold identifiers that are not for an error page. ``event_id`` is absent when the
report was not sent (the in-process rate limit held it back, or no DSN is set);
``request_id`` is always there for support to search by.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from typing import Any

import sentry_sdk

from faultlens_sdk.config import EVENT_ID_ATTRIBUTE, current_options
from faultlens_sdk.context import RequestContext
from faultlens_sdk.errors import FaultlensError

PROBLEM_CONTENT_TYPE = "application/problem+json"
GENERIC_CODE = "INTERNAL_ERROR"
GENERIC_TITLE = "Internal Server Error"
GENERIC_DETAIL = "An unexpected error occurred."


@dataclass(slots=True)
class Problem:
    """A problem document and the HTTP status and headers to send it with."""

    status: int
    document: dict[str, Any]
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def __post_init__(self) -> None:
        self.body = json.dumps(self.document, separators=(",", ":")).encode()
        self.headers.append(("content-length", str(len(self.body))))

    @property
    def event_id(self) -> str | None:
        value = self.document.get("event_id")
        return value if isinstance(value, str) else None


def problem_for(
    exc: BaseException,
    *,
    status: int | None = None,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    extensions: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The status and document for ``exc``, before any report is made."""
    options = current_options()
    if isinstance(exc, FaultlensError):
        status = status or exc.status
        code = code or exc.code
        title = title or exc.title
        detail = detail or exc.client_detail
        extensions = {**exc.extensions, **(extensions or {})}
    status = status or 500
    code = code or GENERIC_CODE
    document: dict[str, Any] = {
        "type": options.problem_type_base + code,
        "title": title or GENERIC_TITLE,
        "status": status,
        "detail": detail or GENERIC_DETAIL,
        "code": code,
    }
    if options.debug:
        # Internals reach the client only when the application asks for them,
        # never in production.
        document["detail"] = f"{type(exc).__name__}: {exc}"
        document["traceback"] = traceback.format_exception(exc)
    for key, value in (extensions or {}).items():
        document.setdefault(key, value)
    return status, document


def report(
    exc: BaseException,
    ctx: RequestContext | None,
    *,
    status: int,
    code: str,
) -> str | None:
    """Send a report of ``exc``; the event id, or ``None`` if it was not sent."""
    options = current_options()
    if status < 500 and not options.capture_client_errors:
        return None
    if sentry_sdk.get_client().transport is None:
        # No DSN: nothing will be sent, so there is no id worth giving out.
        return None
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("error.code", code)
        scope.set_tag("http.status_code", str(status))
        if ctx is not None and ctx.info is not None:
            scope.set_tag("http.method", ctx.info.method)
        event_id = sentry_sdk.capture_exception(exc)
    return event_id or getattr(exc, EVENT_ID_ATTRIBUTE, None)


def report_late(exc: BaseException, ctx: RequestContext | None) -> str | None:
    """Report ``exc`` raised after the response started; nothing can be answered."""
    status, document = problem_for(exc)
    return report(exc, ctx, status=status, code=document["code"])


def handle(
    exc: BaseException,
    ctx: RequestContext | None,
    *,
    send_report: bool = True,
    **overrides: Any,
) -> Problem:
    """Report ``exc`` and build the problem response that answers it."""
    status, document = problem_for(exc, **overrides)
    event_id = (
        report(exc, ctx, status=status, code=document["code"]) if send_report else None
    )
    if event_id:
        document["event_id"] = event_id
    headers = [("content-type", PROBLEM_CONTENT_TYPE)]
    if ctx is not None:
        document["request_id"] = ctx.request_id
        document["instance"] = f"urn:faultlens:request:{ctx.request_id}"
        headers.append((current_options().request_id_header, ctx.request_id))
    return Problem(status, document, headers)
