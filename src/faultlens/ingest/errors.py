"""The errors that ingestion answers with.

Each carries the HTTP status it maps to and a ``detail`` that tells the client what was
wrong. They are translated to responses in one place, :mod:`faultlens.ingest.routes`.
A 5xx is never the answer to bad input: anything the client can get wrong is one of
these.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class: a request that Faultlens refuses, with the reason."""

    status: int = 400
    #: The outcome reason recorded for the dropped data.
    reason: str = "invalid"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(IngestError):
    """Malformed framing, JSON, compression or headers (400)."""

    status = 400
    reason = "invalid"


class Unauthorized(IngestError):
    """Authentication missing, malformed or given twice (401)."""

    status = 401
    reason = "invalid_auth"


class Forbidden(IngestError):
    """Unknown project or key, revoked key, or disallowed origin (403).

    The detail never says which of project or key was wrong.
    """

    status = 403
    reason = "forbidden"


class PayloadTooLarge(IngestError):
    """The body, the decompressed envelope or one item is over its limit (413)."""

    status = 413
    reason = "too_large"

    def __init__(self, detail: str, item_type: str = "envelope") -> None:
        super().__init__(detail)
        self.item_type = item_type
