"""Real SDK captures replayed over HTTP: framing, auth channels, compression, CORS."""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import sys
import time
import uuid
import zlib
from typing import Any

import brotli
import httpx
import pytest
import zstandard

from tests.captures import capture_handled_exception, capture_message_warning
from tests.conftest import LiveServer, cli, samples_dir


@pytest.fixture
def live_server(module_server: LiveServer) -> LiveServer:
    # Every test here sends fresh event ids, so one server serves them all.
    return module_server


SAMPLES = samples_dir()
ALL = sorted(p.stem for p in SAMPLES.glob("*.envelope"))
EVENT_ID = re.compile(rb'"event_id":"([0-9a-f]{32})"')


def load(name: str) -> tuple[bytes, dict[str, Any]]:
    """A capture's body and request metadata; skips the test when it is missing."""
    if not (SAMPLES / f"{name}.envelope").is_file():
        pytest.skip(f"SDK capture {name!r} not found in {SAMPLES}")
    body = (SAMPLES / f"{name}.envelope").read_bytes()
    meta = json.loads((SAMPLES / f"{name}.headers.json").read_text())
    return body, meta


def rewrite(body: bytes, server: LiveServer) -> tuple[bytes, str | None]:
    """Point a capture at our project and give it a fresh id, so none collide."""
    body = body.replace(
        b"publickey@127.0.0.1:8765/43",
        f"{server.public_key}@x/{server.project_id}".encode(),
    )
    found = EVENT_ID.search(body.split(b"\n", 1)[0])
    if not found:
        return body, None
    fresh = uuid.uuid4().hex
    return body.replace(found.group(1), fresh.encode()), fresh


def browser_headers(meta: dict[str, Any]) -> dict[str, str]:
    keep = {"content-type", "origin", "referer", "user-agent"}
    return {k: v for k, v in meta["headers"] if k.lower() in keep}


def post(
    server: LiveServer,
    body: bytes,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/{server.project_id}/envelope/",
        content=body,
        params=params,
        headers=headers or {},
        timeout=10,
    )


@pytest.mark.parametrize("name", ALL)
def test_every_sample_is_accepted_with_cors(live_server: LiveServer, name: str) -> None:
    body, meta = load(name)
    body, event_id = rewrite(body, live_server)
    if name.startswith("js-tunnel"):
        params: dict[str, str] = {}
    else:
        params = {"sentry_key": live_server.public_key, "sentry_version": "7"}
    r = post(live_server, body, params=params, headers=browser_headers(meta))

    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] in ("*", "http://127.0.0.1:8780")
    assert "x-sentry-rate-limits" in r.headers["access-control-expose-headers"]
    if b'"type":"event"' in body:
        assert r.json() == {"id": event_id}
        live_server.wait_processed(1)
        stored = live_server.event(event_id or "")
        assert stored["issue_id"] > 0


def test_browser_replay_segments_are_kept(live_server: LiveServer) -> None:
    params = {"sentry_key": live_server.public_key}
    replay_id = None
    for name in (
        "js-03-replay-segment0-session-mode",
        "js-10-replay-segment1",
        "js-10-replay-segment1",
    ):
        body, _ = load(name)
        replay_id = json.loads(body.split(b"\n", 1)[0])["event_id"]
        assert post(live_server, body, params=params).status_code == 200
    live_server.wait_processed(0)
    with live_server.api() as api:
        segments = api.get(
            f"/api/v1/projects/{live_server.project_id}/replays/{replay_id}"
        ).json()["segments"]
    # The retried segment 1 is stored once.
    assert [s["segment_id"] for s in segments] == [0, 1]


@pytest.mark.parametrize(
    "name",
    [
        "js-03-replay-segment0-session-mode",
        "js-nocompress-07-replay-segment0-plain-json",
    ],
)
def test_replay_recordings_read_back_as_rrweb_events(
    live_server: LiveServer, name: str
) -> None:
    body, _ = load(name)
    replay_id = json.loads(body.split(b"\n", 1)[0])["event_id"]
    params = {"sentry_key": live_server.public_key}
    assert post(live_server, body, params=params).status_code == 200
    live_server.wait_processed(0)
    with live_server.api() as api:
        r = api.get(
            f"/api/v1/projects/{live_server.project_id}/replays/{replay_id}"
            "/segments/0/recording"
        )
    assert r.status_code == 200, r.text
    # zlib-compressed or plain as sent, it reads back as the same kind of array.
    events = r.json()
    assert any(e["type"] == 2 for e in events)  # rrweb's full snapshot


def test_options_preflight_allows_the_sentry_headers(live_server: LiveServer) -> None:
    r = httpx.options(
        f"{live_server.url}/api/{live_server.project_id}/envelope/",
        headers={"Origin": "http://app.local", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 200
    assert "x-sentry-auth" in r.headers["access-control-allow-headers"]
    assert "POST" in r.headers["access-control-allow-methods"]


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "identity": lambda b: b,
    "": lambda b: b,
}


@pytest.mark.parametrize("encoding", list(ENCODERS))
def test_every_content_encoding_is_decoded(
    live_server: LiveServer, encoding: str
) -> None:
    body, event_id = rewrite(capture_handled_exception(), live_server)
    headers = {
        "X-Sentry-Auth": f"Sentry sentry_key={live_server.public_key}, sentry_version=7"
    }
    if encoding:
        headers["Content-Encoding"] = encoding
    r = post(live_server, ENCODERS[encoding](body), headers=headers)
    assert r.status_code == 200, r.text
    live_server.wait_processed(1)
    assert (
        live_server.event(event_id or "")["exception"]["values"][-1]["type"]
        == "ZeroDivisionError"
    )


def auth_channels(key: str) -> dict[str, dict[str, Any]]:
    return {
        "x-sentry-auth": {
            "headers": {"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7"}
        },
        "authorization-sentry": {
            "headers": {"Authorization": f"sentry sentry_key={key}"}
        },
        "authorization-basic": {
            "headers": {
                "Authorization": "Basic "
                + base64.b64encode(f"{key}:".encode()).decode()
            }
        },
        "query": {"params": {"sentry_key": key, "sentry_version": "7"}},
    }


@pytest.mark.parametrize("channel", list(auth_channels("k")))
def test_every_auth_channel_is_accepted(live_server: LiveServer, channel: str) -> None:
    body, event_id = rewrite(capture_message_warning(), live_server)
    r = post(live_server, body, **auth_channels(live_server.public_key)[channel])
    assert r.status_code == 200, r.text
    assert r.json() == {"id": event_id}


def test_envelope_header_dsn_authenticates_a_tunnelled_envelope(
    live_server: LiveServer,
) -> None:
    body, event_id = rewrite(
        load("js-tunnel-01-event-dsn-in-envelope-header")[0], live_server
    )
    assert post(live_server, body).json() == {"id": event_id}


def test_wrong_keys_get_one_403_that_does_not_say_which(
    live_server: LiveServer,
) -> None:
    body, _ = rewrite(capture_message_warning(), live_server)
    unknown_key = post(live_server, body, params={"sentry_key": "0" * 32})
    with httpx.Client() as c:
        wrong_project = c.post(
            f"{live_server.url}/api/{live_server.project_id + 1}/envelope/",
            content=body,
            params={"sentry_key": live_server.public_key},
        )
    assert unknown_key.status_code == wrong_project.status_code == 403
    assert unknown_key.json() == wrong_project.json()


def test_missing_and_doubled_auth_are_401(live_server: LiveServer) -> None:
    body = capture_message_warning()
    key = live_server.public_key
    assert post(live_server, body).status_code == 401
    doubled = post(
        live_server,
        body,
        params={"sentry_key": key},
        headers={"X-Sentry-Auth": f"Sentry sentry_key={key}"},
    )
    assert doubled.status_code == 401


def test_revoked_key_is_refused_within_the_key_cache_time(
    live_server: LiveServer,
) -> None:
    created = cli(
        live_server.data_dir, "key", "create", "--project", str(live_server.project_id)
    )
    body, _ = rewrite(capture_message_warning(), live_server)
    params = {"sentry_key": created["public_key"]}
    assert post(live_server, body, params=params).status_code == 200

    subprocess.run(
        [
            sys.executable,
            "-m",
            "faultlens",
            "key",
            "revoke",
            created["public_key"],
            "--data-dir",
            str(live_server.data_dir),
        ],
        check=True,
    )
    time.sleep(1.1)  # KeyCache remembers a key for one second.
    assert post(live_server, body, params=params).status_code == 403
