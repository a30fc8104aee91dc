"""Log records from stdlib logging, structlog and loguru, reported to a live server."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any

import pytest
import sentry_sdk
import structlog
from faultlens.testing import LiveServer
from loguru import logger as loguru_logger

import faultlens_sdk.integrations.logging as record_context_module
from faultlens_sdk.context import (
    RequestContext,
    RequestInfo,
    from_header,
    request_context,
    set_tenant,
)
from faultlens_sdk.integrations.logging import (
    RequestContextFilter,
    install_record_context,
)
from faultlens_sdk.integrations.loguru import (
    FaultlensSink,
    faultlens_patcher,
    faultlens_sink,
)
from faultlens_sdk.integrations.structlog import faultlens_processor
from tests.conftest import InitSdk


def token() -> str:
    """A marker that makes each test's messages its own on the shared server."""
    return uuid.uuid4().hex[:8]


@contextmanager
def in_request(request_id: str, tenant: str) -> Iterator[RequestContext]:
    """What the middleware does for a request: a scope and a bound context.

    The tenant comes from a header through a resolver, as an application sets it up.
    """
    ctx = RequestContext(
        request_id=request_id,
        info=RequestInfo("POST", "/charges", {"x-tenant-id": tenant}),
        tenant_resolver=from_header("X-Tenant-ID"),
    )
    with sentry_sdk.isolation_scope(), request_context(ctx):
        yield ctx


def new_event_id(before: str | None) -> str:
    """The id of the event the last log call reported; fails if there was none."""
    event_id = sentry_sdk.last_event_id()
    assert event_id is not None and event_id != before, "no event was reported"
    return event_id


def stored_count(server: LiveServer) -> int:
    """Events stored so far, once the server has processed all it received."""
    sentry_sdk.flush(10)
    return int(server.wait_processed(0)["events_stored"])


def crumbs(event: dict[str, Any], message: str) -> list[dict[str, Any]]:
    """The event's breadcrumbs with exactly this message."""
    values = (event.get("breadcrumbs") or {}).get("values") or []
    return [crumb for crumb in values if crumb.get("message") == message]


def marked(found: list[dict[str, Any]], mark: str) -> list[dict[str, Any]]:
    """Breadcrumbs whose data carries this test's marker."""
    return [crumb for crumb in found if (crumb.get("data") or {}).get("mark") == mark]


@pytest.fixture
def stdlib_logger() -> Iterator[Callable[[str], logging.Logger]]:
    """Loggers that let INFO through (the root's WARNING would drop breadcrumbs)."""
    changed: list[tuple[logging.Logger, int]] = []

    def get(name: str) -> logging.Logger:
        log = logging.getLogger(name)
        changed.append((log, log.level))
        log.setLevel(logging.INFO)
        return log

    yield get
    for log, level in changed:
        log.setLevel(level)


@pytest.fixture
def record_context(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """``install_record_context``, with logging's global state restored afterwards."""
    monkeypatch.setattr(logging, "_logRecordFactory", logging.getLogRecordFactory())
    monkeypatch.setattr(logging.Logger, "makeRecord", logging.Logger.makeRecord)
    monkeypatch.setattr(record_context_module, "_installed", False)
    return install_record_context


@pytest.fixture
def capture_lines() -> Iterator[Callable[[str], tuple[logging.Logger, StringIO]]]:
    """A logger of its own writing ``request_id tenant message`` lines to a buffer."""
    handlers: list[tuple[logging.Logger, logging.Handler]] = []

    def make(name: str) -> tuple[logging.Logger, StringIO]:
        out = StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter("%(request_id)s %(tenant)s %(message)s"))
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        handlers.append((log, handler))
        return log, out

    yield make
    for log, handler in handlers:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
        log.propagate = True


# stdlib logging: reporting is sentry-sdk's LoggingIntegration as ``init`` sets it up.


def test_stdlib_error_is_an_event_with_context_and_breadcrumbs(
    server: LiveServer,
    init_sdk: InitSdk,
    stdlib_logger: Callable[[str], logging.Logger],
) -> None:
    init_sdk()
    log = stdlib_logger("billing")
    mark = token()
    before_count = stored_count(server)
    with in_request(f"req-{mark}", "acme"):
        log.info("loading account %s (%s)", "acct-1", mark)
        previous = sentry_sdk.last_event_id()
        log.warning("slow charge (%s)", mark)
        assert sentry_sdk.last_event_id() == previous, "a warning became an event"
        log.error("charge failed for %s (%s)", "acct-1", mark)
        event_id = new_event_id(previous)

    event = server.wait_event(event_id)
    assert event["logger"] == "billing"
    assert event["level"] == "error"
    assert event["logentry"]["message"] == "charge failed for %s (%s)"
    assert event["logentry"]["formatted"] == f"charge failed for acct-1 ({mark})"
    assert event["tags"]["request_id"] == f"req-{mark}"
    assert event["tags"]["tenant"] == "acme"
    [info] = crumbs(event, f"loading account acct-1 ({mark})")
    assert (info["category"], info["level"]) == ("billing", "info")
    [warning] = crumbs(event, f"slow charge ({mark})")
    assert warning["level"] == "warning"
    # The warning made no event of its own: only the error was stored.
    assert stored_count(server) == before_count + 1


def test_stdlib_exception_is_reported_with_the_exception(
    server: LiveServer,
    init_sdk: InitSdk,
    stdlib_logger: Callable[[str], logging.Logger],
) -> None:
    init_sdk()
    log = stdlib_logger("billing.gateway")
    mark = token()
    with in_request(f"req-{mark}", "acme"):
        previous = sentry_sdk.last_event_id()
        try:
            raise ValueError(f"card declined {mark}")
        except ValueError:
            log.exception("charge crashed")
        event_id = new_event_id(previous)

    event = server.wait_event(event_id)
    assert event["logger"] == "billing.gateway"
    assert event["level"] == "error"
    assert event["logentry"]["formatted"] == "charge crashed"
    exc = event["exception"]["values"][-1]
    assert (exc["type"], exc["value"]) == ("ValueError", f"card declined {mark}")
    assert exc["stacktrace"]["frames"][-1]["function"] == (
        "test_stdlib_exception_is_reported_with_the_exception"
    )
    assert event["tags"]["request_id"] == f"req-{mark}"


def test_critical_record_is_fatal(
    server: LiveServer,
    init_sdk: InitSdk,
    stdlib_logger: Callable[[str], logging.Logger],
) -> None:
    init_sdk()
    log = stdlib_logger("billing")
    previous = sentry_sdk.last_event_id()
    log.critical("ledger unreachable (%s)", token())
    event = server.wait_event(new_event_id(previous))
    assert event["level"] == "fatal"
    assert "tags" not in event or "request_id" not in event["tags"]


def test_record_factory_puts_request_context_on_records(
    record_context: Callable[[], None],
    capture_lines: Callable[[str], tuple[logging.Logger, StringIO]],
) -> None:
    record_context()
    factory = logging.getLogRecordFactory()
    record_context()
    assert logging.getLogRecordFactory() is factory, "installed twice"

    log, out = capture_lines("app.lines")
    log.info("outside")
    with in_request("req-42", "acme"):
        log.info("inside")
        # An application's own value wins, and no longer collides with the factory's.
        log.info("own id", extra={"request_id": "job-7"})
    log.info("after")

    assert out.getvalue().splitlines() == [
        "- - outside",
        "req-42 acme inside",
        "job-7 acme own id",
        "- - after",
    ]


def test_record_context_survives_a_tenant_resolver_that_logs(
    record_context: Callable[[], None],
    capture_lines: Callable[[str], tuple[logging.Logger, StringIO]],
) -> None:
    record_context()
    log, out = capture_lines("app.resolving")
    calls = []

    def resolve(info: RequestInfo) -> str:
        calls.append(info.path)
        log.info("resolving tenant")
        return "acme"

    ctx = RequestContext("req-9", RequestInfo("GET", "/x", {}), tenant_resolver=resolve)
    with request_context(ctx):
        log.info("handled")

    assert calls == ["/x"]
    assert out.getvalue().splitlines() == [
        "req-9 - resolving tenant",
        "req-9 acme handled",
    ]


def test_request_context_filter_on_a_handler(
    capture_lines: Callable[[str], tuple[logging.Logger, StringIO]],
) -> None:
    log, out = capture_lines("app.filtered")
    log.handlers[0].addFilter(RequestContextFilter())
    log.info("outside")
    with in_request("req-43", "globex"):
        log.info("inside")
        log.info("own", extra={"request_id": "job-8", "tenant": "initech"})

    assert out.getvalue().splitlines() == [
        "- - outside",
        "req-43 globex inside",
        "job-8 initech own",
    ]


# structlog


def structlog_logger(out: StringIO) -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.add_log_level,
            faultlens_processor,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def test_structlog_error_is_an_event_and_info_a_breadcrumb(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk()
    out = StringIO()
    log = structlog_logger(out).bind(logger="billing")
    mark = token()
    log.info("outside", mark=mark)
    with in_request(f"req-{mark}", "acme"):
        set_tenant("initech")
        log.info("loading account", account="acct-1", mark=mark)
        previous = sentry_sdk.last_event_id()
        log.warning("slow charge", mark=mark)
        assert sentry_sdk.last_event_id() == previous, "a warning became an event"
        log.error("charge failed", amount=42, mark=mark)
        event_id = new_event_id(previous)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "request_id" not in lines[0]
    assert {
        (line["event"], line["request_id"], line["tenant"]) for line in lines[1:]
    } == {
        ("loading account", f"req-{mark}", "initech"),
        ("slow charge", f"req-{mark}", "initech"),
        ("charge failed", f"req-{mark}", "initech"),
    }

    event = server.wait_event(event_id)
    assert event["logger"] == "billing"
    assert event["level"] == "error"
    assert event["logentry"]["message"] == "charge failed"
    assert event["extra"]["amount"] == 42
    assert event["extra"]["mark"] == mark
    assert event["tags"]["request_id"] == f"req-{mark}"
    assert event["tags"]["tenant"] == "initech"
    [info] = marked(crumbs(event, "loading account"), mark)
    assert (info["category"], info["level"]) == ("billing", "info")
    assert info["data"]["account"] == "acct-1"
    [warning] = marked(crumbs(event, "slow charge"), mark)
    assert warning["level"] == "warning"


def test_structlog_exception_and_critical(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk()
    out = StringIO()
    log = structlog_logger(out).bind(logger="billing.gateway")
    mark = token()
    with in_request(f"req-{mark}", "acme"):
        previous = sentry_sdk.last_event_id()
        try:
            raise ValueError(f"card declined {mark}")
        except ValueError:
            log.exception("charge crashed")
        exception_id = new_event_id(previous)
        log.critical("ledger unreachable", mark=mark)
        critical_id = new_event_id(exception_id)

    # The renderer after the processor still saw the exception.
    assert f"ValueError: card declined {mark}" in out.getvalue()
    event = server.wait_event(exception_id)
    assert event["logger"] == "billing.gateway"
    exc = event["exception"]["values"][-1]
    assert (exc["type"], exc["value"]) == ("ValueError", f"card declined {mark}")
    assert event["tags"]["tenant"] == "acme"
    critical = server.wait_event(critical_id)
    assert critical["level"] == "fatal"
    assert "exception" not in critical


def test_structlog_over_stdlib_reports_each_entry_once(
    server: LiveServer,
    init_sdk: InitSdk,
    stdlib_logger: Callable[[str], logging.Logger],
) -> None:
    init_sdk()
    std = stdlib_logger("payments")
    log = structlog.wrap_logger(
        std,
        processors=[faultlens_processor, structlog.stdlib.render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    mark = token()
    before_count = stored_count(server)
    with in_request(f"req-{mark}", "acme"):
        log.info("refund started", mark=mark)
        previous = sentry_sdk.last_event_id()
        log.error("refund failed", order="o-1", mark=mark)
        event_id = new_event_id(previous)
        # A plain stdlib record of the same logger is still reported.
        std.error("ledger mismatch (%s)", mark)
        stdlib_id = new_event_id(event_id)

    event = server.wait_event(event_id)
    assert event["logger"] == "payments"
    assert event["extra"]["order"] == "o-1"
    assert event["tags"]["request_id"] == f"req-{mark}"
    # One breadcrumb: the stdlib record did not add its own.
    assert len(marked(crumbs(event, "refund started"), mark)) == 1
    assert server.wait_event(stdlib_id)["logger"] == "payments"
    assert stored_count(server) == before_count + 2


# loguru


@contextmanager
def loguru_sinks(*sinks: tuple[Any, dict[str, Any]]) -> Iterator[None]:
    ids = [loguru_logger.add(sink, **options) for sink, options in sinks]
    try:
        yield
    finally:
        for handler_id in ids:
            loguru_logger.remove(handler_id)


def test_loguru_error_is_an_event_and_info_a_breadcrumb(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk()
    out = StringIO()
    log = loguru_logger.patch(faultlens_patcher)
    line_format = "{extra[request_id]} {extra[tenant]} {message}"
    mark = token()
    with loguru_sinks(
        (faultlens_sink, {"level": "INFO"}),
        (out, {"level": "INFO", "format": line_format}),
    ):
        log.info("outside {}", mark)
        with in_request(f"req-{mark}", "acme"):
            log.info("loading account {}", mark)
            previous = sentry_sdk.last_event_id()
            log.warning("slow charge {}", mark)
            assert sentry_sdk.last_event_id() == previous, "a warning became an event"
            log.bind(order="o-1").error("charge failed for {}", mark)
            event_id = new_event_id(previous)
            # A value the application binds itself wins over the request's.
            log.bind(request_id="job-3").info("own id")

    assert out.getvalue().splitlines() == [
        f"- - outside {mark}",
        f"req-{mark} acme loading account {mark}",
        f"req-{mark} acme slow charge {mark}",
        f"req-{mark} acme charge failed for {mark}",
        "job-3 acme own id",
    ]
    event = server.wait_event(event_id)
    assert event["logger"] == __name__
    assert event["level"] == "error"
    assert event["logentry"]["formatted"] == f"charge failed for {mark}"
    assert event["extra"]["order"] == "o-1"
    assert event["tags"]["request_id"] == f"req-{mark}"
    assert event["tags"]["tenant"] == "acme"
    [info] = crumbs(event, f"loading account {mark}")
    assert (info["category"], info["level"]) == (__name__, "info")
    assert [c["level"] for c in crumbs(event, f"slow charge {mark}")] == ["warning"]


def test_loguru_exception_and_critical(server: LiveServer, init_sdk: InitSdk) -> None:
    init_sdk()
    log = loguru_logger.patch(faultlens_patcher)
    mark = token()
    with (
        loguru_sinks((faultlens_sink, {"level": "INFO"})),
        in_request(f"req-{mark}", "acme"),
    ):
        previous = sentry_sdk.last_event_id()
        try:
            raise ValueError(f"card declined {mark}")
        except ValueError:
            log.exception("charge crashed")
        exception_id = new_event_id(previous)
        log.critical("ledger unreachable {}", mark)
        critical_id = new_event_id(exception_id)

    event = server.wait_event(exception_id)
    assert event["logger"] == __name__
    exc = event["exception"]["values"][-1]
    assert (exc["type"], exc["value"]) == ("ValueError", f"card declined {mark}")
    assert event["level"] == "error"
    assert event["tags"]["request_id"] == f"req-{mark}"
    critical = server.wait_event(critical_id)
    assert critical["level"] == "fatal"
    assert "exception" not in critical


def test_loguru_enqueued_sink_keeps_request_tags(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk()
    log = loguru_logger.patch(faultlens_patcher)
    sink = FaultlensSink()
    reported: list[str | None] = []

    def recording_sink(message: Any) -> None:
        # Runs in loguru's worker thread, where the event id is recorded.
        sink(message)
        reported.append(sentry_sdk.last_event_id())

    mark = token()
    with loguru_sinks((recording_sink, {"level": "ERROR", "enqueue": True})):
        with in_request(f"req-{mark}", "acme"):
            log.error("charge failed {}", mark)
        loguru_logger.complete()

    [event_id] = reported
    assert event_id is not None
    event = server.wait_event(event_id)
    assert event["tags"]["request_id"] == f"req-{mark}"
    assert event["tags"]["tenant"] == "acme"
