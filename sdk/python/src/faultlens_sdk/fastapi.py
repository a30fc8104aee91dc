"""FastAPI: ``faultlens_sdk.fastapi.install(app)`` after ``faultlens_sdk.init``.

Adds the ASGI middleware and answers FastAPI's request validation errors with a 422
problem document (code ``VALIDATION_FAILED``) whose ``errors`` member lists where
and why, like FastAPI's own answer but without the offending input values, which
may be personal data. Validation errors are the client's mistake and are not
reported unless ``report_validation_errors=True``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from faultlens_sdk.asgi import FaultlensMiddleware
from faultlens_sdk.context import current
from faultlens_sdk.errors import ValidationError
from faultlens_sdk.problem import handle


def install(app: FastAPI, *, report_validation_errors: bool = False) -> FastAPI:
    app.add_middleware(FaultlensMiddleware)

    async def validation_failed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        problem = handle(
            ValidationError(str(exc)),
            current(),
            send_report=report_validation_errors,
            extensions={"errors": errors},
        )
        headers: dict[str, Any] = dict(problem.headers)
        return Response(problem.body, status_code=problem.status, headers=headers)

    app.add_exception_handler(RequestValidationError, validation_failed)
    return app
