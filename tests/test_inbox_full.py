"""A full inbox refuses with 503 and Retry-After, loses nothing, and drains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.captures import capture_handled_exception, with_fresh_event_id
from tests.conftest import make_server

TEMPLATE = capture_handled_exception()


def send(client: httpx.Client, url: str) -> tuple[str, httpx.Response]:
    event_id, body = with_fresh_event_id(TEMPLATE)
    return event_id, client.post(url, content=body, headers={"Origin": "http://app"})


def test_full_inbox_refuses_with_503_keeps_what_it_took_and_drains(
    tmp_path: Path,
) -> None:
    # No worker runs, so the inbox only fills; 256 KiB holds a few dozen envelopes.
    server = make_server(
        tmp_path, FAULTLENS_MAX_INBOX_SIZE="262144", FAULTLENS_WORKER_MODE="off"
    )
    url = (
        f"{server.url}/api/{server.project_id}/envelope/?sentry_key={server.public_key}"
    )
    acked: list[str] = []
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(500):
                event_id, r = send(client, url)
                if r.status_code != 200:
                    break
                acked.append(event_id)
            assert r.status_code == 503, r.text
            assert 10 < len(acked) < 500
            assert "inbox is full" in r.json()["detail"]
            assert r.headers["retry-after"] == "30"
            assert r.headers["access-control-allow-origin"] == "http://app"
            ready = client.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert "inbox is full" in " ".join(ready.json()["problems"])

            command = [sys.executable, "-m", "faultlens", "worker"]
            command += ["--data-dir", str(server.data_dir)]
            worker = subprocess.Popen(
                command,
                env={**os.environ, **server.env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                stats = server.wait_processed(len(acked), timeout=60)
                # Processing freed the room: envelopes are taken again.
                event_id, r = send(client, url)
                assert r.status_code == 200, r.text
                acked.append(event_id)
                stats = server.wait_processed(len(acked), timeout=60)
            finally:
                worker.terminate()
                worker.wait(30)

        assert stats["events_stored"] == len(acked)
        for event_id in acked:
            assert server.event(event_id)["event_id"] == event_id
        refused = [o for o in stats["outcomes"] if o["reason"] == "inbox_full"]
        assert refused and refused[0]["outcome"] == "internal"
    finally:
        server.stop()
