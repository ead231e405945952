"""Pinpoint's errors on the wire: `x-amzn-ErrorType` names the exception and the body is
`{"Message", "RequestID"}`, so botocore raises the modelled exception class (client.exceptions.X)."""
from __future__ import annotations

from tidings.engine.platform.errors import Conflict, NotFound, TidingsError, Unavailable


class PinpointError(Exception):
    status = 400
    code = "BadRequestException"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def body(self, request_id: str) -> dict:
        return {"Message": self.message, "RequestID": request_id}


class BadRequestException(PinpointError):
    status, code = 400, "BadRequestException"


class ForbiddenException(PinpointError):
    status, code = 403, "ForbiddenException"


class NotFoundException(PinpointError):
    status, code = 404, "NotFoundException"


class MethodNotAllowedException(PinpointError):
    status, code = 405, "MethodNotAllowedException"


class ConflictException(PinpointError):
    status, code = 409, "ConflictException"


class PayloadTooLargeException(PinpointError):
    status, code = 413, "PayloadTooLargeException"


class InternalServerErrorException(PinpointError):
    status, code = 500, "InternalServerErrorException"


class AuthFailure(PinpointError):
    """A request that SigV4 does not authenticate. AWS answers these before the service sees them, in the
    signer's own shape: 403, the reason as `x-amzn-ErrorType`, a lower-case `message`."""

    status = 403

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    def body(self, request_id: str) -> dict:
        return {"message": self.message}


def from_engine(exc: TidingsError) -> PinpointError:
    """An engine error as the Pinpoint exception of the same meaning; the message keeps the field name."""
    text = f"{exc.field}: {exc.message}" if exc.field and exc.field not in exc.message else exc.message
    if exc.details:
        text += "; " + "; ".join(f"{d.get('endpoint_id') or d.get('event') or d.get('index')}: "
                                 f"{d.get('field')}: {d.get('message')}" for d in exc.details[:10])
    if isinstance(exc, NotFound):
        return NotFoundException(text)
    if isinstance(exc, Conflict):
        return ConflictException(text)
    if isinstance(exc, Unavailable):
        return InternalServerErrorException(text)
    return BadRequestException(text)
