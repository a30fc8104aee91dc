"""The official ``@sentry/browser`` in headless Chromium, reporting to a live server.

Each test sets the SDK up on the page as an application would, makes it report,
and reads back through the REST API what Faultlens stored: errors (handled,
unhandled, rejected, chained), messages, attachments, feedback, session replay,
the tunnel option, and rate limits that the SDK then honours.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request

from tests.conftest import LiveServer, make_server

RELEASE = "portal@2.3.0"

# Sets the SDK up; ``window.sent`` collects the ids of the events it sends.
INIT = """
([dsn, release, extra]) => {
  window.sent = [];
  const options = {
    dsn,
    release,
    environment: "staging",
    beforeSend(event) { window.sent.push(event.event_id); return event; },
  };
  if (extra.replay) {
    options.integrations = [Sentry.replayIntegration({ maskAllText: true })];
    options.replaysSessionSampleRate = 1.0;
  }
  if (extra.noSessions) {
    options.integrations = (all) => all.filter((i) => i.name !== "BrowserSession");
  }
  if (extra.tunnel) options.tunnel = extra.tunnel;
  Sentry.init(options);
}
"""


def init(page: Page, server: LiveServer, **extra: Any) -> None:
    page.evaluate(INIT, [server.dsn, RELEASE, extra])


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.1)


def sent_ids(page: Page, count: int) -> list[str]:
    """The ids of the first ``count`` events the SDK sent, once it sent them."""
    page.wait_for_function(f"window.sent.length >= {count}", timeout=10_000)
    assert page.evaluate("() => Sentry.flush(5000)")
    ids: list[str] = page.evaluate("window.sent")
    return ids[:count]


@pytest.fixture
def server(module_server: LiveServer) -> LiveServer:
    # Every test sends fresh event ids, so one server serves the module.
    return module_server


def test_errors_and_messages_are_stored_with_the_page_context(
    page: Page, server: LiveServer, page_origin: str
) -> None:
    init(page, server)
    page.evaluate(
        """() => Sentry.captureException(
          new Error("booking failed", { cause: new TypeError("slot is undefined") })
        )"""
    )
    # One at a time: the SDK ignores global errors for a moment after one that it
    # caught itself in a wrapped timer callback.
    page.evaluate("() => { Promise.reject(new Error('loading /patients failed')); }")
    sent_ids(page, 2)
    page.evaluate(
        """() => {
          setTimeout(() => { throw new RangeError("page 3 is out of range"); });
        }"""
    )
    sent_ids(page, 3)
    page.evaluate("() => Sentry.captureMessage('calendar slow to render', 'warning')")
    handled, rejected, thrown, message = (
        server.wait_event(event_id) for event_id in sent_ids(page, 4)
    )

    assert [e["type"] for e in handled["exception"]["values"]] == ["TypeError", "Error"]
    assert handled["exception"]["values"][-1]["mechanism"]["handled"] is True
    assert thrown["exception"]["values"][-1]["type"] == "RangeError"
    assert thrown["exception"]["values"][-1]["mechanism"]["handled"] is False
    assert rejected["exception"]["values"][-1]["value"] == "loading /patients failed"
    assert rejected["exception"]["values"][-1]["mechanism"]["handled"] is False
    assert message["level"] == "warning"
    assert message["title"] == "calendar slow to render"

    for event in (handled, thrown, rejected, message):
        assert event["release"] == RELEASE
        assert event["environment"] == "staging"
        assert event["request"]["url"] == f"{page_origin}/"
        assert "HeadlessChrome" in event["request"]["headers"]["User-Agent"]
    assert len({e["issue_id"] for e in (handled, thrown, rejected, message)}) == 4


def test_the_same_error_from_one_place_is_one_issue(
    page: Page, server: LiveServer
) -> None:
    init(page, server)
    page.evaluate(
        """() => {
          function reserve(slot) { throw new Error(`slot ${slot} is already taken`); }
          for (const slot of [14, 15]) {
            try { reserve(slot); } catch (error) { Sentry.captureException(error); }
          }
        }"""
    )
    first, second = (server.wait_event(i) for i in sent_ids(page, 2))
    assert first["issue_id"] == second["issue_id"]
    with server.api() as api:
        issue = api.get(f"/api/v1/issues/{first['issue_id']}").json()
    assert issue["count"] == 2


def test_attachments_and_feedback_are_kept(page: Page, server: LiveServer) -> None:
    init(page, server)
    event_id = page.evaluate(
        """() => {
          const scope = Sentry.getCurrentScope();
          scope.addAttachment({
            filename: "cart.json",
            data: JSON.stringify({ items: 3 }),
            contentType: "application/json",
          });
          scope.addAttachment({
            filename: "trace.bin", data: new Uint8Array([0, 255, 10, 13, 0]),
          });
          const id = Sentry.captureException(new Error("export failed"));
          scope.clearAttachments();
          Sentry.captureFeedback({
            message: "The export button does nothing",
            associatedEventId: id,
          });
          return id;
        }"""
    )
    sent_ids(page, 1)
    stored = server.wait_event(event_id)

    by_name = {a["filename"]: a for a in stored["attachments"]}
    assert set(by_name) == {"cart.json", "trace.bin"}
    with server.api() as api:
        base = f"/api/v1/projects/{server.project_id}/events/{event_id}/attachments"
        binary = api.get(f"{base}/{by_name['trace.bin']['id']}").content
        assert binary == bytes([0, 255, 10, 13, 0])
        cart = api.get(f"{base}/{by_name['cart.json']['id']}").json()
        assert cart == {"items": 3}

        feedback = f"/api/v1/projects/{server.project_id}/feedback"
        wait_for(
            lambda: "The export button does nothing" in api.get(feedback).text,
            "the feedback stored",
        )


def test_session_replay_segments_are_kept_and_linked_to_the_error(
    page: Page, server: LiveServer
) -> None:
    init(page, server, replay=True)
    page.click("#book")
    page.fill("#patient", "John Doe")
    replay_id = page.evaluate("() => Sentry.getReplay().getReplayId()")
    page.evaluate("() => Sentry.getReplay().flush()")
    page.evaluate("() => Sentry.captureException(new Error('booking timed out'))")
    error = server.wait_event(sent_ids(page, 1)[0])

    # The SDK links an error to the replay running beside it by a tag.
    assert error["tags"]["replayId"] == replay_id
    replay = f"/api/v1/projects/{server.project_id}/replays/{replay_id}"
    with server.api() as api:
        wait_for(lambda: api.get(replay).status_code == 200, "a replay segment")
        first = api.get(replay).json()["segments"][0]
        recording = api.get(f"{replay}/segments/0/recording")
    assert first["segment_id"] == 0
    assert first["event"]["replay_id"] == replay_id
    assert recording.status_code == 200
    events = recording.json()
    # rrweb's full snapshot of the page, with the SDK's masking applied: neither
    # the prefilled nor the typed patient name is in what was stored.
    assert any(e["type"] == 2 for e in events)
    assert "Jane Roe" not in recording.text and "John Doe" not in recording.text
    assert "patient" in recording.text  # the input itself is there, by its name


def test_tunnelled_envelopes_authenticate_by_their_dsn(
    page: Page, server: LiveServer
) -> None:
    tunnel = f"{server.url}/api/{server.project_id}/envelope/"
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))
    init(page, server, tunnel=tunnel)
    page.evaluate("() => Sentry.captureException(new Error('sent through a tunnel'))")
    stored = server.wait_event(sent_ids(page, 1)[0])

    assert stored["exception"]["values"][-1]["value"] == "sent through a tunnel"
    # Posted to the tunnel as given, with no key in the query: the envelope's own
    # header carried the DSN.
    assert any(r.method == "POST" and r.url == tunnel for r in requests)


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[LiveServer]:
    # One envelope every two seconds per key.
    server = make_server(
        tmp_path, FAULTLENS_RATE_KEY_PER_SECOND="0.5", FAULTLENS_RATE_KEY_BURST="1"
    )
    try:
        yield server
    finally:
        server.stop()


def test_the_sdk_honours_the_rate_limit_header_across_origins(
    page: Page, limited_server: LiveServer
) -> None:
    posts: list[Request] = []
    page.on(
        "request",
        lambda r: posts.append(r) if r.url.startswith(limited_server.url) else None,
    )
    init(page, limited_server, noSessions=True)

    def capture(n: int) -> None:
        page.evaluate(f"() => Sentry.captureException(new Error('attempt {n}'))")
        sent_ids(page, n + 1)

    for n in range(3):
        capture(n)
    # The first went through and the second was refused for 2 s; the SDK held the
    # third back without a request.
    assert len(posts) == 2
    refused = posts[1].response()
    assert refused is not None and refused.status == 429
    assert refused.headers["x-sentry-rate-limits"] == "2::key"

    # Past those 2 s it sends again. Had it not been able to read the header across
    # origins, it would hold back for its default of 60 s.
    time.sleep(3)
    capture(3)
    assert len(posts) == 3
    answer = posts[2].response()
    assert answer is not None and answer.status == 200
    limited_server.wait_processed(2)
