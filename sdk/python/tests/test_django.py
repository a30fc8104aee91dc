"""The Django middleware in a real Django project, served by a real WSGI server.

The project is configured here: sessions and authentication with a SQLite database,
this module as its URLconf, ``FaultlensDjangoMiddleware`` after the auth middleware.
It runs under ``wsgiref`` on loopback from ``get_wsgi_application()``, is called with
``httpx`` and reports to a live Faultlens server.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import django
import httpx
import pytest
import sentry_sdk
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from faultlens.testing import LiveServer

import faultlens_sdk
from faultlens_sdk.django import django_user
from tests.conftest import EventByRequestId, InitSdk, ServeWsgi

SECRET = "db password is hunter2"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
USERNAME, PASSWORD = "nurse.joy", "correct horse battery staple"
together = threading.Barrier(2, timeout=10)


class PrescriptionLocked(faultlens_sdk.ConflictError):
    code = "PRESCRIPTION_LOCKED"
    public_message = "The prescription is being changed by someone else."


# Views and URLconf.


def login_view(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import authenticate, login

    user = authenticate(
        request, username=request.POST["username"], password=request.POST["password"]
    )
    if user is None:
        return HttpResponse(status=401)
    login(request, user)
    return HttpResponse(status=204)


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello", content_type="text/plain", headers={"X-App": "1"})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(SECRET)


def locked(request: HttpRequest) -> HttpResponse:
    raise PrescriptionLocked("prescription 9 held by user 4")


def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such prescription")


def broken_stream() -> Iterator[bytes]:
    yield b"first chunk;"
    raise RuntimeError("stream broke after the first chunk")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    # The declared length lets the client tell a cut-off body from a short one.
    return StreamingHttpResponse(
        broken_stream(), content_type="text/plain", headers={"Content-Length": "100"}
    )


def in_flight(request: HttpRequest) -> HttpResponse:
    together.wait()
    raise RuntimeError("failed while another request was in flight")


urlpatterns = [
    path("login", login_view),
    path("hello", hello),
    path("boom", boom),
    path("locked", locked),
    path("missing", missing),
    path("stream", stream),
    path("together", in_flight),
    path("middleware-boom", hello),
]


class ExplodingMiddleware:
    """A middleware of the app's own that fails, outside any view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/middleware-boom":
            raise LookupError("session store misconfigured")
        return self.get_response(request)


@pytest.fixture(scope="module")
def url(serve_wsgi: ServeWsgi, tmp_path_factory: pytest.TempPathFactory) -> str:
    if settings.configured:
        pytest.skip("Django settings were configured elsewhere in this process")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="only-for-these-tests",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "faultlens_sdk.django.FaultlensDjangoMiddleware",
            f"{__name__}.ExplodingMiddleware",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
            }
        },
        # The default hasher is slow on purpose; these tests only need a real login.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        USE_TZ=True,
    )
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0)
    User.objects.create_user(USERNAME, password=PASSWORD)
    return serve_wsgi(get_wsgi_application())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def init_with_resolvers(init_sdk: InitSdk, **options: Any) -> None:
    init_sdk(
        tenant_resolver=faultlens_sdk.from_header("X-Tenant-ID"),
        user_resolver=django_user,
        **options,
    )


@contextmanager
def logged_in(url: str) -> Iterator[httpx.Client]:
    """A client with the session cookie of a real login."""
    with httpx.Client(base_url=url) as client:
        r = client.post("/login", data={"username": USERNAME, "password": PASSWORD})
        assert r.status_code == 204
        yield client


def no_events_from_logger(server: LiveServer, logger: str) -> bool:
    """Whether nothing the process sent so far came from ``logger``."""
    # Reports go out and are processed in order, so once a marker sent now is
    # stored, so is anything sent before it.
    marker = sentry_sdk.capture_message(unique("marker"), level="info")
    assert marker is not None
    server.wait_event(marker)
    with server.api() as api:
        issues = api.get(
            f"/api/v1/projects/{server.project_id}/issues",
            params={"query": f"logger:{logger}"},
        ).json()["data"]
    return not issues


def test_unhandled_exception_is_a_generic_problem_and_a_full_report(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    tenant = unique("clinic")

    with logged_in(url) as client:
        r = client.get("/boom", headers={"X-Tenant-ID": tenant})

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
    assert event["environment"] == "test"
    assert event["release"] == "app@1.0.0"
    assert event["level"] == "error"
    assert event["tags"]["error.code"] == "INTERNAL_ERROR"
    assert event["tags"]["request_id"] == request_id
    assert event["tags"]["tenant"] == tenant
    assert event["user"]["username"] == USERNAME
    assert event["user"]["id"].isdigit()
    exception = event["exception"]["values"][-1]
    assert (exception["type"], exception["value"]) == ("RuntimeError", SECRET)
    # Django logs the 500 answer too; that must not become a second report.
    assert no_events_from_logger(server, "django.request")


def test_taxonomy_error_keeps_its_status_code_message_and_severity(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    tenant = unique("clinic")

    r = httpx.get(f"{url}/locked", headers={"X-Tenant-ID": tenant})

    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "PRESCRIPTION_LOCKED"
    assert body["type"] == "urn:faultlens:error:PRESCRIPTION_LOCKED"
    assert body["detail"] == "The prescription is being changed by someone else."
    assert "user 4" not in r.text
    event = server.wait_event(body["event_id"])
    assert event["level"] == "warning"
    assert event["tags"]["error.code"] == "PRESCRIPTION_LOCKED"
    assert event["tags"]["tenant"] == tenant
    assert "user" not in event or not event["user"]


def test_valid_request_id_is_echoed_and_tagged(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    request_id = f"abc-123.{uuid.uuid4().hex[:8]}"

    r = httpx.get(f"{url}/locked", headers={"X-Request-ID": request_id})

    assert r.headers["x-request-id"] == request_id
    assert r.json()["request_id"] == request_id
    event = server.wait_event(r.json()["event_id"])
    assert event["tags"]["request_id"] == request_id


@pytest.mark.parametrize("sent", ["a" * 300, "abc 123 <script>"], ids=["long", "space"])
def test_malformed_request_id_is_replaced(
    init_sdk: InitSdk, server: LiveServer, url: str, sent: str
) -> None:
    init_with_resolvers(init_sdk)

    r = httpx.get(f"{url}/locked", headers={"X-Request-ID": sent})

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
    assert server.wait_event(body["event_id"])["level"] == "error"


def test_failure_while_streaming_is_reported_and_cuts_the_response(
    init_sdk: InitSdk, event_by_request_id: EventByRequestId, url: str
) -> None:
    init_with_resolvers(init_sdk)
    request_id, tenant = unique("late"), unique("clinic")

    received = b""
    with (
        logged_in(url) as client,
        client.stream(
            "GET",
            "/stream",
            headers={"X-Request-ID": request_id, "X-Tenant-ID": tenant},
        ) as r,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for chunk in r.iter_raw():
            received += chunk

    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["x-request-id"] == request_id
    assert received == b"first chunk;"
    event = event_by_request_id(request_id)
    assert event["level"] == "error"
    assert event["tags"]["tenant"] == tenant
    assert event["user"]["username"] == USERNAME
    value = event["exception"]["values"][-1]["value"]
    assert value == "stream broke after the first chunk"


def test_normal_response_and_django_404_are_left_alone(
    init_sdk: InitSdk, url: str
) -> None:
    init_with_resolvers(init_sdk)

    r = httpx.get(f"{url}/hello", headers={"X-Request-ID": "hello-1"})
    assert (r.status_code, r.content) == (200, b"hello")
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["x-app"] == "1"
    assert r.headers["x-request-id"] == "hello-1"

    r = httpx.get(f"{url}/missing")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "Not Found" in r.text
    assert REQUEST_ID.fullmatch(r.headers["x-request-id"])


def test_failure_outside_a_view_keeps_djangos_page_and_is_reported_once(
    init_sdk: InitSdk,
    server: LiveServer,
    event_by_request_id: EventByRequestId,
    url: str,
) -> None:
    init_with_resolvers(init_sdk)
    request_id, tenant = unique("outside"), unique("clinic")

    r = httpx.get(
        f"{url}/middleware-boom",
        headers={"X-Request-ID": request_id, "X-Tenant-ID": tenant},
    )

    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-request-id"] == request_id
    event = event_by_request_id(request_id)
    assert event["tags"]["tenant"] == tenant
    exception = event["exception"]["values"][-1]
    assert (exception["type"], exception["value"]) == (
        "LookupError",
        "session store misconfigured",
    )
    assert no_events_from_logger(server, "django.request")


def test_concurrent_requests_keep_their_own_context(
    init_sdk: InitSdk, server: LiveServer, url: str
) -> None:
    init_with_resolvers(init_sdk)
    tenants = [unique("clinic") for _ in range(2)]

    def call(tenant: str) -> httpx.Response:
        return httpx.get(f"{url}/together", headers={"X-Tenant-ID": tenant}, timeout=20)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(call, tenants))

    for tenant, r in zip(tenants, responses, strict=True):
        assert r.status_code == 500
        event = server.wait_event(r.json()["event_id"])
        # A BrokenBarrierError here would mean the requests did not overlap.
        assert event["exception"]["values"][-1]["type"] == "RuntimeError"
        assert event["tags"]["tenant"] == tenant
        assert event["tags"]["request_id"] == r.headers["x-request-id"]
