"""The ASGI middleware under uvicorn: Starlette, FastAPI and a plain ASGI app."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from faultlens.testing import LiveServer
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

import faultlens_sdk
import faultlens_sdk.fastapi
from faultlens_sdk import ConflictError, FaultlensMiddleware
from tests.conftest import InitSdk, serve_asgi


class PatientRecordLocked(ConflictError):
    code = "PATIENT_RECORD_LOCKED"
    title = "Record locked"
    public_message = "The record is being edited by someone else."
    retryable = True


SECRET = "db password is hunter2"


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned token; the resolvers read claims without checking signatures."""

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


async def crash(request: Request) -> PlainTextResponse:
    raise RuntimeError(SECRET)


async def locked(request: Request) -> PlainTextResponse:
    raise PatientRecordLocked("record 77 held by session s-9")


async def fine(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fine")


async def late_failure(request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield b"first chunk\n"
        raise RuntimeError("failed while streaming")

    return StreamingResponse(body())


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def starlette_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/crash", crash),
            Route("/locked", locked),
            Route("/fine", fine),
            Route("/late", late_failure),
            WebSocketRoute("/ws", echo),
        ]
    )
    app.add_middleware(FaultlensMiddleware)
    return app


def resolvers() -> dict[str, Any]:
    return {
        "tenant_resolver": faultlens_sdk.from_header("X-Tenant-ID"),
        "user_resolver": faultlens_sdk.user_from_jwt("sub"),
    }


def headers(tenant: str, user: str = "u-1", **extra: str) -> dict[str, str]:
    return {
        "X-Tenant-ID": tenant,
        "Authorization": f"Bearer {jwt({'sub': user})}",
        **extra,
    }


def test_unhandled_exception_becomes_a_generic_problem_and_a_full_report(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk(**resolvers())
    with serve_asgi(starlette_app()) as url:
        r = httpx.get(f"{url}/crash", headers=headers("clinic-asgi-1", "u-41"))
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert SECRET not in r.text and "RuntimeError" not in r.text
    problem = r.json()
    assert problem["status"] == 500
    assert problem["code"] == "INTERNAL_ERROR"
    assert problem["type"] == "urn:faultlens:error:INTERNAL_ERROR"
    assert problem["title"] and problem["detail"]
    assert problem["request_id"] == r.headers["x-request-id"]
    assert problem["instance"] == f"urn:faultlens:request:{problem['request_id']}"

    event = server.wait_event(problem["event_id"])
    assert event["event_id"].replace("-", "") == problem["event_id"]
    assert event["level"] == "error"
    assert event["environment"] == "test"
    assert event["release"] == "app@1.0.0"
    assert event["tags"]["tenant"] == "clinic-asgi-1"
    assert event["tags"]["request_id"] == problem["request_id"]
    assert event["tags"]["error.code"] == "INTERNAL_ERROR"
    assert event["user"]["id"] == "u-41"
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == SECRET
    assert event["request"]["method"] == "GET"
    assert "authorization" not in {k.lower() for k in event["request"]["headers"]}


def test_faultlens_error_maps_to_its_status_code_and_severity(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk(**resolvers())
    with serve_asgi(starlette_app()) as url:
        r = httpx.get(f"{url}/locked", headers=headers("clinic-asgi-2"))
    assert r.status_code == 409
    problem = r.json()
    assert problem["code"] == "PATIENT_RECORD_LOCKED"
    assert problem["title"] == "Record locked"
    assert problem["detail"] == PatientRecordLocked.public_message
    assert "session s-9" not in r.text
    event = server.wait_event(problem["event_id"])
    assert event["level"] == "warning"
    assert event["tags"]["error.code"] == "PATIENT_RECORD_LOCKED"
    assert event["tags"]["tenant"] == "clinic-asgi-2"


def test_debug_mode_shows_the_exception_to_the_client(init_sdk: InitSdk) -> None:
    init_sdk(debug=True)
    with serve_asgi(starlette_app()) as url:
        problem = httpx.get(f"{url}/crash").json()
    assert problem["detail"] == f"RuntimeError: {SECRET}"
    assert any("raise RuntimeError(SECRET)" in line for line in problem["traceback"])


def test_request_id_is_honoured_echoed_or_replaced(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk()
    with serve_asgi(starlette_app()) as url:
        ok = httpx.get(f"{url}/fine", headers={"X-Request-ID": "abc-123"})
        failed = httpx.get(f"{url}/crash", headers={"X-Request-ID": "req-asgi-7"})
        bad = httpx.get(f"{url}/fine", headers={"X-Request-ID": "x" * 300})
        fresh = httpx.get(f"{url}/fine")
    assert ok.text == "fine" and ok.headers["x-request-id"] == "abc-123"
    assert failed.headers["x-request-id"] == "req-asgi-7"
    assert failed.json()["request_id"] == "req-asgi-7"
    event = server.wait_event(failed.json()["event_id"])
    assert event["tags"]["request_id"] == "req-asgi-7"
    replaced = bad.headers["x-request-id"]
    assert replaced != "x" * 300 and len(replaced) == 32
    assert fresh.headers["x-request-id"] not in (replaced, "abc-123")


def test_failure_after_the_response_started_is_reported_and_truncates(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk()
    request_id = f"late-{uuid.uuid4().hex[:8]}"
    with (
        serve_asgi(starlette_app()) as url,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        httpx.get(f"{url}/late", headers={"X-Request-ID": request_id})
    with server.api() as api:
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not found and time.monotonic() < deadline:
            found = api.get(
                f"/api/v1/projects/{server.project_id}/issues",
                params={"query": f"request_id:{request_id}"},
            ).json()["data"]
            time.sleep(0.05)
    assert found, "the late failure was not reported"
    assert found[0]["title"].startswith("RuntimeError")


def test_websocket_and_lifespan_pass_through(init_sdk: InitSdk) -> None:
    init_sdk()
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        events.append(scope["type"])
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            await send({"type": "lifespan.shutdown.complete"})

    async def run() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        sent: list[dict[str, Any]] = []
        await queue.put({"type": "lifespan.startup"})
        await queue.put({"type": "lifespan.shutdown"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await FaultlensMiddleware(app)({"type": "lifespan"}, queue.get, send)
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]

    asyncio.run(run())
    assert events == ["lifespan"]

    with (
        serve_asgi(starlette_app()) as url,
        connect(url.replace("http://", "ws://") + "/ws") as ws,
    ):
        ws.send("ping")
        assert ws.recv() == "ping"


def test_concurrent_requests_keep_their_own_context(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk(**resolvers())

    async def slow_crash(request: Request) -> JSONResponse:
        # Both requests are inside the app at once before either fails.
        await asyncio.sleep(0.2)
        raise RuntimeError("concurrent failure")

    app = Starlette(routes=[Route("/slow", slow_crash)])
    app.add_middleware(FaultlensMiddleware)

    async def both(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient() as client:
            return list(
                await asyncio.gather(
                    *(
                        client.get(
                            f"{url}/slow", headers=headers(f"clinic-c{i}", f"u-c{i}")
                        )
                        for i in range(2)
                    )
                )
            )

    with serve_asgi(app) as url:
        responses = asyncio.run(both(url))
    for i, r in enumerate(responses):
        event = server.wait_event(r.json()["event_id"])
        assert event["tags"]["tenant"] == f"clinic-c{i}"
        assert event["user"]["id"] == f"u-c{i}"
        assert event["tags"]["request_id"] == r.headers["x-request-id"]


class Visit(BaseModel):
    patient_id: int
    reason: str


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/visits")
    async def create_visit(visit: Visit) -> dict[str, Any]:
        if visit.reason == "locked":
            raise PatientRecordLocked()
        return {"ok": True, "patient_id": visit.patient_id}

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("missing")

    faultlens_sdk.fastapi.install(app)
    return app


def test_fastapi_errors_validation_and_success(
    server: LiveServer, init_sdk: InitSdk
) -> None:
    init_sdk(**resolvers())
    with serve_asgi(fastapi_app()) as url:
        ok = httpx.post(f"{url}/visits", json={"patient_id": 3, "reason": "flu"})
        invalid = httpx.post(
            f"{url}/visits", json={"patient_id": "Jane Doe 1970-01-01", "reason": 1}
        )
        conflict = httpx.post(
            f"{url}/visits",
            json={"patient_id": 3, "reason": "locked"},
            headers=headers("clinic-fastapi"),
        )
        boom = httpx.get(f"{url}/boom", headers=headers("clinic-fastapi"))

    assert ok.status_code == 200 and ok.json() == {"ok": True, "patient_id": 3}
    assert "x-request-id" in ok.headers

    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"
    problem = invalid.json()
    assert problem["code"] == "VALIDATION_FAILED"
    assert "event_id" not in problem
    assert {tuple(e["loc"]) for e in problem["errors"]} == {
        ("body", "patient_id"),
        ("body", "reason"),
    }
    assert "Jane Doe" not in invalid.text

    assert conflict.status_code == 409
    assert conflict.json()["code"] == "PATIENT_RECORD_LOCKED"
    stored = server.wait_event(conflict.json()["event_id"])
    assert stored["tags"]["tenant"] == "clinic-fastapi"

    assert boom.status_code == 500
    assert boom.json()["code"] == "INTERNAL_ERROR"
    stored = server.wait_event(boom.json()["event_id"])
    assert stored["exception"]["values"][-1]["type"] == "KeyError"


def test_plain_asgi_app(server: LiveServer, init_sdk: InitSdk) -> None:
    init_sdk(**resolvers())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        raise faultlens_sdk.NotFoundError("no such chart")

    with serve_asgi(FaultlensMiddleware(app)) as url:
        ok = httpx.get(f"{url}/ok")
        missing = httpx.get(f"{url}/chart/9", headers=headers("clinic-plain"))
    assert ok.status_code == 204 and "x-request-id" in ok.headers
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
    event = server.wait_event(missing.json()["event_id"])
    assert event["level"] == "info"
    assert event["tags"]["tenant"] == "clinic-plain"


def test_without_a_dsn_problems_are_still_answered() -> None:
    faultlens_sdk.init(dsn=None)
    with serve_asgi(starlette_app()) as url:
        r = httpx.get(f"{url}/locked")
    assert r.status_code == 409
    assert "event_id" not in r.json()
    assert r.json()["request_id"] == r.headers["x-request-id"]
