"""The WSGI middleware and the Flask integration, served by a real WSGI server.

Every app runs under ``wsgiref`` on loopback, is called with ``httpx`` and reports to
a live Faultlens server; the assertions are on the HTTP answers and on the events
the server stored.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import httpx
import pytest
from faultlens.testing import LiveServer

import faultlens_sdk
from faultlens_sdk.flask import init_app
from faultlens_sdk.wsgi import FaultlensWSGIMiddleware
from tests.conftest import EventByRequestId, InitSdk, ServeWsgi

SECRET = "db password is hunter2"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# Both requests of the concurrency test wait here, so they are in flight together.
together = threading.Barrier(2, timeout=10)


class PatientChartLocked(faultlens_sdk.ConflictError):
    code = "PATIENT_CHART_LOCKED"
    public_message = "The chart is being edited by someone else."


def broken_stream() -> Iterator[bytes]:
    yield b"first chunk;"
    raise RuntimeError("stream broke after the first chunk")


def fails_before_body() -> Iterator[bytes]:
    raise RuntimeError(SECRET)
    yield b"never sent"


# A plain WSGI app, and the same routes in Flask.


def plain_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response(
            "200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("X-App", "1")]
        )
        return [b"hello"]
    if path == "/boom":
        raise RuntimeError(SECRET)
    if path == "/locked":
        raise PatientChartLocked("chart 17 held by user 4")
    if path == "/stream":
        # The declared length lets the client tell a cut-off body from a short one.
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")]
        )
        return broken_stream()
    if path == "/fails-before-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return fails_before_body()
    if path == "/together":
        together.wait()
        raise RuntimeError("failed while another request was in flight")
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such page"]


def make_flask_app() -> flask.Flask:
    app = flask.Flask("faultlens_flask_test")

    @app.before_request
    def authenticate() -> None:
        # Stands in for an auth extension: the caller, kept in flask.g.
        account = flask.request.headers.get("X-Account")
        if account:
            flask.g.account = {"id": account, "username": f"user-{account}"}

    @app.get("/hello")
    def hello() -> flask.Response:
        return flask.Response("hello", mimetype="text/plain", headers={"X-App": "1"})

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError(SECRET)

    @app.get("/locked")
    def locked() -> str:
        raise PatientChartLocked("chart 17 held by user 4")

    @app.get("/missing")
    def missing() -> str:
        flask.abort(404)

    @app.get("/stream")
    def stream() -> flask.Response:
        return flask.Response(
            broken_stream(), mimetype="text/plain", headers={"Content-Length": "100"}
        )

    @app.get("/fails-before-body")
    def before_body() -> flask.Response:
        return flask.Response(fails_before_body(), mimetype="text/plain")

    @app.get("/together")
    def in_flight() -> str:
        together.wait()
        raise RuntimeError("failed while another request was in flight")

    return init_app(app)


@pytest.fixture(scope="module")
def urls(serve_wsgi: ServeWsgi) -> dict[str, str]:
    return {
        "raw": serve_wsgi(plain_app),
        "wsgi": serve_wsgi(FaultlensWSGIMiddleware(plain_app)),
        "flask": serve_wsgi(make_flask_app()),
    }


@pytest.fixture(params=["wsgi", "flask"])
def url(request: pytest.FixtureRequest, urls: dict[str, str]) -> str:
    return urls[request.param]


def bearer(subject: str) -> str:
    """An unsigned JWT: the resolver only reads claims, it never checks them."""

    def part(value: dict[str, Any]) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(value).encode())
        return raw.rstrip(b"=").decode()

    return f"Bearer {part({'alg': 'none'})}.{part({'sub': subject})}."


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def init_with_resolvers(init_sdk: InitSdk, **options: Any) -> None:
    init_sdk(
        tenant_resolver=faultlens_sdk.from_header("X-Tenant-ID"),
        user_resolver=faultlens_sdk.user_from_jwt(),
        **options,
    )


def test_unhandled_exception_is_a_generic_problem_and_a_full_report(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    tenant, user = unique("clinic"), unique("nurse")

    r = httpx.get(
        f"{url}/boom", headers={"X-Tenant-ID": tenant, "Authorization": bearer(user)}
    )

    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in r.text and SECRET not in r.text
    body = r.json()
    request_id = r.headers["x-request-id"]
    assert REQUEST_ID.fullmatch(request_id)
    assert body == {
        "type": "urn:faultlens:error:INTERNAL_ERROR",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "An unexpected error occurred.",
        "code": "INTERNAL_ERROR",
        "event_id": body["event_id"],
        "request_id": request_id,
        "instance": f"urn:faultlens:request:{request_id}",
    }

    event = server.wait_event(body["event_id"])
    assert event["event_id"] == body["event_id"]
    assert event["environment"] == "test"
    assert event["release"] == "app@1.0.0"
    assert event["level"] == "error"
    assert event["tags"]["error.code"] == "INTERNAL_ERROR"
    assert event["tags"]["request_id"] == request_id
    assert event["tags"]["tenant"] == tenant
    assert event["user"]["id"] == user
    exception = event["exception"]["values"][-1]
    assert (exception["type"], exception["value"]) == ("RuntimeError", SECRET)


def test_taxonomy_error_keeps_its_status_code_message_and_severity(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    tenant = unique("clinic")

    r = httpx.get(f"{url}/locked", headers={"X-Tenant-ID": tenant})

    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "PATIENT_CHART_LOCKED"
    assert body["type"] == "urn:faultlens:error:PATIENT_CHART_LOCKED"
    assert body["title"] == "Conflict"
    assert body["detail"] == "The chart is being edited by someone else."
    assert "user 4" not in r.text
    event = server.wait_event(body["event_id"])
    assert event["level"] == "warning"
    assert event["tags"]["error.code"] == "PATIENT_CHART_LOCKED"
    assert event["tags"]["tenant"] == tenant
    assert event["exception"]["values"][-1]["type"] == "PatientChartLocked"


def test_report_keeps_the_internal_message_of_a_taxonomy_error(
    init_sdk: InitSdk, server: LiveServer, urls: dict[str, str]
) -> None:
    init_with_resolvers(init_sdk)

    r = httpx.get(f"{urls['wsgi']}/locked")

    event = server.wait_event(r.json()["event_id"])
    assert event["exception"]["values"][-1]["value"] == "chart 17 held by user 4"


def test_valid_request_id_is_echoed_and_tagged(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    request_id = f"abc-123.{uuid.uuid4().hex[:8]}"

    r = httpx.get(f"{url}/locked", headers={"X-Request-ID": request_id})

    assert r.headers["x-request-id"] == request_id
    assert r.json()["request_id"] == request_id
    assert r.json()["instance"] == f"urn:faultlens:request:{request_id}"
    event = server.wait_event(r.json()["event_id"])
    assert event["tags"]["request_id"] == request_id


@pytest.mark.parametrize(
    "sent",
    ["a" * 300, "abc 123 <script>", "caf\u00e9-1"],
    ids=["long", "space", "8bit"],
)
def test_malformed_request_id_is_replaced(
    init_sdk: InitSdk, server: LiveServer, url: str, sent: str
) -> None:
    init_with_resolvers(init_sdk)

    r = httpx.get(f"{url}/locked", headers={b"X-Request-ID": sent.encode("latin-1")})

    request_id = r.headers["x-request-id"]
    assert request_id != sent
    assert REQUEST_ID.fullmatch(request_id)
    assert r.json()["request_id"] == request_id
    assert server.wait_event(r.json()["event_id"])["tags"]["request_id"] == request_id


def test_debug_mode_shows_the_exception(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk, debug=True)

    r = httpx.get(f"{url}/boom")

    assert r.status_code == 500
    body = r.json()
    assert body["detail"] == f"RuntimeError: {SECRET}"
    assert any("raise RuntimeError(SECRET)" in line for line in body["traceback"])
    assert server.wait_event(body["event_id"])["level"] == "error"


def read_until_cut_off(url: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """GET a response the server cuts short; its status, type and what arrived."""
    received = b""
    with httpx.Client() as client, client.stream("GET", url, headers=headers) as r:
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                received += chunk
        return r.status_code, r.headers["content-type"], received


def test_failure_after_the_first_chunk_is_reported_and_cuts_the_response(
    init_sdk: InitSdk, event_by_request_id: EventByRequestId, url: str
) -> None:
    init_with_resolvers(init_sdk)
    request_id, tenant = unique("late"), unique("clinic")

    status, content_type, received = read_until_cut_off(
        f"{url}/stream", {"X-Request-ID": request_id, "X-Tenant-ID": tenant}
    )

    assert status == 200
    assert content_type.startswith("text/plain")
    assert received == b"first chunk;"
    event = event_by_request_id(request_id)
    assert event["level"] == "error"
    assert event["tags"]["tenant"] == tenant
    assert event["tags"]["error.code"] == "INTERNAL_ERROR"
    exception = event["exception"]["values"][-1]
    assert exception["value"] == "stream broke after the first chunk"


def test_failure_before_the_first_chunk_still_gets_a_problem(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    tenant = unique("clinic")

    r = httpx.get(f"{url}/fails-before-body", headers={"X-Tenant-ID": tenant})

    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in r.text
    assert r.json()["code"] == "INTERNAL_ERROR"
    event = server.wait_event(r.json()["event_id"])
    assert event["tags"]["tenant"] == tenant
    assert event["exception"]["values"][-1]["value"] == SECRET


def test_normal_response_only_gains_the_request_id(
    init_sdk: InitSdk, urls: dict[str, str]
) -> None:
    init_with_resolvers(init_sdk)

    def answer(base: str) -> tuple[int, bytes, dict[str, str]]:
        r = httpx.get(f"{base}/hello", headers={"X-Request-ID": "hello-1"})
        headers = {k: v for k, v in r.headers.items() if k not in ("date", "server")}
        return r.status_code, r.content, headers

    status, content, headers = answer(urls["raw"])
    assert (status, content) == (200, b"hello")
    assert "x-request-id" not in headers
    expected = (status, content, {**headers, "x-request-id": "hello-1"})
    assert answer(urls["wsgi"]) == expected
    flask_status, flask_content, flask_headers = answer(urls["flask"])
    assert (flask_status, flask_content) == (200, b"hello")
    assert flask_headers["x-app"] == "1"
    assert flask_headers["content-length"] == "5"
    assert flask_headers["x-request-id"] == "hello-1"


def test_flask_abort_is_still_answered_by_flask(
    init_sdk: InitSdk, urls: dict[str, str]
) -> None:
    init_with_resolvers(init_sdk)

    r = httpx.get(f"{urls['flask']}/missing")

    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "Not Found" in r.text
    assert REQUEST_ID.fullmatch(r.headers["x-request-id"])


def test_flask_resolvers_run_while_the_request_is_active(
    init_sdk: InitSdk, server: LiveServer, urls: dict[str, str]
) -> None:
    def account(info: faultlens_sdk.RequestInfo) -> dict[str, Any] | None:
        found: dict[str, Any] | None = flask.g.get("account")
        return found

    def tenant_from_request(info: faultlens_sdk.RequestInfo) -> str | None:
        return flask.request.headers.get("X-Tenant-ID")

    init_sdk(user_resolver=account, tenant_resolver=tenant_from_request)
    tenant, user = unique("clinic"), unique("account")

    r = httpx.get(
        f"{urls['flask']}/boom", headers={"X-Account": user, "X-Tenant-ID": tenant}
    )

    event = server.wait_event(r.json()["event_id"])
    assert event["user"]["id"] == user
    assert event["user"]["username"] == f"user-{user}"
    assert event["tags"]["tenant"] == tenant


def test_concurrent_requests_keep_their_own_context(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    callers = [(unique("clinic"), unique("nurse")) for _ in range(2)]

    def call(caller: tuple[str, str]) -> httpx.Response:
        tenant, user = caller
        return httpx.get(
            f"{url}/together",
            headers={"X-Tenant-ID": tenant, "Authorization": bearer(user)},
            timeout=20,
        )

    with ThreadPoolExecutor(2) as pool:
        responses: Iterable[httpx.Response] = list(pool.map(call, callers))

    for (tenant, user), r in zip(callers, responses, strict=True):
        assert r.status_code == 500
        event = server.wait_event(r.json()["event_id"])
        # A BrokenBarrierError here would mean the requests did not overlap.
        assert event["exception"]["values"][-1]["type"] == "RuntimeError"
        assert event["tags"]["tenant"] == tenant
        assert event["user"]["id"] == user
        assert event["tags"]["request_id"] == r.headers["x-request-id"]
