"""Domain errors. The API maps each class to one HTTP status, once, in api/errors.py."""
from __future__ import annotations

from typing import Any


class TidingsError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(TidingsError):
    status = 400
    code = "invalid"


class LimitExceeded(InvalidInput):
    status = 400
    code = "limit_exceeded"


class NotFound(TidingsError):
    status = 404
    code = "not_found"


class Conflict(TidingsError):
    status = 409
    code = "conflict"


class Unauthorized(TidingsError):
    status = 401
    code = "unauthorized"


class BatchRejected(InvalidInput):
    """A batch with bad items: nothing of it was written; `details` names each bad item."""

    code = "batch_rejected"

    def __init__(self, errors: list[dict[str, Any]], total: int, originals: list[TidingsError] | None = None):
        self.originals = originals or []
        shown = errors[:100]
        super().__init__(
            f"{len(errors)} of {total} items are invalid; nothing was written",
            details=shown,
        )


class Unavailable(TidingsError):
    """The server cannot serve this now for a reason of its own (its configuration), not the caller's."""

    status = 503
    code = "unavailable"


class Forbidden(TidingsError):
    """Authenticated by something other than a key (a provider's signature) and it did not match."""

    status = 403
    code = "forbidden"
