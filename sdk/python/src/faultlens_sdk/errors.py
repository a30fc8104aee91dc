"""The error taxonomy: exceptions that know their code, status, severity and message.

An application describes each failure it can answer with once, as a subclass::

    class PatientRecordLocked(ConflictError):
        code = "PATIENT_RECORD_LOCKED"
        public_message = "The record is being edited by someone else."
        retryable = True

The middleware turns it into a problem document with that status and code; the
class definition registers the code, so ``python -m faultlens_sdk codes`` can list
every code the application defines for its API documentation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

Severity = Literal["fatal", "error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("fatal", "error", "warning", "info")

_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """What an API client can rely on for one error code."""

    code: str
    status: int
    severity: Severity
    title: str
    public_message: str
    retryable: bool
    exception: str


class CodeRegistry:
    """Every error code the application defines, one exception class per code."""

    def __init__(self) -> None:
        self._codes: dict[str, ErrorCode] = {}

    def register(self, cls: type[FaultlensError]) -> None:
        if not _CODE.fullmatch(cls.code):
            raise ValueError(
                f"{cls.__qualname__}.code must be UPPER_SNAKE_CASE, got {cls.code!r}"
            )
        if cls.severity not in SEVERITIES:
            raise ValueError(
                f"{cls.__qualname__}.severity must be one of {SEVERITIES}, "
                f"got {cls.severity!r}"
            )
        if not 400 <= cls.status <= 599:
            raise ValueError(
                f"{cls.__qualname__}.status must be a 4xx or 5xx, got {cls.status}"
            )
        entry = ErrorCode(
            code=cls.code,
            status=cls.status,
            severity=cls.severity,
            title=cls.title,
            public_message=cls.public_message,
            retryable=cls.retryable,
            exception=f"{cls.__module__}.{cls.__qualname__}",
        )
        known = self._codes.get(cls.code)
        if known is not None and known.exception != entry.exception:
            raise ValueError(
                f"error code {cls.code} is defined twice: by {known.exception} "
                f"and by {entry.exception}"
            )
        self._codes[cls.code] = entry

    def get(self, code: str) -> ErrorCode | None:
        return self._codes.get(code)

    def __iter__(self) -> Iterator[ErrorCode]:
        return iter(sorted(self._codes.values(), key=lambda c: c.code))

    def __len__(self) -> int:
        return len(self._codes)

    def to_json(self) -> str:
        return json.dumps({"codes": [asdict(c) for c in self]}, indent=2)

    def to_markdown(self) -> str:
        rows = [
            "| code | status | severity | retry can help | message |",
            "|---|---:|---|---|---|",
        ]
        for c in self:
            message = c.public_message.replace("|", "\\|")
            retry = "yes" if c.retryable else "no"
            rows.append(
                f"| `{c.code}` | {c.status} | {c.severity} | {retry} | {message} |"
            )
        return "\n".join(rows) + "\n"


registry = CodeRegistry()
"""The process-wide registry that every ``FaultlensError`` subclass joins."""


class FaultlensError(Exception):
    """Base of the errors an application raises on purpose.

    Subclasses set the class attributes; a subclass that does not set ``code``
    inherits its parent's and is not registered again. ``public_message`` is what
    clients see; the exception's own message (``str(exc)``) is for the report and
    reaches a client only in debug mode.
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    severity: ClassVar[Severity] = "error"
    title: ClassVar[str] = "Internal error"
    public_message: ClassVar[str] = "An unexpected error occurred."
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        public_message: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or self.public_message)
        self.instance_message = public_message
        self.extensions = extensions or {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            registry.register(cls)

    @property
    def client_detail(self) -> str:
        """The message safe to show a client.

        Not named ``detail`` or ``message``: sentry-sdk reports those attributes in
        place of ``str(exc)``, and the report should keep the internal message.
        """
        return self.instance_message or self.public_message


registry.register(FaultlensError)


class NotFoundError(FaultlensError):
    code = "NOT_FOUND"
    status = 404
    severity = "info"
    title = "Not found"
    public_message = "The requested resource does not exist."


class ValidationError(FaultlensError):
    code = "VALIDATION_FAILED"
    status = 422
    severity = "warning"
    title = "Validation failed"
    public_message = "The request is not valid."


class ConflictError(FaultlensError):
    code = "CONFLICT"
    status = 409
    severity = "warning"
    title = "Conflict"
    public_message = "The request conflicts with the current state of the resource."


class UnauthorizedError(FaultlensError):
    code = "UNAUTHORIZED"
    status = 401
    severity = "warning"
    title = "Unauthorized"
    public_message = "Authentication is required."


class ForbiddenError(FaultlensError):
    code = "FORBIDDEN"
    status = 403
    severity = "warning"
    title = "Forbidden"
    public_message = "You are not allowed to do this."


class RateLimitedError(FaultlensError):
    code = "RATE_LIMITED"
    status = 429
    severity = "warning"
    title = "Too many requests"
    public_message = "Too many requests; try again later."
    retryable = True


class UpstreamError(FaultlensError):
    code = "UPSTREAM_FAILURE"
    status = 502
    severity = "error"
    title = "Upstream failure"
    public_message = "A service this one depends on failed."
    retryable = True


class OperationTimeoutError(FaultlensError):
    """Named apart from the builtin ``TimeoutError``, which it does not replace."""

    code = "TIMEOUT"
    status = 504
    severity = "error"
    title = "Timeout"
    public_message = "The operation took too long."
    retryable = True
