"""Client interceptors' one shared step: the same call with other metadata."""

from __future__ import annotations

from collections.abc import Iterable

import grpc


def with_metadata(
    details: grpc.aio.ClientCallDetails, pairs: Iterable[tuple[str, str | bytes]]
) -> grpc.aio.ClientCallDetails:
    """`details` with its metadata replaced by `pairs`; everything else (deadline, credentials...) kept."""
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=details.timeout,
        metadata=grpc.aio.Metadata(*pairs),
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )
