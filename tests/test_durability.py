"""SIGKILL at any moment loses no acknowledged event and stores none twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.captures import capture_handled_exception, with_fresh_event_id
from tests.conftest import LiveServer, make_server

TEMPLATE = capture_handled_exception()


def send_until_refused(
    server: LiveServer, acked: list[str], stop: threading.Event
) -> None:
    headers = {"X-Sentry-Auth": f"Sentry sentry_key={server.public_key}"}
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            event_id, body = with_fresh_event_id(TEMPLATE)
            try:
                r = client.post(
                    f"{server.url}/api/{server.project_id}/envelope/",
                    content=body,
                    headers=headers,
                )
            except httpx.HTTPError:
                return  # The server died under us: this one was not acknowledged.
            if r.status_code == 200:
                acked.append(event_id)


def test_sigkill_while_sending_loses_no_acknowledged_event(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    acked: list[str] = []
    try:
        for round_ in range(3):
            stop = threading.Event()
            senders = [
                threading.Thread(target=send_until_refused, args=(server, acked, stop))
                for _ in range(8)
            ]
            for t in senders:
                t.start()
            time.sleep(1.0 + 0.3 * round_)  # Kill at a different point each round.
            server.kill()
            stop.set()
            for t in senders:
                t.join()
            server.start()

        assert len(acked) > 100, "the load was too light to mean anything"
        stats = server.wait_processed(len(acked), timeout=60)
        with server.api() as api:
            issues = api.get(f"/api/v1/projects/{server.project_id}/issues").json()[
                "data"
            ]
            for event_id in acked:
                r = api.get(f"/api/v1/projects/{server.project_id}/events/{event_id}")
                assert r.status_code == 200, f"acknowledged {event_id} was lost"
        # Every stored event was counted once: no double counting after a replay.
        assert sum(i["count"] for i in issues) == stats["events_stored"]
        assert stats["events_stored"] >= len(set(acked)) == len(acked)
    finally:
        server.stop()
