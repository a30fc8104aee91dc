"""The REST API under ``/api/v1/``: issues, events, projects, stats.

Every route needs ``Authorization: Bearer <token>`` (``faultlens token create``).
Errors are ``application/problem+json`` documents (RFC 9457). Lists are paginated
with an opaque ``cursor``: pass a response's ``next_cursor`` to get the next page.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from faultlens.config import Limits
from faultlens.ingest.decompress import decompress_replay
from faultlens.ingest.errors import IngestError
from faultlens.storage.ports import IssueStatus, transition
from faultlens.storage.sqlite.inbox import SqliteInbox
from faultlens.storage.sqlite.store import NotFound, SqliteStore

_bearer = HTTPBearer(auto_error=False)


class Problem(HTTPException):
    """An API error, answered as a problem document."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(status, detail)
        self.title = title


class IssueOut(BaseModel):
    id: int
    project_id: int
    title: str
    culprit: str
    level: str
    status: IssueStatus
    count: int
    user_count: int
    first_seen: float
    last_seen: float


class IssueList(BaseModel):
    data: list[IssueOut]
    next_cursor: str | None


class IssueUpdate(BaseModel):
    """A bulk change: set ``status``, or ``merge`` the issues into the oldest one."""

    ids: list[int] = Field(min_length=1, max_length=1000)
    status: IssueStatus | None = None
    merge: bool = False


class ProjectOut(BaseModel):
    id: int
    slug: str
    name: str
    grouping_version: str


def build_api(store: SqliteStore, inbox: SqliteInbox, limits: Limits) -> APIRouter:
    """The ``/api/v1`` routes over ``store``."""

    def authorized(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if creds is None or not store.check_token(creds.credentials):
            raise Problem(401, "Unauthorized", "send Authorization: Bearer <api token>")

    router = APIRouter(prefix="/api/v1", dependencies=[Depends(authorized)])

    @router.get("/projects", response_model=list[ProjectOut])
    def list_projects() -> list[dict[str, Any]]:
        return [p.__dict__ for p in store.list_projects()]

    @router.get("/projects/{project_id}/issues", response_model=IssueList)
    def list_issues(
        project_id: int,
        status: IssueStatus | None = None,
        query: Annotated[str, Query(max_length=1000)] = "",
        sort: Literal["last_seen", "first_seen", "count"] = "last_seen",
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
    ) -> dict[str, Any]:
        """Issues of a project, filtered by ``query`` and ``status``.

        ``query`` takes free words (matched in title and culprit) and ``key:value``
        terms: ``environment:``, ``release:``, ``level:``, ``tenant:``, ``user:``,
        ``is:unresolved|resolved|ignored`` and any tag. Quote values with spaces.
        """
        _project(store, project_id)
        text, filters, wanted_status = _parse_query(query)
        issues = store.search_issues(
            project_id,
            status=(status.value if status else wanted_status),
            text=text,
            filters=filters,
            sort=sort,
            after=_decode_cursor(cursor),
            limit=limit + 1,
        )
        page, more = issues[:limit], len(issues) > limit
        next_cursor = None
        if more:
            last = page[-1]
            next_cursor = _encode_cursor(getattr(last, sort), last.id)
        return {"data": [i.to_json() for i in page], "next_cursor": next_cursor}

    @router.patch("/projects/{project_id}/issues")
    def update_issues(project_id: int, change: IssueUpdate) -> dict[str, Any]:
        """Resolve, ignore or unresolve issues in bulk, or merge them."""
        _project(store, project_id)
        if change.merge == (change.status is not None):
            raise Problem(400, "Bad Request", "give exactly one of status or merge")
        if change.merge:
            try:
                target = store.merge_issues(project_id, change.ids)
            except NotFound as exc:
                raise Problem(404, "Not Found", str(exc)) from exc
            return {"merged_into": target}
        assert change.status is not None
        for issue_id in change.ids:
            try:
                current = store.get_issue(issue_id).status
            except NotFound:
                continue
            transition(current, change.status)
        updated = store.set_status(project_id, change.ids, change.status)
        return {"updated": updated, "status": change.status.value}

    @router.delete("/projects/{project_id}/issues")
    def delete_issues(
        project_id: int, id: Annotated[list[int], Query(min_length=1, max_length=1000)]
    ) -> dict[str, Any]:
        """Delete issues and their events: ``?id=1&id=2``."""
        _project(store, project_id)
        return {"deleted": store.delete_issues(project_id, id)}

    @router.get("/issues/{issue_id}")
    def get_issue(issue_id: int) -> dict[str, Any]:
        """The issue with hourly counts and tag value counts."""
        try:
            return store.issue_details(issue_id)
        except NotFound as exc:
            raise Problem(404, "Not Found", str(exc)) from exc

    @router.get("/issues/{issue_id}/events")
    def issue_events(
        issue_id: int,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
    ) -> dict[str, Any]:
        try:
            rows = store.issue_events(
                issue_id, after=_decode_cursor(cursor), limit=limit + 1
            )
        except NotFound as exc:
            raise Problem(404, "Not Found", str(exc)) from exc
        page = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            row_id, last = page[-1]
            next_cursor = _encode_cursor(last["timestamp"], row_id)
        return {"data": [e for _, e in page], "next_cursor": next_cursor}

    @router.get("/projects/{project_id}/events/{event_id}")
    def get_event(project_id: int, event_id: str) -> dict[str, Any]:
        """The normalised event, its ``issue_id`` and its attachments."""
        try:
            return store.get_event(project_id, event_id.replace("-", "").lower())
        except NotFound as exc:
            raise Problem(404, "Not Found", str(exc)) from exc

    @router.get("/projects/{project_id}/events/{event_id}/attachments/{attachment_id}")
    def get_attachment(project_id: int, event_id: str, attachment_id: int) -> Response:
        try:
            content_type, payload = store.get_attachment(
                project_id, event_id, attachment_id
            )
        except NotFound as exc:
            raise Problem(404, "Not Found", str(exc)) from exc
        return Response(payload, media_type=content_type)

    @router.get("/projects/{project_id}/stats")
    def stats(project_id: int) -> dict[str, Any]:
        """Stored events and issues, counters, and outcomes of everything received."""
        _project(store, project_id)
        return {
            **store.stats(project_id),
            "inbox_lag": max(0, inbox.last_id() - store.position()),
            "outcomes": inbox.outcome_totals(project_id),
        }

    @router.get("/projects/{project_id}/replays/{replay_id}")
    def replay(project_id: int, replay_id: str) -> dict[str, Any]:
        """The replay segments received so far (as received; playback comes later)."""
        _project(store, project_id)
        segments = store.replay_segments(project_id, replay_id.lower())
        if not segments:
            raise Problem(404, "Not Found", f"no replay {replay_id}")
        return {"replay_id": replay_id, "segments": segments}

    @router.get(
        "/projects/{project_id}/replays/{replay_id}/segments/{segment_id}/recording"
    )
    def replay_recording(project_id: int, replay_id: str, segment_id: int) -> Response:
        """A segment's rrweb events: the JSON array the SDK recorded, decompressed."""
        _project(store, project_id)
        try:
            item = store.replay_recording(project_id, replay_id.lower(), segment_id)
        except NotFound as exc:
            raise Problem(404, "Not Found", str(exc)) from exc
        # The item is a one-line JSON header, then the events, zlib-compressed or not.
        _, _, events = item.partition(b"\n")
        try:
            body = decompress_replay(events, limits.max_replay_decompressed_size)
        except IngestError as exc:
            raise Problem(422, "Unprocessable Content", exc.detail) from exc
        return Response(body, media_type="application/json")

    @router.get("/projects/{project_id}/feedback")
    def feedback(project_id: int) -> dict[str, Any]:
        _project(store, project_id)
        return {"data": store.list_feedback(project_id)}

    return router


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every API error as ``application/problem+json``."""

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RequestValidationError):
            status, title = 422, "Unprocessable Content"
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            )
        elif isinstance(exc, ValueError):
            status, title, detail = 409, "Conflict", str(exc)
        else:
            assert isinstance(exc, HTTPException)
            status, detail = exc.status_code, str(exc.detail)
            title = getattr(exc, "title", None) or _TITLES.get(status, "Error")
        return JSONResponse(
            {
                "type": "about:blank",
                "title": title,
                "status": status,
                "detail": detail,
                "instance": request.url.path,
            },
            status,
            media_type="application/problem+json",
        )

    app.add_exception_handler(HTTPException, problem)
    app.add_exception_handler(RequestValidationError, problem)
    app.add_exception_handler(ValueError, problem)


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
}


def _project(store: SqliteStore, project_id: int) -> None:
    try:
        store.get_project(project_id)
    except NotFound as exc:
        raise Problem(404, "Not Found", str(exc)) from exc


def _parse_query(query: str) -> tuple[list[str], list[tuple[str, str]], str | None]:
    """Split a search into free words, ``key:value`` filters and an ``is:`` status."""
    try:
        terms = shlex.split(query)
    except ValueError as exc:
        raise Problem(400, "Bad Request", f"query: {exc}") from exc
    text: list[str] = []
    filters: list[tuple[str, str]] = []
    status: str | None = None
    for term in terms:
        key, sep, value = term.partition(":")
        if not sep or not key or not value:
            text.append(term)
        elif key == "is":
            if value not in IssueStatus.__members__.values():
                raise Problem(400, "Bad Request", f"is:{value} is not a status")
            status = value
        else:
            filters.append((key, value))
    return text, filters, status


def _encode_cursor(value: float, row_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value, row_id])).decode()


def _decode_cursor(cursor: str | None) -> tuple[float, int] | None:
    if not cursor:
        return None
    try:
        value, row_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(value), int(row_id)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise Problem(
            400, "Bad Request", "cursor is not one this API gave out"
        ) from exc
