"""TemplateService over gRPC. Its RPCs arrive with their issue; until then they answer UNIMPLEMENTED."""

from __future__ import annotations

from clarion.core.server import ServiceRegistration, service_registration
from clarion.v1 import templates_pb2, templates_pb2_grpc


class TemplateServicer(templates_pb2_grpc.TemplateServiceServicer):
    """Versioned, localised templates and their rendering."""


def registration() -> ServiceRegistration:
    """How to add TemplateService to a server."""
    return service_registration(
        # The generated base class answers UNIMPLEMENTED for every RPC not yet written; mypy sees it as abstract.
        TemplateServicer(),  # type: ignore[abstract]
        templates_pb2_grpc.add_TemplateServiceServicer_to_server,
        templates_pb2.DESCRIPTOR.services_by_name["TemplateService"],
    )
