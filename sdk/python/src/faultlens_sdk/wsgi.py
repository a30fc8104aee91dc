"""WSGI middleware: request context for every request, problem responses on errors.

Wrap any WSGI app: ``app.wsgi_app = FaultlensWSGIMiddleware(app.wsgi_app)`` for
Flask (``faultlens_sdk.flask.init_app`` does this and makes Flask let exceptions
through to it), or the callable from ``get_wsgi_application()``. Django handles view
exceptions itself before they reach WSGI; use ``faultlens_sdk.django`` there.

An exception raised while the response body is produced is answered with a problem
document too, as long as no part of the body was handed to the server yet; after
that, it is reported and re-raised, and the server cuts the response short.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from types import TracebackType
from typing import Any

from faultlens_sdk.config import current_options
from faultlens_sdk.context import (
    RequestContext,
    RequestInfo,
    accept_request_id,
    bind,
    unbind,
)
from faultlens_sdk.problem import Problem, handle, report_late

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


def _problem_response(
    problem: Problem, start_response: StartResponse
) -> Iterable[bytes]:
    body = problem.body
    headers = [*problem.headers, ("content-length", str(len(body)))]
    # exc_info lets a server replace a status line and headers the app had already
    # given; if they were already sent, the server re-raises the exception instead.
    start_response(status_line(problem.status), headers, sys.exc_info())
    return [body]


class FaultlensWSGIMiddleware:
    """Catch what the app raises, report it, answer with a problem document."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        options = current_options()
        header_name = options.request_id_header
        headers = _headers(environ)
        ctx = RequestContext(
            request_id=accept_request_id(headers.get(header_name)),
            info=RequestInfo(
                method=environ.get("REQUEST_METHOD", "GET"),
                path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
                headers=headers,
                client_ip=environ.get("REMOTE_ADDR"),
                native=environ,
            ),
            user_resolver=options.user_resolver,
            tenant_resolver=options.tenant_resolver,
        )

        def start_with_request_id(
            status: str,
            response_headers: list[tuple[str, str]],
            exc_info: ExcInfo | None = None,
        ) -> Callable[[bytes], object]:
            # The id in the header must be the one in reports and problem bodies,
            # so one the app set itself is replaced rather than sent twice.
            response_headers = [
                (name, value)
                for name, value in response_headers
                if name.lower() != header_name
            ]
            response_headers.append((header_name, ctx.request_id))
            return start_response(status, response_headers, exc_info)

        token = bind(ctx)
        try:
            result = self.app(environ, start_with_request_id)
        except Exception as exc:
            return _problem_response(handle(exc, ctx), start_response)
        finally:
            unbind(token)
        if isinstance(result, list | tuple):
            # Already produced, nothing left to fail; handing the list itself on
            # lets the server compute Content-Length as it would without us.
            return result
        return _ReportingIterable(result, ctx, start_response)


class _ReportingIterable:
    """The app's response body, with the request context bound while it is produced.

    An exception before the first chunk is answered with a problem document: the
    server has not sent the status line yet. One after it is reported and re-raised,
    and the server closes the connection.
    """

    def __init__(
        self,
        result: Iterable[bytes],
        ctx: RequestContext,
        start_response: StartResponse,
    ) -> None:
        self._result = result
        self._ctx = ctx
        self._start_response = start_response

    def __iter__(self) -> Iterator[bytes]:
        iterator: Iterator[bytes] | None = None
        started = False
        answer: Iterable[bytes] = ()
        while True:
            token = bind(self._ctx)
            try:
                if iterator is None:
                    iterator = iter(self._result)
                chunk = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                if started:
                    report_late(exc, self._ctx)
                    raise
                answer = _problem_response(handle(exc, self._ctx), self._start_response)
                break
            finally:
                unbind(token)
            # Some servers send the headers on the first chunk even when it is
            # empty, so any chunk counts as the start of the response.
            started = True
            yield chunk
        yield from answer

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is None:
            return
        token = bind(self._ctx)
        try:
            close()
        except Exception as exc:
            report_late(exc, self._ctx)
            raise
        finally:
            unbind(token)
