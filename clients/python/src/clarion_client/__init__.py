"""Clarion's Python client: `Client` (blocking) and `AsyncClient` (asyncio) over the generated stubs in
`clarion.v1`, with the API key, deadlines, retries and errors handled (see this package's README)."""

from clarion_client._client import DEFAULT_RETRY, AsyncClient, Client, RetryPolicy
from clarion_client._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ClarionError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)

__all__ = [
    "DEFAULT_RETRY",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "ClarionError",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
]
