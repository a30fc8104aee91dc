"""OfflineTransport against real servers on loopback: a live Faultlens, and small
``http.server`` stubs where a test needs to choose the answers (429, 5xx, 400)."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from faultlens.testing import free_port, make_server
from sentry_sdk.envelope import Envelope, Item, PayloadRef

from faultlens_sdk.transport import (
    OfflineTransport,
    parse_rate_limits,
    parse_retry_after,
)

# -- helpers ---------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def queue_files(queue_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in queue_dir.iterdir()
        if p.name.endswith(".envelope") and not p.name.startswith(".")
    )


def queued_event_ids(queue_dir: Path) -> list[str]:
    ids = []
    for path in queue_files(queue_dir):
        event_id = Envelope.deserialize(path.read_bytes()).headers.get("event_id")
        if event_id:
            ids.append(event_id)
    return ids


def event_envelope(message: str = "boom", pad: int = 0) -> tuple[str, Envelope]:
    event_id = uuid.uuid4().hex
    event = {
        "event_id": event_id,
        "message": message,
        "level": "error",
        "platform": "python",
        "timestamp": round(time.time(), 3),
        "extra": {"pad": "x" * pad},
    }
    envelope = Envelope(headers={"event_id": event_id})
    envelope.add_item(Item(PayloadRef(json=event), type="event"))
    return event_id, envelope


def session_envelope() -> Envelope:
    envelope = Envelope()
    envelope.add_item(
        Item(
            PayloadRef(
                json={
                    "sid": uuid.uuid4().hex,
                    "status": "exited",
                    "errors": 0,
                    "started": "2024-01-01T00:00:00Z",
                    "attrs": {"release": "test"},
                }
            ),
            type="session",
        )
    )
    return envelope


@dataclass
class Received:
    """One request the stub answered."""

    at: float
    replied_at: float  # just before the answer was written
    status: int
    path: str
    headers: dict[str, str]
    envelope: Envelope

    @property
    def event_id(self) -> str | None:
        value = self.envelope.headers.get("event_id")
        return value if isinstance(value, str) else None

    @property
    def types(self) -> list[str | None]:
        return [item.type for item in self.envelope.items]

    def discarded(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in self.envelope.items:
            if item.type == "client_report":
                out += json.loads(item.get_bytes())["discarded_events"]
        return out


class StubServer:
    """An envelope endpoint answering from ``responses`` (then 200) and recording."""

    def __init__(self, port: int = 0) -> None:
        self.responses: list[tuple[int, dict[str, str]]] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                at = time.monotonic()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                envelope = Envelope.deserialize(body)
                with stub._lock:
                    status, extra = (
                        stub.responses.pop(0) if stub.responses else (200, {})
                    )
                    stub.received.append(
                        Received(
                            at,
                            time.monotonic(),
                            status,
                            self.path,
                            dict(self.headers),
                            envelope,
                        )
                    )
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/42"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        wait_until(lambda: len(self.requests()) >= count, timeout, f"{count} requests")
        return self.requests()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer()
    yield server
    server.close()


@pytest.fixture
def transports() -> Iterator[Callable[..., OfflineTransport]]:
    made: list[OfflineTransport] = []

    def make(dsn: str, queue_dir: Path, **options: Any) -> OfflineTransport:
        transport = OfflineTransport(dsn, queue_dir=queue_dir, **options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.kill()


# -- offline, across processes -----------------------------------------------------

# The app process: a Starlette app behind the middleware, set up by
# faultlens_sdk.init as a service would be; its routes fail, each with its own error.
CHILD = """
import asyncio, sys
import httpx, sentry_sdk
from starlette.applications import Starlette
from starlette.routing import Route
import faultlens_sdk

mode, dsn, queue_dir = sys.argv[1:4]
faultlens_sdk.init(
    dsn=dsn, queue_dir=queue_dir, release="offline-test", rate_limit=None,
    shutdown_timeout=2,
)

async def failing(request):
    raise ValueError(f"offline failure {request.path_params['n']}")

app = Starlette(routes=[Route("/visits/{n}", failing)])
app.add_middleware(faultlens_sdk.FaultlensMiddleware)

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for n in range(200):
            r = await client.get(f"/visits/{n}")
            assert r.status_code == 500, r.text
            print(r.json()["event_id"], flush=True)

if mode == "capture":
    asyncio.run(main())
else:
    sentry_sdk.flush(30)
"""


def run_child(mode: str, dsn: str, queue_dir: Path) -> tuple[float, list[str]]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, dsn, str(queue_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    return elapsed, out.stdout.split()


def test_offline_events_survive_the_process_and_arrive_once(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    server.stop()
    queue_dir = tmp_path / "queue"
    try:
        elapsed, event_ids = run_child("capture", server.dsn, queue_dir)
        assert len(set(event_ids)) == 200
        # The atexit flush gives up once the server is in backoff; nothing waits on it.
        assert elapsed < 10, f"capturing process took {elapsed:.1f} s to exit"
        assert set(event_ids) <= set(queued_event_ids(queue_dir))

        server.start()
        run_child("send", server.dsn, queue_dir)
        assert queue_files(queue_dir) == []
        stats = server.wait_processed(200)
        assert stats["events_stored"] == 200
        # One outcome per event item received: a resent envelope would add one.
        received = sum(
            o["quantity"] for o in stats["outcomes"] if o["category"] == "error"
        )
        assert received == 200
        with server.api() as api:
            for event_id in event_ids:
                r = api.get(f"/api/v1/projects/{server.project_id}/events/{event_id}")
                assert r.status_code == 200 and r.json()["event_id"] == event_id
    finally:
        server.stop()


# -- rate limits ---------------------------------------------------------------------


def test_rate_limited_category_waits_and_others_pass(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    stub.responses = [(429, {"X-Sentry-Rate-Limits": "2:error:key"})]
    transport = transports(stub.dsn, tmp_path / "q")
    event_id, envelope = event_envelope()
    transport.capture_envelope(envelope)
    limited = stub.wait_requests(1)[0]
    assert limited.event_id == event_id and limited.status == 429
    wait_until(lambda: not transport.is_healthy(), what="unhealthy while limited")

    transport.capture_envelope(session_envelope())
    received = stub.wait_requests(3)
    session = next(r for r in received if "session" in r.types)
    retries = [r for r in received[1:] if r.event_id == event_id]
    assert session.at - limited.replied_at < 2.0, "sessions were not limited"
    assert len(retries) == 1 and retries[0].status == 200
    assert retries[0].at - limited.replied_at >= 2.0, "error sent during its limit"
    assert all(r.discarded() == [] for r in received), "something was counted lost"
    wait_until(lambda: queue_files(tmp_path / "q") == [], what="empty queue")
    assert transport.is_healthy()


def test_retry_after_without_categories_holds_everything(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    stub.responses = [(429, {"Retry-After": "2"})]
    transport = transports(stub.dsn, tmp_path / "q")
    event_id, envelope = event_envelope()
    transport.capture_envelope(envelope)
    limited = stub.wait_requests(1)[0]
    wait_until(lambda: not transport.is_healthy(), what="unhealthy while limited")
    transport.capture_envelope(session_envelope())

    received = stub.wait_requests(3)
    assert all(r.at - limited.replied_at >= 2.0 for r in received[1:])
    assert [r.event_id for r in received].count(event_id) == 2
    assert all(r.status == 200 for r in received[1:])
    assert all(r.discarded() == [] for r in received)
    wait_until(lambda: queue_files(tmp_path / "q") == [], what="empty queue")


def test_rate_limit_headers_parse() -> None:
    assert parse_rate_limits("2:error;transaction:key, 10::organization, x:y") == [
        ("error", 2.0),
        ("transaction", 2.0),
        (None, 10.0),
    ]
    assert parse_retry_after("2") == 2.0
    in_30s = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(in_30s)
    assert seconds is not None and 28 <= seconds <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- failures --------------------------------------------------------------------------


def test_server_errors_are_retried_until_delivered(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    stub.responses = [(503, {}), (500, {})]
    transport = transports(stub.dsn, tmp_path / "q", backoff_base=0.05, backoff_max=0.2)
    event_id, envelope = event_envelope()
    transport.capture_envelope(envelope)

    received = stub.wait_requests(3)
    assert [r.status for r in received] == [503, 500, 200]
    assert {r.event_id for r in received} == {event_id}
    first = received[0]
    assert first.path == "/api/42/envelope/"
    assert first.headers["Content-Type"] == "application/x-sentry-envelope"
    assert first.headers["Content-Encoding"] == "gzip"
    assert "sentry_key=publickey" in first.headers["X-Sentry-Auth"]
    wait_until(lambda: queue_files(tmp_path / "q") == [], what="empty queue")
    time.sleep(0.3)
    assert len(stub.requests()) == 3, "a delivered envelope was sent again"
    assert transport.is_healthy()


def test_unreachable_server_keeps_the_queue_until_it_appears(
    transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    port = free_port()
    queue_dir = tmp_path / "q"
    transport = transports(
        f"http://publickey@127.0.0.1:{port}/42",
        queue_dir,
        backoff_base=0.05,
        backoff_max=0.2,
    )
    event_id, envelope = event_envelope()
    transport.capture_envelope(envelope)
    wait_until(lambda: not transport.is_healthy(), what="unhealthy while refused")
    assert queued_event_ids(queue_dir) == [event_id]

    server = StubServer(port)
    try:
        received = server.wait_requests(1)
        assert received[0].event_id == event_id
        wait_until(lambda: queue_files(queue_dir) == [], what="empty queue")
        wait_until(transport.is_healthy, what="healthy again")
    finally:
        server.close()


def test_rejected_envelope_is_dropped_and_reported(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    stub.responses = [(400, {})]
    queue_dir = tmp_path / "q"
    transport = transports(stub.dsn, queue_dir)
    rejected_id, rejected = event_envelope("rejected")
    transport.capture_envelope(rejected)
    stub.wait_requests(1)
    wait_until(lambda: queue_files(queue_dir) == [], what="rejected file deleted")

    accepted_id, accepted = event_envelope("accepted")
    transport.capture_envelope(accepted)
    received = stub.wait_requests(2)
    assert [r.event_id for r in received] == [rejected_id, accepted_id]
    assert received[1].discarded() == [
        {"reason": "send_error", "category": "error", "quantity": 1}
    ]
    time.sleep(0.3)
    assert len(stub.requests()) == 2, "the rejected envelope was sent again"


def test_leftover_files_are_sent_and_unreadable_ones_reported(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    queue_dir = tmp_path / "q"
    queue_dir.mkdir()
    event_id, envelope = event_envelope("left behind")
    (queue_dir / "1-garbage.envelope").write_bytes(b"not an envelope\n{\n")
    (queue_dir / "2-left.envelope").write_bytes(envelope.serialize())
    transport = transports(stub.dsn, queue_dir)
    transport.flush(5)
    assert queue_files(queue_dir) == []
    received = stub.requests()
    assert [r.event_id for r in received if r.event_id] == [event_id]
    # The loss rides along with the event, or, when the flush wrote the counts out
    # before the sender took them, in a client report of its own: once either way.
    assert [d for r in received for d in r.discarded()] == [
        {"reason": "internal_sdk_error", "category": "default", "quantity": 1}
    ]


# -- bounds ----------------------------------------------------------------------------


def test_full_memory_queue_counts_instead_of_blocking(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    transport = transports(stub.dsn, tmp_path / "q", memory_queue_size=0)
    for _ in range(3):
        transport.capture_envelope(event_envelope()[1])
    transport.flush(5)
    received = stub.wait_requests(1)
    assert [r.types for r in received] == [["client_report"]]
    assert received[0].discarded() == [
        {"reason": "queue_overflow", "category": "error", "quantity": 3}
    ]


def test_queue_cap_drops_oldest_and_reports_them(
    tmp_path: Path, transports: Callable[..., OfflineTransport]
) -> None:
    server = make_server(tmp_path)
    server.stop()
    queue_dir = tmp_path / "q"
    envelopes = [event_envelope(f"capped {i:02d}", pad=2000) for i in range(10)]
    size = len(envelopes[0][1].serialize())
    offline = transports(
        server.dsn, queue_dir, max_queue_bytes=3 * size + size // 2, backoff_base=5
    )
    try:
        for _, envelope in envelopes:
            offline.capture_envelope(envelope)
        offline.flush(1.0)
        kept = [event_id for event_id, _ in envelopes[-3:]]
        assert queued_event_ids(queue_dir) == kept
        offline.kill()

        server.start()
        online = transports(server.dsn, queue_dir)
        online.flush(10)
        assert queue_files(queue_dir) == []
        stats = server.wait_processed(3)
        assert stats["events_stored"] == 3
        assert stats["counters"]["client_discard.error.queue_overflow"] == 7
        for event_id in kept:
            server.event(event_id)
    finally:
        server.stop()


def test_capture_does_not_wait_for_a_hanging_server(
    transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    # Accepts connections and never answers: every request hangs until its timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    accepting = threading.Thread(
        target=lambda: held.append(listener.accept()[0]), daemon=True
    )
    accepting.start()
    port = listener.getsockname()[1]
    queue_dir = tmp_path / "q"
    transport = transports(
        f"http://publickey@127.0.0.1:{port}/42", queue_dir, timeout=2.0
    )
    try:
        transport.capture_envelope(event_envelope()[1])
        wait_until(lambda: held, what="the sender to be stuck in a request")

        started = time.monotonic()
        for _ in range(1000):
            transport.capture_envelope(event_envelope()[1])
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, f"1000 captures took {elapsed:.2f} s"

        transport.flush(0)
        assert len(queue_files(queue_dir)) == 1001
        started = time.monotonic()
        transport.kill()
        assert time.monotonic() - started < 1.5
    finally:
        for conn in held:
            conn.close()
        listener.close()


def test_only_the_lock_holder_sends_and_others_take_over(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    queue_dir = tmp_path / "q"
    queue_dir.mkdir()
    # Left by other writers: an unfinished temp file and something unrelated.
    (queue_dir / ".tmp-unfinished").write_bytes(b"half an envelope")
    (queue_dir / "notes.txt").write_text("not an envelope")
    # Another process holds the sender lock.
    holder = os.open(queue_dir / ".sender.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        transport = transports(stub.dsn, queue_dir, poll_interval=0.1)
        event_id, envelope = event_envelope()
        transport.capture_envelope(envelope)
        wait_until(lambda: queued_event_ids(queue_dir) == [event_id])
        time.sleep(0.5)
        assert stub.requests() == [], "sent without holding the lock"
    finally:
        os.close(holder)

    received = stub.wait_requests(1, timeout=5)
    assert received[0].event_id == event_id
    wait_until(lambda: queue_files(queue_dir) == [], what="empty queue")
    assert (queue_dir / ".tmp-unfinished").exists()
    assert (queue_dir / "notes.txt").exists()


def test_forked_child_queues_and_leaves_sending_to_the_holder(
    stub: StubServer, transports: Callable[..., OfflineTransport], tmp_path: Path
) -> None:
    queue_dir = tmp_path / "q"
    transport = transports(stub.dsn, queue_dir, poll_interval=0.1)
    warm_id, warm = event_envelope("before fork")
    transport.capture_envelope(warm)
    stub.wait_requests(1)  # the parent now holds the sender lock

    child_id, child_envelope = event_envelope("from the child")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            transport.capture_envelope(child_envelope)
            transport.flush(5)
            code = 0 if queue_files(queue_dir) == [] else 2
            transport.kill()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    stub.wait_requests(2)
    time.sleep(0.3)
    assert [r.event_id for r in stub.requests()] == [warm_id, child_id]
