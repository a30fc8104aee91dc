"""The query API over events sent by the real SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk

from tests.conftest import LiveServer


def fail(kind: str, n: int) -> None:
    if kind == "key":
        raise KeyError(f"patient {n}")
    if kind == "value":
        raise ValueError(f"bad dose {n}")
    raise TimeoutError(f"lab system timed out after {n} ms")


def capture(kind: str, n: int) -> None:
    # Captured here, so every event's stack is the same whoever calls.
    try:
        fail(kind, n)
    except Exception:
        sentry_sdk.capture_exception()


@pytest.fixture
def populated(live_server: LiveServer) -> Iterator[LiveServer]:
    """Three issues: 3 KeyErrors (2 users), 2 ValueErrors, 1 TimeoutError."""
    sentry_sdk.init(dsn=live_server.dsn, environment="production", release="r1")
    plan = [
        ("key", "u1", "north"),
        ("key", "u2", "north"),
        ("key", "u1", "south"),
        ("value", "u3", "south"),
        ("value", "u3", "south"),
        ("timeout", None, "east"),
    ]
    for n, (kind, user, tenant) in enumerate(plan):
        with sentry_sdk.new_scope() as scope:
            scope.set_user({"id": user} if user else None)
            scope.set_tag("tenant", tenant)
            if kind == "timeout":
                scope.set_tag("environment", "staging")
                scope.set_level("warning")
            capture(kind, n)
    sentry_sdk.flush(timeout=5)
    live_server.wait_processed(len(plan))
    yield live_server
    sentry_sdk.get_client().close()


def issues(server: LiveServer, **params: Any) -> dict[str, Any]:
    with server.api() as api:
        r = api.get(f"/api/v1/projects/{server.project_id}/issues", params=params)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def titles(page: dict[str, Any]) -> list[str]:
    return [i["title"].split(":")[0] for i in page["data"]]


def test_issues_group_and_count(populated: LiveServer) -> None:
    page = issues(populated, sort="count")
    assert titles(page) == ["KeyError", "ValueError", "TimeoutError"]
    by_title = {i["title"].split(":")[0]: i for i in page["data"]}
    assert by_title["KeyError"]["count"] == 3
    assert by_title["KeyError"]["user_count"] == 2
    assert set(page["data"][0]) >= {
        "id",
        "title",
        "culprit",
        "level",
        "status",
        "count",
        "user_count",
        "first_seen",
        "last_seen",
    }


def test_filters_by_tag_user_level_and_text(populated: LiveServer) -> None:
    assert titles(issues(populated, query="tenant:south", sort="count")) == [
        "KeyError",
        "ValueError",
    ]
    assert titles(issues(populated, query="user:id:u3")) == ["ValueError"]
    assert titles(issues(populated, query="level:warning")) == ["TimeoutError"]
    assert titles(issues(populated, query="release:r1 lab")) == ["TimeoutError"]
    assert issues(populated, query="tenant:nowhere")["data"] == []


def test_cursor_pages_through_every_issue_once(populated: LiveServer) -> None:
    seen: list[int] = []
    cursor = None
    while True:
        page = issues(populated, limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [i["id"] for i in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 3


def test_bulk_resolve_then_regression_reopens(populated: LiveServer) -> None:
    ids = [i["id"] for i in issues(populated)["data"]]
    with populated.api() as api:
        r = api.patch(
            f"/api/v1/projects/{populated.project_id}/issues",
            json={"ids": ids, "status": "resolved"},
        )
        assert r.json()["updated"] == 3
    assert issues(populated, status="unresolved")["data"] == []

    capture("value", 99)
    sentry_sdk.flush(timeout=5)
    populated.wait_processed(7)
    assert titles(issues(populated, query="is:unresolved")) == ["ValueError"]


def test_merge_folds_counts_into_one_issue(populated: LiveServer) -> None:
    page = issues(populated, sort="count")
    ids = [i["id"] for i in page["data"][:2]]
    with populated.api() as api:
        r = api.patch(
            f"/api/v1/projects/{populated.project_id}/issues",
            json={"ids": ids, "merge": True},
        )
        target = r.json()["merged_into"]
        merged = api.get(f"/api/v1/issues/{target}").json()
        events = api.get(
            f"/api/v1/issues/{target}/events", params={"limit": 100}
        ).json()
    assert merged["count"] == 5 and len(events["data"]) == 5
    assert merged["user_count"] == 3
    # New events of a merged-away group land in the merged issue.
    capture("key", 100)
    sentry_sdk.flush(timeout=5)
    populated.wait_processed(7)
    assert len(issues(populated)["data"]) == 2


def test_delete_removes_issue_and_events(populated: LiveServer) -> None:
    first = issues(populated, sort="count")["data"][0]
    with populated.api() as api:
        r = api.delete(
            f"/api/v1/projects/{populated.project_id}/issues",
            params={"id": first["id"]},
        )
        assert r.json() == {"deleted": 1}
        assert api.get(f"/api/v1/issues/{first['id']}").status_code == 404


def test_issue_detail_has_hourly_and_tag_counts(populated: LiveServer) -> None:
    top = issues(populated, sort="count")["data"][0]
    with populated.api() as api:
        detail = api.get(f"/api/v1/issues/{top['id']}").json()
    assert sum(h["count"] for h in detail["hourly"]) == 3
    assert {t["value"]: t["count"] for t in detail["tags"]["tenant"]} == {
        "north": 2,
        "south": 1,
    }
    assert detail["tags"]["environment"] == [{"value": "production", "count": 3}]


def test_api_needs_a_token_and_answers_problems(live_server: LiveServer) -> None:
    r = httpx.get(f"{live_server.url}/api/v1/projects/{live_server.project_id}/issues")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    with live_server.api() as api:
        bad = api.get(
            f"/api/v1/projects/{live_server.project_id}/issues",
            params={"sort": "nonsense"},
        )
        assert bad.status_code == 422
        assert bad.json()["status"] == 422
        assert api.get("/api/v1/issues/999999").status_code == 404


def test_openapi_and_health(live_server: LiveServer) -> None:
    spec = httpx.get(f"{live_server.url}/api/v1/openapi.json").json()
    assert "/api/v1/projects/{project_id}/issues" in spec["paths"]
    assert httpx.get(f"{live_server.url}/api/v1/docs").status_code == 200
    assert httpx.get(f"{live_server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["inbox_lag"] == 0
