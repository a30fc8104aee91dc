"""faultlens-sdk: error interception for Python services, on top of sentry-sdk.

Everything an application needs is importable from here::

    import faultlens_sdk
    faultlens_sdk.init(dsn="http://<key>@localhost:8000/1", environment="production")
    app.add_middleware(faultlens_sdk.FaultlensMiddleware)
"""

from faultlens_sdk.asgi import FaultlensMiddleware
from faultlens_sdk.context import (
    RequestInfo,
    current,
    from_header,
    from_jwt_claim,
    set_tenant,
    set_user,
    user_from_jwt,
)
from faultlens_sdk.errors import (
    ConflictError,
    FaultlensError,
    ForbiddenError,
    NotFoundError,
    OperationTimeoutError,
    RateLimitedError,
    UnauthorizedError,
    UpstreamError,
    ValidationError,
    registry,
)
from faultlens_sdk.ratelimit import ErrorRateLimit
from faultlens_sdk.setup import init
from faultlens_sdk.severity import SeverityRule
from faultlens_sdk.wsgi import FaultlensWSGIMiddleware

__all__ = [
    "ConflictError",
    "ErrorRateLimit",
    "FaultlensError",
    "FaultlensMiddleware",
    "FaultlensWSGIMiddleware",
    "ForbiddenError",
    "NotFoundError",
    "OperationTimeoutError",
    "RateLimitedError",
    "RequestInfo",
    "SeverityRule",
    "UnauthorizedError",
    "UpstreamError",
    "ValidationError",
    "current",
    "from_header",
    "from_jwt_claim",
    "init",
    "registry",
    "set_tenant",
    "set_user",
    "user_from_jwt",
]
