"""Per-request context: request id, user and tenant, carried in a ``contextvars`` var.

The middleware binds a ``RequestContext`` when a request starts; everything that runs
for that request (threads started with ``contextvars.copy_context`` and asyncio tasks
included) sees the same one, and concurrent requests never see each other's. The user
and tenant are resolved lazily, on first use, by the resolvers given to ``init``, so a
request that never reports anything pays nothing for them; by then the framework has
usually authenticated the request, so a resolver can read its user.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

UserInfo = Mapping[str, Any]
UserResolver = Callable[["RequestInfo"], UserInfo | None]
TenantResolver = Callable[["RequestInfo"], str | None]

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a resolver may look at: the request, framework-neutral.

    ``headers`` has lower-case names. ``native`` is the framework's own object: the
    ASGI scope, the WSGI environ, or Django's ``HttpRequest``.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    client_ip: str | None = None
    native: Any = None


_UNRESOLVED: Any = object()


@dataclass(slots=True)
class RequestContext:
    """The context of one request. ``user`` and ``tenant`` are resolved once."""

    request_id: str
    info: RequestInfo | None = None
    user_resolver: UserResolver | None = None
    tenant_resolver: TenantResolver | None = None
    _user: Any = field(default=_UNRESOLVED, repr=False)
    _tenant: Any = field(default=_UNRESOLVED, repr=False)

    @property
    def user(self) -> UserInfo | None:
        if self._user is _UNRESOLVED:
            self._user = _resolve(self.user_resolver, self.info)
        user: UserInfo | None = self._user
        return user

    @user.setter
    def user(self, value: UserInfo | None) -> None:
        self._user = value

    @property
    def tenant(self) -> str | None:
        if self._tenant is _UNRESOLVED:
            resolved = _resolve(self.tenant_resolver, self.info)
            self._tenant = None if resolved is None else str(resolved)
        tenant: str | None = self._tenant
        return tenant

    @tenant.setter
    def tenant(self, value: str | None) -> None:
        self._tenant = value


def _resolve(resolver: Callable[[RequestInfo], Any] | None, info: Any) -> Any:
    if resolver is None or info is None:
        return None
    try:
        return resolver(info)
    except Exception:
        # A failing resolver must not turn a report into a second failure; the
        # event goes out without that field.
        return None


_current: ContextVar[RequestContext | None] = ContextVar(
    "faultlens_request_context", default=None
)


def current() -> RequestContext | None:
    """The context of the request being handled, or ``None`` outside one."""
    return _current.get()


def bind(ctx: RequestContext) -> Token[RequestContext | None]:
    """Make ``ctx`` current; give the token to ``unbind`` when the request ends."""
    return _current.set(ctx)


def unbind(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


@contextmanager
def request_context(ctx: RequestContext) -> Iterator[RequestContext]:
    """Bind ``ctx`` for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def accept_request_id(value: str | None) -> str:
    """The incoming request id if it is a sane token, else a new one.

    An id is echoed into responses and logs, so anything long or with characters
    outside a conservative set is replaced rather than trusted.
    """
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def set_user(user: UserInfo | None) -> None:
    """Set the user of the current request (``id``, ``email``, ``username``...)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.user = user


def set_tenant(tenant: str | None) -> None:
    """Set the tenant of the current request."""
    ctx = _current.get()
    if ctx is not None:
        ctx.tenant = tenant


# Ready-made resolvers.


def from_header(name: str) -> Callable[[RequestInfo], str | None]:
    """Resolve a value from a request header, e.g. ``from_header("X-Tenant-ID")``."""
    key = name.lower()

    def resolve(info: RequestInfo) -> str | None:
        return info.headers.get(key) or None

    return resolve


def from_jwt_claim(
    claim: str, header: str = "authorization"
) -> Callable[[RequestInfo], Any]:
    """Resolve a claim from the bearer token's payload.

    The signature is not checked: the application authenticates the request, this
    only reads a claim to label the report. Never use it for an access decision.
    """
    key = header.lower()

    def resolve(info: RequestInfo) -> Any:
        value = info.headers.get(key, "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return None
        payload = token.split(".")[1]
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            claims = json.loads(raw)
        except (binascii.Error, ValueError):
            return None
        return claims.get(claim) if isinstance(claims, dict) else None

    return resolve


def user_from_jwt(
    id_claim: str = "sub", header: str = "authorization"
) -> Callable[[RequestInfo], UserInfo | None]:
    """Resolve ``{"id": <claim>}`` from the bearer token; see ``from_jwt_claim``."""
    read = from_jwt_claim(id_claim, header)

    def resolve(info: RequestInfo) -> UserInfo | None:
        value = read(info)
        return None if value is None else {"id": str(value)}

    return resolve
