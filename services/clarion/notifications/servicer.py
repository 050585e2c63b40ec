"""NotificationService over gRPC. Its RPCs arrive with their issue; until then they answer UNIMPLEMENTED."""

from __future__ import annotations

from clarion.core.server import ServiceRegistration, service_registration
from clarion.v1 import notifications_pb2, notifications_pb2_grpc


class NotificationServicer(notifications_pb2_grpc.NotificationServiceServicer):
    """Accepting notifications and reporting what became of them."""


def registration() -> ServiceRegistration:
    """How to add NotificationService to a server."""
    return service_registration(
        # The generated base class answers UNIMPLEMENTED for every RPC not yet written; mypy sees it as abstract.
        NotificationServicer(),  # type: ignore[abstract]
        notifications_pb2_grpc.add_NotificationServiceServicer_to_server,
        notifications_pb2.DESCRIPTOR.services_by_name["NotificationService"],
    )
