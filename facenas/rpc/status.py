"""The one place where facenas errors and gRPC status codes map to each other."""

from __future__ import annotations

import grpc

from facenas.errors import (
    ArchNotEvaluable,
    Cancelled,
    Conflict,
    FacenasError,
    InvalidInput,
    MeasurementError,
    NotFound,
    Unauthenticated,
    Unavailable,
)

#: Most specific first: Conflict is an InvalidInput, and must map to ALREADY_EXISTS; ArchNotEvaluable
#: comes first, so a model's failure is FAILED_PRECONDITION whatever else its class derives from.
_TO_CODE: tuple[tuple[type[FacenasError], grpc.StatusCode], ...] = (
    (ArchNotEvaluable, grpc.StatusCode.FAILED_PRECONDITION),
    (Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (MeasurementError, grpc.StatusCode.INTERNAL),
)

_FROM_CODE: dict[grpc.StatusCode, type[FacenasError]] = {
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: ArchNotEvaluable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def code_for(error: BaseException) -> grpc.StatusCode:
    """The status code a servicer answers with for ``error``."""
    for cls, code in _TO_CODE:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


class RemoteError(FacenasError):
    """A call failed with a status that has no domain meaning (INTERNAL, UNKNOWN, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        super().__init__(f"{code.name}: {details}")


def error_from_rpc(err: grpc.RpcError) -> FacenasError:
    """The domain error a client raises for a failed call."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    cls = _FROM_CODE.get(code)
    if cls is None:
        return RemoteError(code, details)
    return cls(details)
