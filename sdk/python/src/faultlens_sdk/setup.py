"""``init``: one call that wires sentry-sdk, the offline queue and the hooks."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.logging import LoggingIntegration

from faultlens_sdk.config import BeforeSend, Options, configure
from faultlens_sdk.config import before_send as faultlens_before_send
from faultlens_sdk.context import TenantResolver, UserResolver
from faultlens_sdk.integrations.logging import install_record_context
from faultlens_sdk.ratelimit import ErrorRateLimit, ReportLimiter
from faultlens_sdk.severity import SeverityClassifier, SeverityRule
from faultlens_sdk.transport import OfflineTransport

DEFAULT_QUEUE_BYTES = 50 * 2**20
DEFAULT_RATE_LIMIT = ErrorRateLimit()


def default_queue_dir(dsn: str) -> Path:
    """``$FAULTLENS_QUEUE_DIR``, else a per-DSN folder in the user's cache."""
    configured = os.environ.get("FAULTLENS_QUEUE_DIR")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(dsn.encode()).hexdigest()[:16]
    return cache / "faultlens-sdk" / digest


def init(
    dsn: str | None = None,
    *,
    environment: str | None = None,
    release: str | None = None,
    debug: bool = False,
    user_resolver: UserResolver | None = None,
    tenant_resolver: TenantResolver | None = None,
    severity_rules: Iterable[SeverityRule] = (),
    rate_limit: ErrorRateLimit | None = DEFAULT_RATE_LIMIT,
    capture_client_errors: bool = True,
    problem_type_base: str = "urn:faultlens:error:",
    request_id_header: str = "X-Request-ID",
    queue_dir: str | os.PathLike[str] | None = None,
    max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
    log_level: int | None = logging.INFO,
    log_event_level: int | None = logging.ERROR,
    log_record_context: bool = True,
    before_send: BeforeSend | None = None,
    integrations: Sequence[Integration] = (),
    **sentry_options: Any,
) -> None:
    """Set up reporting for this process; call once, before the app serves.

    ``dsn`` defaults to ``$FAULTLENS_DSN`` (then ``$SENTRY_DSN``); without one,
    the middleware still answers with problem documents but nothing is sent.
    ``debug`` puts exception details into problem documents: for development only.
    Any other keyword is passed to ``sentry_sdk.init`` unchanged.
    """
    dsn = dsn or os.environ.get("FAULTLENS_DSN") or os.environ.get("SENTRY_DSN")
    if log_record_context:
        install_record_context()
    configure(
        Options(
            debug=debug,
            problem_type_base=problem_type_base,
            request_id_header=request_id_header.lower(),
            capture_client_errors=capture_client_errors,
            user_resolver=user_resolver,
            tenant_resolver=tenant_resolver,
            classifier=SeverityClassifier(severity_rules),
            limiter=ReportLimiter(rate_limit) if rate_limit else None,
            before_send=before_send,
        )
    )
    transport = None
    if dsn:
        transport = OfflineTransport(
            dsn,
            queue_dir=queue_dir or default_queue_dir(dsn),
            max_queue_bytes=max_queue_bytes,
        )
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        transport=transport,
        before_send=faultlens_before_send,  # type: ignore[arg-type]
        # The framework integrations would report the same exceptions a second
        # time, with their own idea of request data; the middleware does both.
        auto_enabling_integrations=False,
        integrations=[
            LoggingIntegration(level=log_level, event_level=log_event_level),
            *integrations,
        ],
        **sentry_options,
    )
