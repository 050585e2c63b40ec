"""AccessService: what the calling key is and may do (clarion.v1.AccessService), served by every server process
beside its own services, so that it answers wherever the edge routes it."""

from __future__ import annotations

from typing import Any

import grpc

from clarion.core.server import ServiceRegistration, service_registration
from clarion.keys.auth import current_caller
from clarion.keys.scopes import DEFAULT_PROJECT, Scope, allowed_methods
from clarion.v1 import access_pb2, access_pb2_grpc


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    async def GetCaller(
        self, request: access_pb2.GetCallerRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> access_pb2.Caller:
        principal = current_caller()
        if principal is None:  # keys off (CLARION_AUTH_REQUIRED=false): every caller may call everything
            everything = frozenset({Scope.ADMIN.value})
            return access_pb2.Caller(
                project_id=DEFAULT_PROJECT, scopes=sorted(everything), allowed_methods=allowed_methods(everything)
            )
        return access_pb2.Caller(
            key_id=principal.key_id,
            name=principal.name,
            project_id=principal.project_id,
            scopes=sorted(principal.scopes),
            allowed_methods=allowed_methods(principal.scopes),
        )


def registration() -> ServiceRegistration:
    return service_registration(
        AccessServicer(),
        access_pb2_grpc.add_AccessServiceServicer_to_server,
        access_pb2.DESCRIPTOR.services_by_name["AccessService"],
    )
