"""The options ``init`` was given, and the hooks that apply them to every report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from faultlens_sdk.context import TenantResolver, UserResolver, current
from faultlens_sdk.ratelimit import ErrorRateLimit, ReportLimiter
from faultlens_sdk.severity import SeverityClassifier

BeforeSend = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]

# Request headers worth having in a report. Anything else (cookies, authorization,
# custom headers that may carry identifiers) stays out unless the application adds
# it itself.
SAFE_HEADERS = frozenset(
    {"accept", "accept-language", "content-type", "content-length", "user-agent"}
)


@dataclass(slots=True)
class Options:
    """Settings the middleware and hooks read at request time."""

    debug: bool = False
    problem_type_base: str = "urn:faultlens:error:"
    request_id_header: str = "x-request-id"
    capture_client_errors: bool = True
    user_resolver: UserResolver | None = None
    tenant_resolver: TenantResolver | None = None
    classifier: SeverityClassifier = field(default_factory=SeverityClassifier)
    limiter: ReportLimiter | None = field(
        default_factory=lambda: ReportLimiter(ErrorRateLimit())
    )
    before_send: BeforeSend | None = None


_options = Options()


def current_options() -> Options:
    return _options


def configure(options: Options) -> None:
    global _options
    _options = options


def enrich(event: dict[str, Any]) -> dict[str, Any]:
    """Add the current request's id, tenant, user and request line to ``event``."""
    ctx = current()
    if ctx is None:
        return event
    tags = event.setdefault("tags", {})
    tags.setdefault("request_id", ctx.request_id)
    tenant = ctx.tenant
    if tenant is not None:
        tags.setdefault("tenant", tenant)
    user = ctx.user
    if user and not event.get("user"):
        event["user"] = dict(user)
    info = ctx.info
    if info is not None and not event.get("request"):
        event["request"] = {
            "method": info.method,
            "url": info.path,
            "headers": {k: v for k, v in info.headers.items() if k in SAFE_HEADERS},
        }
    return event


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """The one ``before_send`` that ``init`` installs: enrich, classify, limit.

    The application's own ``before_send`` runs after enrichment, so it sees (and may
    scrub) everything that will be sent; the rate limit runs last, so only reports
    that would really go out use up its budget.
    """
    options = _options
    result: dict[str, Any] | None = options.classifier.event_processor(
        enrich(event), hint
    )
    if result is not None and options.before_send is not None:
        result = options.before_send(result, hint)
    if result is not None and options.limiter is not None:
        result = options.limiter.before_send(result, hint)
    if result is not None:
        remember_event_id(hint, result)
    return result


EVENT_ID_ATTRIBUTE = "__faultlens_event_id__"


def remember_event_id(hint: dict[str, Any], event: dict[str, Any]) -> None:
    """Note on the exception which event reported it.

    sentry-sdk drops a second report of the same exception object, so when the
    application logged it with ``logger.exception`` before it reached the middleware,
    the middleware's report is dropped; the problem document then names this event.
    """
    exc_info = hint.get("exc_info")
    if exc_info and exc_info[1] is not None:
        with contextlib.suppress(AttributeError):
            setattr(exc_info[1], EVENT_ID_ATTRIBUTE, event.get("event_id"))
