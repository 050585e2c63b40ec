"""Typed domain errors, and their one mapping to `google.rpc.Status` with details.

Handlers raise these; the server interceptor turns them into gRPC statuses (and, through Envoy, HTTP statuses
with a JSON body). Nothing else builds error statuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "clarion.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: `field` is its path in the request (e.g. `user.email_address`)."""

    field: str
    description: str


class ClarionError(Exception):
    """Base of the errors a client can be told about. `reason` is a stable UPPER_SNAKE_CASE identifier."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(ClarionError):
    """The request is malformed; `violations` names each bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])

    @classmethod
    def for_field(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """An error about a single field, its message naming the field."""
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)], reason=reason)


class NotFound(ClarionError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(ClarionError):
    """The resource, or the idempotency key, is already taken."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ClarionError):
    """The request is well formed but the system is not in a state to do it (e.g. sending a deleted template)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(ClarionError):
    """A concurrent change won; retrying the whole read-modify-write may succeed."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Unauthenticated(ClarionError):
    """No credentials, or credentials that are not valid."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ClarionError):
    """Valid credentials without the scope this call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class _Retryable(ClarionError):
    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s


class ResourceExhausted(_Retryable):
    """A quota or rate limit is used up; `retry_after_s` says when to come back."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(_Retryable):
    """A dependency is down (or its circuit breaker is open); retry after `retry_after_s`."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


# A status travels in the response trailers, which gRPC clients cap (8 KiB by default): errors that echo the caller's
# input (an id, a key, a field name from its data) must stay well under that, or the client gets RESOURCE_EXHAUSTED
# about the trailers instead of the error.
MAX_MESSAGE_CHARS = 500
MAX_VALUE_CHARS = 120
MAX_VIOLATIONS = 10


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_status(error: ClarionError, *, request_id: str) -> status_pb2.Status:
    """The `google.rpc.Status` a client receives for a domain error: ErrorInfo always, plus BadRequest for
    field violations and RetryInfo when the client should come back later, and the request id to quote. Echoed
    values are shortened so the status always fits in the trailers."""
    metadata = {key: _bounded(value, MAX_VALUE_CHARS) for key, value in error.metadata.items()}
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)),
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_bounded(v.field, MAX_VALUE_CHARS), description=_bounded(v.description, MAX_VALUE_CHARS)
                )
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        details.append(_pack(bad_request))
    if isinstance(error, _Retryable) and error.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    message = _bounded(error.message, MAX_MESSAGE_CHARS)
    return status_pb2.Status(code=error.code.value[0], message=message, details=details)


def internal_status(*, request_id: str) -> status_pb2.Status:
    """What a client sees for an unexpected failure: no internals, only the id to quote when reporting it."""
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; quote request id {request_id} when reporting it",
        details=[
            _pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)),
            _pack(error_details_pb2.RequestInfo(request_id=request_id)),
        ],
    )
