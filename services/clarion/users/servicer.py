"""UserService over gRPC. Its RPCs arrive with their issue; until then they answer UNIMPLEMENTED."""

from __future__ import annotations

from clarion.core.server import ServiceRegistration, service_registration
from clarion.v1 import users_pb2, users_pb2_grpc


class UserServicer(users_pb2_grpc.UserServiceServicer):
    """Users, their preferences and their push devices."""


def registration() -> ServiceRegistration:
    """How to add UserService to a server."""
    return service_registration(
        # The generated base class answers UNIMPLEMENTED for every RPC not yet written; mypy sees it as abstract.
        UserServicer(),  # type: ignore[abstract]
        users_pb2_grpc.add_UserServiceServicer_to_server,
        users_pb2.DESCRIPTOR.services_by_name["UserService"],
    )
