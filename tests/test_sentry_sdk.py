"""The official `sentry-sdk`, unchanged, reporting to a live Faultlens on loopback."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk

from tests.conftest import LiveServer


@pytest.fixture
def sdk(live_server: LiveServer) -> Iterator[LiveServer]:
    yield live_server
    sentry_sdk.flush(timeout=5)
    client = sentry_sdk.get_client()
    client.close()


def init(server: LiveServer, **options: Any) -> None:
    sentry_sdk.init(
        dsn=server.dsn,
        environment="staging",
        release="shop@1.4.2",
        default_integrations=True,
        **options,
    )


def flush_and_get(server: LiveServer, event_id: str | None) -> dict[str, Any]:
    assert event_id is not None
    sentry_sdk.flush(timeout=5)
    server.wait_processed(1)
    return server.event(event_id)


def checkout(order: dict[str, int]) -> float:
    return order["total"] / order["items"]


def test_handled_exception_is_stored_with_its_context(sdk: LiveServer) -> None:
    init(sdk)
    sentry_sdk.set_user({"id": "u-17", "email": "nurse@example.org"})
    sentry_sdk.set_tag("tenant", "clinic-3")
    sentry_sdk.add_breadcrumb(category="cart", message="opened cart")
    try:
        checkout({"total": 10, "items": 0})
    except ZeroDivisionError:
        event_id = sentry_sdk.capture_exception()

    event = flush_and_get(sdk, event_id)
    assert event["event_id"] == event_id
    assert event["environment"] == "staging"
    assert event["release"] == "shop@1.4.2"
    assert event["tags"]["tenant"] == "clinic-3"
    assert event["user"]["id"] == "u-17"
    assert event["exception"]["values"][-1]["type"] == "ZeroDivisionError"
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "checkout"
    assert any(
        b.get("message") == "opened cart" for b in event["breadcrumbs"]["values"]
    )
    assert isinstance(event["timestamp"], float)

    with sdk.api() as api:
        issue = api.get(f"/api/v1/issues/{event['issue_id']}").json()
    assert issue["title"].startswith("ZeroDivisionError")
    assert issue["count"] == 1 and issue["user_count"] == 1
    assert {"value": "clinic-3", "count": 1} in issue["tags"]["tenant"]


def test_chained_exception_keeps_the_cause_first(sdk: LiveServer) -> None:
    init(sdk)
    try:
        try:
            {}["region"]
        except KeyError as exc:
            raise RuntimeError("config incomplete") from exc
    except RuntimeError:
        event_id = sentry_sdk.capture_exception()

    event = flush_and_get(sdk, event_id)
    types = [v["type"] for v in event["exception"]["values"]]
    assert types == ["KeyError", "RuntimeError"]


def test_message_and_logging_events_are_stored(sdk: LiveServer) -> None:
    init(sdk)
    message_id = sentry_sdk.capture_message("disk almost full", level="warning")
    logging.getLogger("billing").error("Order %s failed for %s", "A-1", "B-2")
    sentry_sdk.flush(timeout=5)
    sdk.wait_processed(2)

    message = sdk.event(message_id or "")
    assert message["level"] == "warning"
    assert message["message"] == "disk almost full"
    with sdk.api() as api:
        issues = api.get(
            f"/api/v1/projects/{sdk.project_id}/issues",
            params={"query": "logger:billing"},
        ).json()["data"]
    assert len(issues) == 1
    assert issues[0]["level"] == "error"


def test_attachments_are_stored_and_listed(sdk: LiveServer) -> None:
    init(sdk)
    binary = bytes(range(256)) + b"\n\x00\r\n"
    with sentry_sdk.new_scope() as scope:
        scope.add_attachment(bytes=binary, filename="dump.bin")
        scope.add_attachment(
            bytes=b'{"a": 1}', filename="state.json", content_type="application/json"
        )
        event_id = sentry_sdk.capture_message("with attachments")

    event = flush_and_get(sdk, event_id)
    names = {a["filename"]: a for a in event["attachments"]}
    assert set(names) == {"dump.bin", "state.json"}
    assert names["state.json"]["content_type"] == "application/json"
    with sdk.api() as api:
        r = api.get(
            f"/api/v1/projects/{sdk.project_id}/events/{event_id}/attachments/"
            f"{names['dump.bin']['id']}"
        )
    assert r.content == binary


@pytest.mark.parametrize("algo", ["gzip", "br", "none"])
def test_every_sdk_compression_is_accepted(sdk: LiveServer, algo: str) -> None:
    experiments: dict[str, Any] = (
        {"transport_compression_level": 0}
        if algo == "none"
        else {"transport_compression_algo": algo}
    )
    init(sdk, _experiments=experiments)
    event_id = sentry_sdk.capture_message(f"compressed with {algo}")
    assert flush_and_get(sdk, event_id)["message"] == f"compressed with {algo}"


def test_unhandled_exception_from_a_process_is_stored(live_server: LiveServer) -> None:
    script = textwrap.dedent(
        f"""
        import sentry_sdk
        sentry_sdk.init(dsn={live_server.dsn!r})
        def boot():
            raise LookupError("no such ward")
        boot()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60
    )
    assert proc.returncode == 1
    live_server.wait_processed(1)
    with live_server.api() as api:
        issue = api.get(f"/api/v1/projects/{live_server.project_id}/issues").json()[
            "data"
        ][0]
        events = api.get(f"/api/v1/issues/{issue['id']}/events").json()["data"]
    event = live_server.event(events[0]["event_id"])
    value = event["exception"]["values"][-1]
    assert value["type"] == "LookupError"
    assert value["mechanism"]["handled"] is False


def test_rate_limit_headers_are_honoured_by_the_sdk(tmp_path: Any) -> None:
    from tests.conftest import make_server

    server = make_server(
        tmp_path, FAULTLENS_RATE_KEY_PER_SECOND="0.01", FAULTLENS_RATE_KEY_BURST="2"
    )
    try:
        sent: list[int] = []
        init(server, before_send=lambda e, h: (sent.append(1), e)[1])
        for i in range(6):
            sentry_sdk.capture_message(f"noisy {i}")
            sentry_sdk.flush(timeout=5)
        # Two pass, the third is refused with 429 + X-Sentry-Rate-Limits, and the SDK
        # then drops the rest locally without sending them.
        server.wait_processed(2)
        with server.api() as api:
            stats = api.get(f"/api/v1/projects/{server.project_id}/stats").json()
        refused = [o for o in stats["outcomes"] if o["outcome"] == "rate_limited"]
        assert stats["events_stored"] == 2
        assert sum(o["quantity"] for o in refused) == 1
    finally:
        sentry_sdk.get_client().close()
        server.stop()
