"""Clarion's contracts as the generated modules hold them: every module that defines a service, in one list, for the
code that walks every RPC (the edge's streaming routes, the Kubernetes gateway's upstreams, the scope table's
test). tests/unit/test_contracts_modules.py fails when a proto file with a service is missing here."""

from __future__ import annotations

from google.protobuf.descriptor import ServiceDescriptor

from clarion.v1 import (
    access_pb2,
    inbox_pb2,
    notifications_pb2,
    provider_events_pb2,
    suppressions_pb2,
    templates_pb2,
    users_pb2,
)

SERVICE_MODULES = (
    users_pb2,
    templates_pb2,
    notifications_pb2,
    access_pb2,
    inbox_pb2,
    suppressions_pb2,
    provider_events_pb2,
)


def services() -> list[ServiceDescriptor]:
    """Every service of the contracts."""
    return [service for module in SERVICE_MODULES for service in module.DESCRIPTOR.services_by_name.values()]


def full_name(name: str) -> str:
    """A service's full name from its short one: "InboxService" → "clarion.v1.InboxService"."""
    (found,) = (service.full_name for service in services() if service.name == name)
    return found


def methods() -> dict[str, str]:
    """Every RPC as its full gRPC method name (`/clarion.v1.UserService/GetUser`), with its service's full name."""
    return {
        f"/{service.full_name}/{method.name}": service.full_name for service in services() for method in service.methods
    }
