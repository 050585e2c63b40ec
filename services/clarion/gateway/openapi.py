"""OpenAPI 3.1 for the REST edge, generated from the descriptor set (gen/clarion.binpb) into gen/openapi.json.

Paths and methods come from each RPC's `google.api.http` rule (and its additional bindings), schemas from the
messages with the proto3 JSON mapping as Envoy's transcoder prints it, descriptions from the protos' comments, and
every error is a `google.rpc.Status`. Envoy serves the document at GET /v1/openapi.json (gateway/envoy.yaml.j2).

Written here rather than taken from protoc-gen-openapiv2 (grpc-gateway) or gnostic's protoc-gen-openapi: both are Go
binaries, which this build cannot install (it has PyPI, Debian and npm, offline otherwise), and they write Swagger 2.0
and OpenAPI 3.0. Neither knows this edge either: the transcoder prints proto field names (`user_id`, not `userId`:
`preserve_proto_field_names` in the template), answers its own errors as a Status (`local_reply_config`), and serves
`GET /v1/health` through a binding the gateway adds (clarion.gateway.descriptors).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2
from google.protobuf import descriptor_pb2

from clarion.gateway.descriptors import gateway_descriptor_set

OPENAPI_PATH = "/v1/openapi.json"
STATUS = "google.rpc.Status"
# The error details the services and the edge put in a Status (clarion.core.errors, the template's local replies).
ERROR_DETAILS = ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo", "google.rpc.RequestInfo")
SECURITY_SCHEME = "api_key"
# Called without a key (clarion.keys.scopes): health, and this document (answered by Envoy itself).
KEYLESS_SERVICES = ("grpc.health.v1.Health",)
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"

_Field = descriptor_pb2.FieldDescriptorProto
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "format": "uint32", "minimum": 0, "maximum": 2**32 - 1}
# 64-bit integers are JSON strings (a JavaScript number loses precision past 2^53); numbers are accepted too.
_INT64 = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"}
_UINT64 = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
_SCALARS: dict[int, dict[str, Any]] = {
    _Field.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _Field.TYPE_FLOAT: {"type": "number", "format": "float"},
    _Field.TYPE_INT32: _INT32,
    _Field.TYPE_SINT32: _INT32,
    _Field.TYPE_SFIXED32: _INT32,
    _Field.TYPE_UINT32: _UINT32,
    _Field.TYPE_FIXED32: _UINT32,
    _Field.TYPE_INT64: _INT64,
    _Field.TYPE_SINT64: _INT64,
    _Field.TYPE_SFIXED64: _INT64,
    _Field.TYPE_UINT64: _UINT64,
    _Field.TYPE_FIXED64: _UINT64,
    _Field.TYPE_BOOL: {"type": "boolean"},
    _Field.TYPE_STRING: {"type": "string"},
    _Field.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WRAPPERS = {
    "DoubleValue": _Field.TYPE_DOUBLE,
    "FloatValue": _Field.TYPE_FLOAT,
    "Int64Value": _Field.TYPE_INT64,
    "UInt64Value": _Field.TYPE_UINT64,
    "Int32Value": _Field.TYPE_INT32,
    "UInt32Value": _Field.TYPE_UINT32,
    "BoolValue": _Field.TYPE_BOOL,
    "StringValue": _Field.TYPE_STRING,
    "BytesValue": _Field.TYPE_BYTES,
}
# Well-known types have JSON forms of their own, written in place; Any stays a component (Status refers to it).
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.NullValue": {"type": "null"},
    "google.protobuf.Empty": {"type": "object"},
    **{
        f"google.protobuf.{name}": {**_SCALARS[kind], "type": [_SCALARS[kind]["type"], "null"]}
        for name, kind in _WRAPPERS.items()
    },
}
# Well-known types a query parameter can carry: those whose JSON is a single string, number or boolean.
_QUERY_WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
_ANY = {
    "type": "object",
    "description": "A message of the type `@type` names, its fields beside `@type`.",
    "properties": {"@type": {"type": "string", "description": "`type.googleapis.com/` and the message's full name."}},
    "required": ["@type"],
}
# grpc.health.v1 comes from the grpcio-health-checking wheel, without its comments.
_HEALTH_COMMENTS = {
    "grpc.health.v1.Health": "The services' health, for probes and status checks; no key needed.",
    "grpc.health.v1.Health.Check": "Whether the services are serving (`SERVING`); `?service=clarion.v1.UserService` "
    "asks about one of them, and NOT_FOUND means a service this server does not run.",
}
_EMPTY = "Done: the body is `{}`."
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_PATH_PARAMETER = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")
_QUERY_DEPTH = 3  # nested messages flattened into `a.b.c` query parameters, as far as this


def _unwrap(comment: str) -> str:
    """A proto comment as prose: lines of a paragraph joined, paragraphs kept apart."""
    paragraphs = re.split(r"\n\s*\n", comment.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _summary(description: str) -> str:
    """The first sentence."""
    first = description.split("\n\n", 1)[0]
    match = re.match(r"(.+?[.!?])(\s|$)", first)
    return match.group(1) if match else first


@dataclass
class _Index:
    """Every message, enum and service of the set by full name, with the leading comment of each element."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    services: dict[str, descriptor_pb2.ServiceDescriptorProto] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, descriptor_set: descriptor_pb2.FileDescriptorSet) -> _Index:
        index = cls(comments=dict(_HEALTH_COMMENTS))
        for file in descriptor_set.file:
            by_path = {tuple(loc.path): _unwrap(loc.leading_comments) for loc in file.source_code_info.location}
            package = file.package
            index._add_messages(package, file.message_type, (4,), by_path)
            index._add_enums(package, file.enum_type, (5,), by_path)
            for i, service in enumerate(file.service):
                name = f"{package}.{service.name}"
                index.services[name] = service
                index._comment(name, by_path.get((6, i)))
                for j, method in enumerate(service.method):
                    index._comment(f"{name}.{method.name}", by_path.get((6, i, 2, j)))
        return index

    def _comment(self, name: str, text: str | None) -> None:
        if text:
            self.comments[name] = text

    def _add_messages(
        self, scope: str, messages: Any, path: tuple[int, ...], by_path: dict[tuple[int, ...], str]
    ) -> None:
        for i, message in enumerate(messages):
            name, here = f"{scope}.{message.name}", (*path, i)
            self.messages[name] = message
            self._comment(name, by_path.get(here))
            for j, field_ in enumerate(message.field):
                self._comment(f"{name}.{field_.name}", by_path.get((*here, 2, j)))
            self._add_messages(name, message.nested_type, (*here, 3), by_path)
            self._add_enums(name, message.enum_type, (*here, 4), by_path)

    def _add_enums(self, scope: str, enums: Any, path: tuple[int, ...], by_path: dict[tuple[int, ...], str]) -> None:
        for i, enum in enumerate(enums):
            name, here = f"{scope}.{enum.name}", (*path, i)
            self.enums[name] = enum
            self._comment(name, by_path.get(here))
            for j, value in enumerate(enum.value):
                self._comment(f"{name}.{value.name}", by_path.get((*here, 2, j)))

    def field_path(self, message: str, path: str) -> list[descriptor_pb2.FieldDescriptorProto]:
        """The fields a dotted path (`user.user_id`) goes through, from `message`."""
        fields = []
        for name in path.split("."):
            (found,) = (f for f in self.messages[message].field if f.name == name)
            fields.append(found)
            message = found.type_name.lstrip(".")
        return fields


def _behaviors(field_: descriptor_pb2.FieldDescriptorProto) -> list[int]:
    return list(field_.options.Extensions[field_behavior_pb2.field_behavior])


class _Builder:
    """Builds the document, collecting the components the operations refer to."""

    def __init__(self, index: _Index) -> None:
        self.index = index
        self.schemas: dict[str, dict[str, Any]] = {}

    # Schemas

    def type_schema(self, type_name: str) -> dict[str, Any]:
        """A message or enum type: its JSON form in place for well-known types, else a reference to its component."""
        name = type_name.lstrip(".")
        if name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # taken before recursing: messages may refer to themselves
            self.schemas[name] = self._enum_schema(name) if name in self.index.enums else self._message_schema(name)
        return {"$ref": _SCHEMAS + name}

    def field_schema(self, message: str, field_: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        """A field's value: maps are objects, repeated fields arrays; with its comment and behaviours."""
        entry = self.index.messages.get(field_.type_name.lstrip("."))
        schema: dict[str, Any]
        if entry is not None and entry.options.map_entry:
            schema = {"type": "object", "additionalProperties": self._single(entry.field[1])}
        elif field_.label == _Field.LABEL_REPEATED:
            schema = {"type": "array", "items": self._single(field_)}
        else:
            schema = self._single(field_)
        if comment := self.index.comments.get(f"{message}.{field_.name}"):
            schema["description"] = comment
        if field_behavior_pb2.OUTPUT_ONLY in _behaviors(field_):
            schema["readOnly"] = True
        return schema

    def _single(self, field_: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field_.type in (_Field.TYPE_MESSAGE, _Field.TYPE_ENUM):
            return self.type_schema(field_.type_name)
        return copy.deepcopy(_SCALARS[field_.type])

    def _enum_schema(self, name: str) -> dict[str, Any]:
        """Enums are their values' names (the transcoder prints names, and reads names or numbers)."""
        values = self.index.enums[name].value
        lines = [f"- `{v.name}`: {self.index.comments.get(f'{name}.{v.name}', '')}" for v in values]
        description = "\n".join([self.index.comments.get(name, name), "", *lines])
        return {"type": "string", "enum": [v.name for v in values], "description": description}

    def _message_schema(self, name: str) -> dict[str, Any]:
        message = self.index.messages[name]
        schema: dict[str, Any] = {"type": "object", "properties": {}}
        if comment := self.index.comments.get(name):
            schema["description"] = comment
        for field_ in message.field:
            schema["properties"][field_.name] = self.field_schema(name, field_)
        required = [f.name for f in message.field if field_behavior_pb2.REQUIRED in _behaviors(f)]
        if required:
            schema["required"] = required
        # A oneof sets at most one of its fields (proto3 `optional` makes one-field oneofs: nothing to say).
        oneofs = range(len(message.oneof_decl))
        groups = [[f.name for f in message.field if f.HasField("oneof_index") and f.oneof_index == i] for i in oneofs]
        pairs = [list(pair) for group in groups for pair in itertools.combinations(group, 2)]
        if pairs:
            schema["not"] = {"anyOf": [{"required": pair} for pair in pairs]}
        return schema

    def without(self, type_name: str, excluded: set[str]) -> dict[str, Any]:
        """A message's schema minus the fields at the dotted paths `excluded` (those bound to the URL path)."""
        if not excluded:
            return self.type_schema(type_name)
        name = type_name.lstrip(".")
        schema = self._message_schema(name)
        for field_ in self.index.messages[name].field:
            inner = {path.split(".", 1)[1] for path in excluded if path.startswith(field_.name + ".")}
            if field_.name in excluded:
                del schema["properties"][field_.name]
            elif inner:
                schema["properties"][field_.name] = self.without(field_.type_name, inner)
        schema["required"] = [r for r in schema.get("required", []) if r not in excluded]
        if not schema["required"]:
            del schema["required"]
        return schema

    # Operations

    def query_parameters(self, message: str, bound: set[str], prefix: str = "") -> list[dict[str, Any]]:
        """The request's fields bound neither to the path nor the body, as the transcoder reads them from the
        query: `name=value`, repeated as `name=a&name=b`, nested messages as `outer.inner=value`."""
        parameters: list[dict[str, Any]] = []
        for field_ in self.index.messages[message].field:
            path = prefix + field_.name
            if path in bound or any(path.startswith(b + ".") for b in bound):
                continue
            type_name = field_.type_name.lstrip(".")
            if field_.type == _Field.TYPE_MESSAGE and type_name not in _QUERY_WELL_KNOWN:
                nested = self.index.messages.get(type_name)
                if type_name.startswith("google.protobuf.") or nested is None or nested.options.map_entry:
                    continue  # no query form (Struct, Any, maps)
                if field_.label != _Field.LABEL_REPEATED and path.count(".") < _QUERY_DEPTH:
                    parameters += self.query_parameters(type_name, bound, path + ".")
                continue
            schema = self.field_schema(message, field_)
            description = schema.pop("description", None)
            parameter: dict[str, Any] = {"name": path, "in": "query", "schema": schema}
            if description:
                parameter["description"] = description
            if field_behavior_pb2.REQUIRED in _behaviors(field_):
                parameter["required"] = True
            parameters.append(parameter)
        return parameters

    def operation(
        self, service: str, method: descriptor_pb2.MethodDescriptorProto, rule: Any, operation_id: str
    ) -> tuple[str, str, dict[str, Any]]:
        """(path, HTTP method, operation) for one binding of `method`."""
        verb = next(v for v in _HTTP_METHODS if getattr(rule, v))
        template: str = getattr(rule, verb)
        request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
        path_fields = _PATH_PARAMETER.findall(template)
        names = _parameter_names(path_fields)
        parameters: list[dict[str, Any]] = []
        for path in path_fields:
            fields = self.index.field_path(request, path)
            parent = request if len(fields) == 1 else fields[-2].type_name.lstrip(".")
            schema = self.field_schema(parent, fields[-1])
            description = schema.pop("description", None)
            parameter = {"name": names[path], "in": "path", "required": True, "schema": schema}
            parameters.append({**parameter, "description": description} if description else parameter)
        operation: dict[str, Any] = {"operationId": operation_id, "tags": [service.rsplit(".", 1)[1]]}
        if rule.body == "*":
            operation["requestBody"] = self._body(self.without(request, set(path_fields)))
        elif rule.body:
            (body_field,) = self.index.field_path(request, rule.body)
            inner = {p.split(".", 1)[1] for p in path_fields if p.startswith(rule.body + ".")}
            body_schema = self.without(body_field.type_name, inner) if inner else self.field_schema(request, body_field)
            body_schema.pop("description", None)
            operation["requestBody"] = self._body(body_schema)
        if rule.body != "*":
            parameters += self.query_parameters(request, {*path_fields, *([rule.body] if rule.body else [])})
        if parameters:
            operation["parameters"] = parameters
        if comment := self.index.comments.get(f"{service}.{method.name}"):
            operation["summary"], operation["description"] = _summary(comment), comment
        if rule.response_body:
            (body_field,) = self.index.field_path(response, rule.response_body)
            result = self.field_schema(response, body_field)
        else:
            result = self.type_schema(response)
        keyless = service in KEYLESS_SERVICES
        description = _EMPTY if response == "google.protobuf.Empty" else self.index.comments.get(response, "OK")
        operation["responses"] = _responses(result, description, keyless=keyless)
        if keyless:
            operation["security"] = []
        return _PATH_PARAMETER.sub(lambda m: "{" + names[m.group(1)] + "}", template), verb, operation

    @staticmethod
    def _body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}


def _parameter_names(paths: list[str]) -> dict[str, str]:
    """OpenAPI names for the fields a URL path binds: the last part (`user.user_id` → `user_id`, as tools make
    identifiers and format strings of them), or the whole path with `_` where two would share a name."""
    leaves = [path.rsplit(".", 1)[-1] for path in paths]
    return {
        path: leaf if leaves.count(leaf) == 1 else path.replace(".", "_")
        for path, leaf in zip(paths, leaves, strict=True)
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _responses(result: dict[str, Any], description: str, *, keyless: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": _summary(description), "content": _json(result)},
        "429": {"$ref": _RESPONSES + "RateLimited"},
        "default": {"$ref": _RESPONSES + "Error"},
    }
    if not keyless:
        responses["401"] = {"$ref": _RESPONSES + "Unauthenticated"}
    return responses


def _error_responses() -> dict[str, Any]:
    status = {"$ref": _SCHEMAS + STATUS}
    return {
        "Error": {
            "description": "An error: a `google.rpc.Status` with the HTTP status its code maps to (400 for "
            "INVALID_ARGUMENT, 404 for NOT_FOUND, ...), from a service or from the edge itself (an unknown path, bad "
            "JSON, a body over the size limit, no service reachable). `details` carry an ErrorInfo (`reason`, "
            "`domain`: `clarion.dev`), a RequestInfo (the `request_id`, also in the `x-request-id` header) and, for "
            "invalid fields, a BadRequest.",
            "content": _json(status),
        },
        "Unauthenticated": {
            "description": "No API key, or one that is malformed, unknown or revoked (UNAUTHENTICATED).",
            "content": _json(status),
        },
        "RateLimited": {
            "description": "Too many requests (RESOURCE_EXHAUSTED): the edge's buckets for this address or key, "
            "or the key's own quota. Retry after the time `Retry-After` or the Status's RetryInfo says.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying, when the edge refused the request.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
            "content": _json(status),
        },
    }


_DESCRIPTION = """\
Clarion's REST/JSON edge: Envoy's gRPC-JSON transcoder in front of the gRPC services, generated from the protos \
(`protos/clarion/v1/`), which are the reference.

JSON follows the proto3 mapping, with the protos' field names: responses print `user_id`, and requests may use that \
or the lowerCamelCase `userId`. Responses print every field, zeros and empty strings included. 64-bit integers are \
strings, enums their value names, timestamps RFC 3339, durations like `1.5s`, bytes base64. Unknown fields in a \
request body are ignored; unknown query parameters are an error.

Every call but health and this document needs an API key: `authorization: Bearer clr_<id>_<secret>`. Every error \
is a `google.rpc.Status`."""


def build_openapi(descriptor_set: descriptor_pb2.FileDescriptorSet, *, api_version: str) -> dict[str, Any]:
    """The OpenAPI document of the edge serving `descriptor_set` (gen/clarion.binpb, with its comments)."""
    index = _Index.of(gateway_descriptor_set(descriptor_set))
    builder = _Builder(index)
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for service_name, service in sorted(index.services.items()):
        bound = [m for m in service.method if m.options.HasExtension(annotations_pb2.http)]
        if not bound:
            continue
        tag = {"name": service.name, "description": index.comments.get(service_name, service_name)}
        tags.append(tag)
        for method in bound:
            rule = method.options.Extensions[annotations_pb2.http]
            for n, binding in enumerate([rule, *rule.additional_bindings], start=1):
                operation_id = f"{service.name}_{method.name}" + (f"_{n}" if n > 1 else "")
                path, verb, operation = builder.operation(service_name, method, binding, operation_id)
                paths.setdefault(path, {})[verb] = operation
    paths[OPENAPI_PATH] = {"get": _openapi_operation()}
    tags.append({"name": "Edge", "description": "Answered by the edge itself."})
    builder.type_schema(STATUS)
    for detail in ERROR_DETAILS:
        builder.type_schema(detail)
    builder.schemas["google.protobuf.Any"] = _ANY
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clarion REST API",
            "version": api_version,
            "description": _DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        # Relative: the host that served this document.
        "servers": [{"url": "/"}],
        "security": [{SECURITY_SCHEME: []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": builder.schemas,
            "responses": _error_responses(),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "clr_<id>_<secret>",
                    "description": "An API key (`clarion keys create`), as `authorization: Bearer clr_…`.",
                }
            },
        },
    }


def _openapi_operation() -> dict[str, Any]:
    return {
        "operationId": "Edge_GetOpenApi",
        "tags": ["Edge"],
        "summary": "This document.",
        "security": [],
        "responses": {
            "200": {"description": "The OpenAPI 3.1 document of this API.", "content": _json({"type": "object"})},
            "429": {"$ref": _RESPONSES + "RateLimited"},
            "default": {"$ref": _RESPONSES + "Error"},
        },
    }


def render_openapi(descriptor_set: descriptor_pb2.FileDescriptorSet, *, compact: bool = False) -> str:
    """gen/openapi.json's text: the document for this version of Clarion, keys sorted, indented by two spaces; or
    `compact`, as the edge serves it (a third smaller, which matters inside the gateway's ConfigMap)."""
    document = build_openapi(descriptor_set, api_version=version("clarion"))
    if compact:
        return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
