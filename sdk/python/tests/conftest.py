"""Fixtures: a live Faultlens server on loopback, and the SDK set up against it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
import uvicorn
from faultlens.testing import LiveServer, make_server

import faultlens_sdk
from faultlens_sdk.config import Options, configure

InitSdk = Callable[..., None]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module; tests tell their events apart by event id."""
    live = make_server(tmp_path_factory.mktemp("server"))
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def init_sdk(server: LiveServer, tmp_path: Path) -> Iterator[InitSdk]:
    """``faultlens_sdk.init`` against the live server, with a private queue."""

    def init(**options: Any) -> None:
        settings: dict[str, Any] = {
            "dsn": server.dsn,
            "environment": "test",
            "release": "app@1.0.0",
            "queue_dir": tmp_path / "queue",
        }
        faultlens_sdk.init(**{**settings, **options})

    yield init
    sentry_sdk.flush(10)
    sentry_sdk.get_client().close()
    # An inactive client; integrations stay off so none outlives its test.
    sentry_sdk.init(default_integrations=False, auto_enabling_integrations=False)
    configure(Options())


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port, in a thread."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


ServeWsgi = Callable[[Callable[..., Any]], str]


@pytest.fixture(scope="module")
def serve_wsgi() -> Iterator[ServeWsgi]:
    """Serve WSGI apps with ``wsgiref`` on free loopback ports, a thread per request.

    Gives a function that starts a server for an app and returns its base URL; the
    servers stop when the module's tests are done.
    """
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            # Access log lines would only bury the output of a failing test.
            pass

    running: list[tuple[WSGIServer, threading.Thread]] = []

    def serve(app: Callable[..., Any]) -> str:
        httpd = ThreadingWSGIServer(("127.0.0.1", 0), QuietHandler)
        httpd.set_app(app)
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        thread.start()
        running.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


EventByRequestId = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="module")
def event_by_request_id(server: LiveServer) -> EventByRequestId:
    """Wait for the stored event tagged with a request id; for reports whose event
    id never reached the client (a response that failed half-way)."""

    def find(request_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with server.api() as api:
            while True:
                issues = api.get(
                    f"/api/v1/projects/{server.project_id}/issues",
                    params={"query": f"request_id:{request_id}"},
                ).json()["data"]
                for issue in issues:
                    events = api.get(
                        f"/api/v1/issues/{issue['id']}/events", params={"limit": 100}
                    ).json()["data"]
                    for summary in events:
                        if summary["tags"].get("request_id") == request_id:
                            event: dict[str, Any] = server.event(summary["event_id"])
                            return event
                if time.monotonic() > deadline:
                    raise AssertionError(f"no event for request {request_id}")
                time.sleep(0.05)

    return find
