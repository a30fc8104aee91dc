"""ASGI middleware: request context for every HTTP request, problem responses on errors.

Works with any ASGI app; with Starlette and FastAPI add it with
``app.add_middleware(FaultlensMiddleware)``, which places it inside Starlette's own
error middleware, so an exception reaches this one first. WebSocket and lifespan
scopes are passed through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from faultlens_sdk.config import current_options
from faultlens_sdk.context import (
    RequestContext,
    RequestInfo,
    accept_request_id,
    bind,
    unbind,
)
from faultlens_sdk.problem import handle, report_late

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FaultlensMiddleware:
    """Catch what the app raises, report it, answer with a problem document."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        options = current_options()
        header_name = options.request_id_header
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers") or ()
        }
        client = scope.get("client")
        ctx = RequestContext(
            request_id=accept_request_id(headers.get(header_name)),
            info=RequestInfo(
                method=scope.get("method", "GET"),
                path=scope.get("path", ""),
                headers=headers,
                client_ip=client[0] if client else None,
                native=scope,
            ),
            user_resolver=options.user_resolver,
            tenant_resolver=options.tenant_resolver,
        )
        name = header_name.encode("latin-1")
        request_id_header = (name, ctx.request_id.encode())
        started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # An id the app set itself is replaced, so the header always
                # matches the reports and the problem document.
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() != name),
                    request_id_header,
                ]
            await send(message)

        token = bind(ctx)
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            if started:
                # Too late for a problem document: report, and let the server
                # close the connection so the client sees a truncated response.
                report_late(exc, ctx)
                raise
            problem = handle(exc, ctx)
            await send(
                {
                    "type": "http.response.start",
                    "status": problem.status,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in problem.headers
                    ],
                }
            )
            await send({"type": "http.response.body", "body": problem.body})
        finally:
            unbind(token)
