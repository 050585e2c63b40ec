"""Clarion's errors as exceptions: the status code as a class, the `google.rpc` details as attributes."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One field of the request that was refused, and why (`google.rpc.BadRequest.FieldViolation`)."""

    field: str  # the field's path in the request, e.g. `user.email_address`
    description: str


class ClarionError(grpc.RpcError):
    """A call Clarion (or the network between) answered with an error.

    A `grpc.RpcError`, so code that already catches those keeps working; `code()` and `details()` answer as on
    grpc's own error.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.status_code = code
        self.message = message
        self.reason = reason  # google.rpc.ErrorInfo's reason, e.g. API_KEY_MISSING; "" when the server sent none
        self.metadata = metadata or {}
        self.field_violations = field_violations

    def code(self) -> grpc.StatusCode:
        return self.status_code

    def details(self) -> str:
        return self.message

    @classmethod
    def from_status(cls, code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> ClarionError:
        """The error for a status, as the subclass for its code, with what its details say."""
        reason, metadata, violations = "", {}, []
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
        error_class = _BY_CODE.get(code, ClarionError)
        return error_class(code, message, reason=reason, metadata=metadata, field_violations=tuple(violations))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ClarionError:
        """The error for what grpc raised (sync or aio): its code, message and `grpc-status-details-bin`."""
        if isinstance(error, ClarionError):
            return error
        code: grpc.StatusCode = error.code()  # every RpcError grpc raises is also a grpc.Call
        message: str = error.details() or ""
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except ValueError:
            status = None  # details that contradict the status line: keep the status line
        return cls.from_status(code, message, status)


class Cancelled(ClarionError):
    pass


class Unknown(ClarionError):
    pass


class InvalidArgument(ClarionError):
    pass


class DeadlineExceeded(ClarionError):
    pass


class NotFound(ClarionError):
    pass


class AlreadyExists(ClarionError):
    pass


class PermissionDenied(ClarionError):
    pass


class ResourceExhausted(ClarionError):
    pass


class FailedPrecondition(ClarionError):
    pass


class Aborted(ClarionError):
    pass


class OutOfRange(ClarionError):
    pass


class Unimplemented(ClarionError):
    pass


class Internal(ClarionError):
    pass


class Unavailable(ClarionError):
    pass


class Unauthenticated(ClarionError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ClarionError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}
