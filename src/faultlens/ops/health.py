"""``/healthz`` (the process answers) and ``/readyz`` (it can take and process data)."""

from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from faultlens.config import Settings
from faultlens.storage.sqlite.inbox import SqliteInbox
from faultlens.storage.sqlite.store import SqliteStore


def health_routes(
    store: SqliteStore, inbox: SqliteInbox, settings: Settings
) -> list[Route]:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    def readyz(request: Request) -> JSONResponse:
        problems: list[str] = []
        try:
            store.position()
            writable = store.path.parent.exists() and _writable(store)
        except sqlite3.Error as exc:
            writable = False
            problems.append(f"store: {exc}")
        if not writable:
            problems.append("the store is not writable")
        lag = max(0, inbox.last_id() - store.position()) if writable else None
        if lag is not None and lag > settings.max_inbox_lag:
            problems.append(f"inbox lag {lag} is over {settings.max_inbox_lag}")
        if inbox.full:
            problems.append(
                f"the inbox is full ({settings.max_inbox_size} bytes, max_inbox_size);"
                " envelopes are refused until processing frees room"
            )
        status = 503 if problems else 200
        return JSONResponse(
            {
                "status": "ready" if not problems else "not ready",
                "inbox_lag": lag,
                "problems": problems,
            },
            status,
        )

    return [Route("/healthz", healthz), Route("/readyz", readyz)]


def _writable(store: SqliteStore) -> bool:
    try:
        store.touch()
    except sqlite3.Error:
        return False
    return True
