"""The descriptor set Envoy's transcoder reads: gen/clarion.binpb plus a REST binding for gRPC health.

`GET /v1/health` (the seed system's path) must answer from the services' own health, and the transcoder maps only
methods carrying a `google.api.http` option. grpc.health.v1 has none, and its proto is not ours to edit, so the
gateway's copy of it gets one here: `Health.Check` ↔ `GET /v1/health` (`?service=clarion.v1.UserService` asks about
one service). The generated gen/clarion.binpb stays exactly what `make gen` produced.
"""

from __future__ import annotations

from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from clarion.gateway.errors import GatewayError

HEALTH_SERVICE = "grpc.health.v1.Health"
# Both reflection versions the servers answer (clarion.core.server), v1 first as clients ask.
REFLECTION_SERVICES = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")
HEALTH_PATH = "/v1/health"
_ANNOTATIONS_FILE = "google/api/annotations.proto"


def default_descriptor_set_path() -> Path:
    """gen/clarion.binpb: beside the generated code in a wheel (clarion/v1/clarion.binpb, see pyproject's
    force-include), else in gen/ of a checkout or an editable install."""
    from clarion.v1 import users_pb2

    generated = Path(users_pb2.__file__).resolve()
    packaged = generated.with_name("clarion.binpb")
    # gen/python/clarion/v1/users_pb2.py → gen/clarion.binpb
    return packaged if packaged.exists() else generated.parents[3] / "clarion.binpb"


def load_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    """Read a serialized FileDescriptorSet, failing with a message that says how to make it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GatewayError(f"descriptor set {path} not found: run `make gen`") from None
    descriptor_set = descriptor_pb2.FileDescriptorSet()
    descriptor_set.ParseFromString(data)
    return descriptor_set


def _health_file_with_http_binding() -> descriptor_pb2.FileDescriptorProto:
    health_file = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(health_file)
    (service,) = (s for s in health_file.service if s.name == "Health")
    (check,) = (m for m in service.method if m.name == "Check")
    check.options.Extensions[annotations_pb2.http].CopyFrom(http_pb2.HttpRule(get=HEALTH_PATH))
    # The option's extension is declared there; it is already in the set, which our protos import.
    health_file.dependency.append(_ANNOTATIONS_FILE)
    return health_file


def gateway_descriptor_set(base: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    """`base` plus grpc.health.v1 with `GET /v1/health` bound to Health.Check."""
    names = {file.name for file in base.file}
    if _ANNOTATIONS_FILE not in names:
        raise GatewayError(f"the descriptor set has no {_ANNOTATIONS_FILE}: build it with its imports")
    health_file = _health_file_with_http_binding()
    combined = descriptor_pb2.FileDescriptorSet()
    combined.CopyFrom(base)
    if health_file.name in names:
        raise GatewayError(f"the descriptor set already has {health_file.name}")
    combined.file.append(health_file)
    return combined


def service_names(descriptor_set: descriptor_pb2.FileDescriptorSet, *, http_only: bool = False) -> list[str]:
    """Full names of the services in the set, sorted (the files' order follows their imports, which change); with
    `http_only`, those with an HTTP binding."""
    found: list[str] = []
    for file in descriptor_set.file:
        for service in file.service:
            if not http_only or any(m.options.HasExtension(annotations_pb2.http) for m in service.method):
                found.append(f"{file.package}.{service.name}")
    return sorted(found)
