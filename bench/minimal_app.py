"""The floor the ingestion benchmark compares against.

An ASGI app that reads each request body to the end and answers 200 ``{}``. Under
the same uvicorn settings as ``faultlens serve`` it shows what one process on this
machine can do at best with the same requests; the server's rates are reported as
a fraction of it. It keeps nothing, so it needs no limit on what it reads.

Run: ``uvicorn --app-dir bench minimal_app:app --loop uvloop --http httptools``.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
