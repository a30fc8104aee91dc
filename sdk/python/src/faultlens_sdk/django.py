"""Django: add ``"faultlens_sdk.django.FaultlensDjangoMiddleware"`` to ``MIDDLEWARE``.

Put it after ``AuthenticationMiddleware`` so a user resolver can read
``info.native.user`` (``native`` is the ``HttpRequest``). Django's own client errors
(``Http404``, ``PermissionDenied``, ``BadRequest``, ``SuspiciousOperation``, a
malformed multipart body) are left to Django; every other exception a view raises
(or its template response raises while rendering) is reported and answered with a
problem document. An exception that Django answers itself, such as one raised by
another middleware or while resolving the URL, is reported but keeps Django's 500
page. A streaming response that fails after it started is reported and cut short.

Synchronous views only in this version: under ASGI, Django runs the middleware in a
thread, which works but does not use Django's async path.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.core.signals import got_request_exception
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.http.multipartparser import MultiPartParserError
from sentry_sdk.integrations.logging import ignore_logger

from faultlens_sdk.config import current_options
from faultlens_sdk.context import (
    RequestContext,
    RequestInfo,
    accept_request_id,
    bind,
    current,
    unbind,
)
from faultlens_sdk.problem import handle, report_late

_DJANGO_HANDLES = (
    Http404,
    PermissionDenied,
    BadRequest,
    SuspiciousOperation,
    MultiPartParserError,
)


class FaultlensDjangoMiddleware:
    """Request context for every request, problem responses for what views raise."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        # Django logs every 5xx response to "django.request" at ERROR, which the
        # logging integration would turn into a second, context-less report of a
        # failure already reported here. Exceptions that never reach
        # process_exception are reported through the signal instead.
        ignore_logger("django.request")
        got_request_exception.connect(
            _report_uncaught, dispatch_uid="faultlens_sdk.django"
        )

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        options = current_options()
        headers = {k.lower(): v for k, v in request.headers.items()}
        ctx = RequestContext(
            request_id=accept_request_id(headers.get(options.request_id_header)),
            info=RequestInfo(
                method=request.method or "GET",
                path=request.path,
                headers=headers,
                client_ip=request.META.get("REMOTE_ADDR"),
                native=request,
            ),
            user_resolver=options.user_resolver,
            tenant_resolver=options.tenant_resolver,
        )
        token = bind(ctx)
        try:
            response = self.get_response(request)
        finally:
            unbind(token)
        response[options.request_id_header] = ctx.request_id
        _report_streaming_failures(response, ctx)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        if isinstance(exception, _DJANGO_HANDLES):
            return None
        problem = handle(exception, current())
        response = HttpResponse(problem.body, status=problem.status)
        for name, value in problem.headers:
            response[name] = value
        return response


def _report_uncaught(sender: Any, **_: Any) -> None:
    # Sent while Django handles the exception, so it is still the current one.
    exc = sys.exc_info()[1]
    if exc is not None:
        report_late(exc, current())


def _report_streaming_failures(response: HttpResponseBase, ctx: RequestContext) -> None:
    """Have a streaming body report what it raises, with the request context bound.

    The body is produced after the middleware returned, by the server, so neither
    ``process_exception`` nor the context would cover it otherwise. A file response
    is left alone: rewrapping it would cost the server's sendfile path.
    """
    if not response.streaming or getattr(response, "file_to_stream", None):
        return
    content = response.streaming_content
    if getattr(response, "is_async", False):
        response.streaming_content = _report_async(content, ctx)
    else:
        response.streaming_content = _report_sync(content, ctx)


def _report_sync(content: Iterable[bytes], ctx: RequestContext) -> Iterator[bytes]:
    iterator = iter(content)
    while True:
        token = bind(ctx)
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            report_late(exc, ctx)
            raise
        finally:
            unbind(token)
        yield chunk


async def _report_async(
    content: AsyncIterator[bytes], ctx: RequestContext
) -> AsyncIterator[bytes]:
    iterator = aiter(content)
    while True:
        token = bind(ctx)
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except Exception as exc:
            report_late(exc, ctx)
            raise
        finally:
            unbind(token)
        yield chunk


def django_user(info: RequestInfo) -> dict[str, Any] | None:
    """A user resolver for Django: the authenticated ``request.user``, if any."""
    user = getattr(info.native, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    found: dict[str, Any] = {"id": str(user.pk)}
    username = user.get_username()
    if username:
        found["username"] = username
    return found
