"""Ingestion details beyond the SDKs' usual path: legacy store, proxies, slashes."""

from __future__ import annotations

import base64
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import LiveServer, make_server


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[LiveServer]:
    server = make_server(tmp_path, FAULTLENS_TRUSTED_PROXIES="127.0.0.1")
    try:
        yield server
    finally:
        server.stop()


def message_envelope(event: dict[str, object]) -> tuple[str, bytes]:
    event_id = uuid.uuid4().hex
    head = orjson.dumps({"event_id": event_id})
    return event_id, head + b"\n" + b'{"type":"event"}\n' + orjson.dumps(event)


def test_auto_ip_comes_from_x_forwarded_for_behind_a_trusted_proxy(
    proxied: LiveServer,
) -> None:
    event_id, body = message_envelope(
        {"message": "hi", "user": {"id": "7", "ip_address": "{{auto}}"}}
    )
    r = httpx.post(
        f"{proxied.url}/api/{proxied.project_id}/envelope/",
        content=body,
        params={"sentry_key": proxied.public_key},
        headers={"X-Forwarded-For": "198.51.100.4, 127.0.0.1"},
    )
    assert r.status_code == 200
    proxied.wait_processed(1)
    assert proxied.event(event_id)["user"]["ip_address"] == "198.51.100.4"


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(
    live_server: LiveServer,
) -> None:
    event_id, body = message_envelope(
        {"message": "hi", "user": {"ip_address": "{{auto}}"}}
    )
    httpx.post(
        f"{live_server.url}/api/{live_server.project_id}/envelope/",
        content=body,
        params={"sentry_key": live_server.public_key},
        headers={"X-Forwarded-For": "198.51.100.4"},
    )
    live_server.wait_processed(1)
    assert live_server.event(event_id)["user"]["ip_address"] == "127.0.0.1"


def test_legacy_store_takes_json_and_base64_zlib(live_server: LiveServer) -> None:
    auth = {"X-Sentry-Auth": f"Sentry sentry_key={live_server.public_key}"}
    plain_id, packed_id = uuid.uuid4().hex, uuid.uuid4().hex
    plain = orjson.dumps({"event_id": plain_id, "message": "old client"})
    packed = base64.b64encode(
        zlib.compress(orjson.dumps({"event_id": packed_id, "message": "older client"}))
    )
    url = f"{live_server.url}/api/{live_server.project_id}/store/"
    assert httpx.post(url, content=plain, headers=auth).json() == {"id": plain_id}
    assert httpx.post(url, content=packed, headers=auth).json() == {"id": packed_id}
    live_server.wait_processed(2)
    assert live_server.event(packed_id)["message"] == "older client"


def test_doubled_slashes_and_a_missing_trailing_slash_still_route(
    live_server: LiveServer,
) -> None:
    for path in (
        f"//api/{live_server.project_id}/envelope/",
        f"/api/{live_server.project_id}/envelope",
    ):
        _, body = message_envelope({"message": "routed"})
        r = httpx.post(
            live_server.url + path,
            content=body,
            params={"sentry_key": live_server.public_key},
        )
        assert r.status_code == 200, path


def test_same_event_sent_twice_is_stored_once(live_server: LiveServer) -> None:
    _, body = message_envelope({"message": "twice"})
    for _ in range(2):
        httpx.post(
            f"{live_server.url}/api/{live_server.project_id}/envelope/",
            content=body,
            params={"sentry_key": live_server.public_key},
        )
    stats = live_server.wait_processed(1)
    assert stats["events_stored"] == 1
    with live_server.api() as api:
        issues = api.get(f"/api/v1/projects/{live_server.project_id}/issues").json()
    assert issues["data"][0]["count"] == 1


def test_origin_allow_list_refuses_other_sites_but_not_servers(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path, FAULTLENS_ALLOWED_ORIGINS="https://portal.example")
    try:

        def post(origin: str | None) -> httpx.Response:
            _, body = message_envelope({"message": "from a page"})
            return httpx.post(
                f"{server.url}/api/{server.project_id}/envelope/",
                content=body,
                params={"sentry_key": server.public_key},
                headers={"Origin": origin} if origin else {},
            )

        assert post("https://portal.example").status_code == 200
        # An SDK in a server sends no Origin at all; the list is about browsers.
        assert post(None).status_code == 200
        refused = post("https://elsewhere.example")
        assert refused.status_code == 403
        # The refusal reads as a bad DSN, the same as for a wrong key.
        assert refused.json() == {"detail": "the DSN is not valid for this project"}
        assert server.wait_processed(2)["events_stored"] == 2
    finally:
        server.stop()
