"""The HTTP side of ingestion: ``/api/<project>/envelope/`` and ``/store/``.

A request is checked in the order that costs least first: authentication from the
headers, the key, the origin, rate limits; then the body is read under its cap,
decompressed under the envelope cap, parsed, and every item checked. Only a request
that passes all of it is appended to the inbox, and the answer waits for that append
to be durable. Refusals are :class:`~faultlens.ingest.errors.IngestError`, turned into
responses in :func:`_refusal` and counted as outcomes. An inbox that cannot take the
envelope (full, or failing) is a 503 with ``Retry-After``: the fault is the server's,
and the client keeps the envelope to send again.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from faultlens.config import Settings
from faultlens.ingest.auth import Auth, parse_auth, parse_dsn
from faultlens.ingest.decompress import decompress
from faultlens.ingest.envelope import (
    Envelope,
    check_json_payload,
    parse_envelope,
    parse_store_body,
)
from faultlens.ingest.errors import (
    BadRequest,
    Forbidden,
    IngestError,
    PayloadTooLarge,
    Unauthorized,
)
from faultlens.ingest.ratelimit import IngestRateLimiter, Limited
from faultlens.storage.ports import (
    Inbox,
    InboxEntry,
    InboxUnavailable,
    Outcome,
    ProjectKey,
)

log = logging.getLogger("faultlens.ingest")

_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": (
        "x-sentry-auth, x-requested-with, x-forwarded-for, origin, referer, accept,"
        " content-type, authentication, authorization, content-encoding,"
        " transfer-encoding"
    ),
    "Access-Control-Expose-Headers": (
        "x-sentry-error, x-sentry-rate-limits, retry-after"
    ),
    "Access-Control-Max-Age": "3600",
}

#: Item types whose JSON is checked at the door, so that a malformed one is refused
#: with a 400 instead of failing later.
_JSON_ITEMS = frozenset(
    {
        "event",
        "feedback",
        "user_report",
        "replay_event",
        "session",
        "sessions",
        "client_report",
    }
)


class RateLimitedError(IngestError):
    """The key or project is over its rate limit (429)."""

    status = 429
    reason = "rate_limited"

    def __init__(self, limited: Limited) -> None:
        super().__init__(f"rate limited; retry after {limited.retry_after} s")
        self.limited = limited


@dataclass
class IngestService:
    """What the ingest endpoints need: settings, key lookup, limits, the inbox."""

    settings: Settings
    inbox: Inbox
    lookup_key: Callable[[str], ProjectKey | None]
    rate_limiter: IngestRateLimiter

    def routes(self) -> list[Route]:
        routes = []
        for name, handler in (("envelope", self.envelope), ("store", self.store)):
            for path in (
                f"/api/{{project_id:int}}/{name}/",
                f"/api/{{project_id:int}}/{name}",
            ):
                routes.append(Route(path, _cors(handler), methods=["POST", "OPTIONS"]))
        return routes

    # -- endpoints -------------------------------------------------------------------

    async def envelope(self, request: Request) -> Response:
        project_id: int = request.path_params["project_id"]
        auth = parse_auth(request.headers, request.query_params)
        key = self._authorize(auth.public_key, project_id, request) if auth else None

        body = await self._read_body(request)
        encoding = request.headers.get("content-encoding", "")
        envelope = parse_envelope(
            decompress(body, encoding, self.settings.limits.max_envelope_size),
            self.settings.limits,
        )
        if key is None:
            key = self._authorize_from_envelope(envelope, auth, project_id, request)
        self._check_items(envelope)

        has_event = any(i.type in ("event", "feedback") for i in envelope.items)
        event_id = envelope.event_id or (uuid.uuid4().hex if has_event else None)
        await self.inbox.append(
            InboxEntry(
                project_id=project_id,
                public_key=key.public_key,
                received_at=time.time(),
                body=body,
                encoding=encoding,
                client_ip=self._client_ip(request),
                event_id=event_id,
            )
        )
        return _json({"id": event_id} if event_id else {})

    async def store(self, request: Request) -> Response:
        project_id: int = request.path_params["project_id"]
        auth = parse_auth(request.headers, request.query_params)
        if auth is None:
            raise Unauthorized(
                "missing authorization: send X-Sentry-Auth or sentry_key"
            )
        key = self._authorize(auth.public_key, project_id, request)

        body = await self._read_body(request)
        encoding = request.headers.get("content-encoding", "")
        event = parse_store_body(
            decompress(body, encoding, self.settings.limits.max_event_size),
            self.settings.limits,
        )
        event_id = _event_id(event.get("event_id")) or uuid.uuid4().hex
        await self.inbox.append(
            InboxEntry(
                project_id=project_id,
                public_key=key.public_key,
                received_at=time.time(),
                body=body,
                encoding=encoding,
                client_ip=self._client_ip(request),
                event_id=event_id,
                kind="store",
            )
        )
        return _json({"id": event_id})

    # -- checks ----------------------------------------------------------------------

    def _authorize(
        self, public_key: str, project_id: int, request: Request
    ) -> ProjectKey:
        key = self.lookup_key(public_key)
        # One message for every failure, so a caller cannot tell a wrong project from
        # a wrong or revoked key.
        if key is None or not key.active or key.project_id != project_id:
            raise Forbidden("the DSN is not valid for this project")
        origin = request.headers.get("origin")
        allowed = self.settings.allowed_origins
        if origin and "*" not in allowed and origin not in allowed:
            raise Forbidden("the DSN is not valid for this project")
        limited = self.rate_limiter.check(key.public_key, project_id)
        if limited is not None:
            raise RateLimitedError(limited)
        return key

    def _authorize_from_envelope(
        self, envelope: Envelope, auth: Auth | None, project_id: int, request: Request
    ) -> ProjectKey:
        dsn = envelope.headers.get("dsn")
        if not isinstance(dsn, str):
            raise Unauthorized(
                "missing authorization: send X-Sentry-Auth, the sentry_key query"
                " parameter, or a dsn in the envelope header"
            )
        parsed = parse_dsn(dsn)
        if parsed.project_id != project_id:
            raise Forbidden("the DSN is not valid for this project")
        return self._authorize(parsed.public_key, project_id, request)

    def _check_items(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type in _JSON_ITEMS:
                check_json_payload(item.payload, item.type)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.limits.max_body_size
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes", "envelope")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is over {limit} bytes", "envelope")
            chunks.append(chunk)
        if size == 0:
            raise BadRequest("the body is empty; expected an envelope")
        return b"".join(chunks)

    def _client_ip(self, request: Request) -> str | None:
        peer = request.client.host if request.client else None
        if peer is None or not self.settings.trusted_proxies:
            return peer
        return client_ip_behind_proxies(
            peer,
            request.headers.get("x-forwarded-for", ""),
            self.settings.trusted_proxies,
        )

    # -- outcomes of refusals --------------------------------------------------------

    def count_refusal(self, project_id: int, exc: IngestError) -> None:
        category = exc.item_type if isinstance(exc, PayloadTooLarge) else "default"
        outcome = "rate_limited" if isinstance(exc, RateLimitedError) else "invalid"
        self.inbox.record_outcomes([Outcome(project_id, category, outcome, exc.reason)])

    def count_unavailable(self, project_id: int, exc: InboxUnavailable) -> None:
        reason = "inbox_full" if exc.full else "inbox_error"
        self.inbox.record_outcomes([Outcome(project_id, "default", "internal", reason)])


def client_ip_behind_proxies(
    peer: str, forwarded: str, trusted: tuple[str, ...]
) -> str:
    """The first address, from the right, that is not one of our trusted proxies."""
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in networks)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return peer


def _event_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value).hex
    except ValueError:
        return None


def _json(data: dict[str, Any], status: int = 200, **headers: str) -> Response:
    return Response(
        orjson.dumps(data), status, headers=headers, media_type="application/json"
    )


Handler = Callable[[Request], Awaitable[Response]]


def _cors(handler: Handler) -> Handler:
    service: IngestService = handler.__self__  # type: ignore[attr-defined]

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            response = Response(status_code=200)
        else:
            try:
                response = await handler(request)
            except IngestError as exc:
                service.count_refusal(request.path_params["project_id"], exc)
                response = _refusal(exc)
            except InboxUnavailable as exc:
                service.count_unavailable(request.path_params["project_id"], exc)
                response = _unavailable(exc, service.settings.inbox_retry_after)
        origin = request.headers.get("origin")
        response.headers.update(_CORS_HEADERS)
        response.headers["Access-Control-Allow-Origin"] = origin or "*"
        if origin:
            response.headers["Vary"] = "Origin"
        return response

    return endpoint


def _refusal(exc: IngestError) -> Response:
    # Header values must be ASCII; the body keeps the detail whole.
    headers = {"X-Sentry-Error": exc.detail[:200].encode("ascii", "replace").decode()}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.limited.retry_after)
        headers["X-Sentry-Rate-Limits"] = exc.limited.header()
    return _json({"detail": exc.detail}, exc.status, **headers)


def _unavailable(exc: InboxUnavailable, retry_after: int) -> Response:
    headers = {"Retry-After": str(retry_after), "X-Sentry-Error": exc.detail}
    return _json({"detail": exc.detail}, 503, **headers)
