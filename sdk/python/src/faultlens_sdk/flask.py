"""Flask: ``faultlens_sdk.flask.init_app(app)`` after ``faultlens_sdk.init``.

Flask turns an unhandled exception into its own HTML 500 page unless told to let it
propagate; this sets ``PROPAGATE_EXCEPTIONS`` so the WSGI middleware sees it and
answers with a problem document (an error handler the app registered for 500 is
therefore not used). ``HTTPException``s (``abort(404)``) are still answered by
Flask, as before.

The middleware reports after Flask has ended the request, so the user and tenant
resolvers are run earlier, when Flask signals the exception, while ``flask.g``,
``flask.request`` and extensions such as Flask-Login still work.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, got_request_exception

from faultlens_sdk.context import current
from faultlens_sdk.wsgi import FaultlensWSGIMiddleware


def init_app(app: Flask) -> Flask:
    """Install the middleware on a ``flask.Flask`` app; returns the app."""
    app.config["PROPAGATE_EXCEPTIONS"] = True
    if not isinstance(app.wsgi_app, FaultlensWSGIMiddleware):
        app.wsgi_app = FaultlensWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    got_request_exception.connect(_resolve_while_in_request, app)
    return app


def _resolve_while_in_request(sender: Flask, **extra: Any) -> None:
    ctx = current()
    if ctx is not None:
        # Reading the properties runs the resolvers once and keeps their answers.
        _ = ctx.user, ctx.tenant
