"""The REST edge's OpenAPI document: a valid OpenAPI 3.1 description, made from the descriptor set with the proto3
JSON mapping the transcoder prints, and committed as gen/openapi.json."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from clarion.gateway.descriptors import default_descriptor_set_path, load_descriptor_set
from clarion.gateway.openapi import OPENAPI_PATH, build_openapi, render_openapi

GEN_OPENAPI = Path(__file__).resolve().parents[3] / "gen" / "openapi.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(load_descriptor_set(default_descriptor_set_path()), api_version=version("clarion"))


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def parameters(operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", [])}


def body_schema(operation: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return found


def test_the_committed_document_is_what_the_descriptor_set_makes_now() -> None:
    rendered = render_openapi(load_descriptor_set(default_descriptor_set_path()))

    assert GEN_OPENAPI.read_text(encoding="utf-8") == rendered, "gen/openapi.json is stale: run `make gen`"


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)

    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == version("clarion")
    assert document["servers"] == [{"url": "/"}]


def test_the_validator_would_notice_a_broken_document(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    # A path template whose parameter the operation does not declare.
    del broken["paths"]["/v1/users/{user_id}"]["get"]["parameters"]

    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_paths_and_methods_come_from_the_http_rules(document: dict[str, Any]) -> None:
    paths = document["paths"]

    get_user = paths["/v1/users/{user_id}"]["get"]
    assert get_user["operationId"] == "UserService_GetUser"
    assert get_user["tags"] == ["UserService"]
    assert get_user["summary"] == "Returns one user, with their devices."
    assert parameters(get_user)["user_id"] == {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The id of the user.",
    }
    # A custom verb, its repeated field a required query parameter (`?user_ids=a&user_ids=b`).
    batch_get = paths["/v1/users:batchGet"]["get"]
    assert parameters(batch_get)["user_ids"]["in"] == "query"
    assert parameters(batch_get)["user_ids"]["required"] is True
    assert parameters(batch_get)["user_ids"]["schema"] == {"type": "array", "items": {"type": "string"}}
    # An additional binding is an operation of its own.
    assert paths["/v1/templates/render"]["post"]["operationId"] == "TemplateService_RenderTemplate_2"
    assert {op["operationId"] for path in paths.values() for op in path.values()} >= {
        "NotificationService_SendNotification",
        "TemplateService_RenderTemplate",
        "Health_Check",
        "Edge_GetOpenApi",
    }


def test_bodies_leave_out_what_the_path_binds(document: dict[str, Any]) -> None:
    paths = document["paths"]

    # body: "*" with a path parameter: the rest of the request is the body.
    render = paths["/v1/templates/{template_key}:render"]["post"]
    assert set(parameters(render)) == {"template_key"}
    assert set(body_schema(render)["properties"]) == {"version", "locale", "data", "draft"}
    # A named body: that field is the body, minus its part in the path; the other fields are query parameters.
    update = paths["/v1/users/{user_id}"]["patch"]
    assert parameters(update)["user_id"]["in"] == "path"
    assert parameters(update)["update_mask"] == {
        "name": "update_mask",
        "in": "query",
        "schema": {"type": "string"},
        "description": parameters(update)["update_mask"]["description"],
    }
    assert "user_id" not in body_schema(update)["properties"]
    assert "email_address" in body_schema(update)["properties"]
    create = paths["/v1/users"]["post"]
    assert body_schema(create) == {"$ref": "#/components/schemas/clarion.v1.User"}
    assert set(parameters(create)) == {"user_id"}
    # GET: every field not in the path is a query parameter, well-known types as their JSON strings.
    stats = parameters(paths["/v1/deliveries:stats"]["get"])
    assert stats["start_time"]["schema"]["format"] == "date-time"
    assert stats["channel"]["schema"]["$ref"] == "#/components/schemas/clarion.v1.Channel"


def test_schemas_follow_the_proto3_json_mapping(document: dict[str, Any]) -> None:
    stats = schema(document, "clarion.v1.DeliveryStatsGroup")["properties"]
    assert stats["total"]["type"] == "string"  # int64
    assert stats["total"]["format"] == "int64"
    assert stats["success_rate"]["type"] == "number"
    assert stats["time_to_send_p50"]["pattern"] == "^-?[0-9]+(\\.[0-9]{1,9})?s$"  # Duration

    channel = schema(document, "clarion.v1.Channel")
    assert channel["type"] == "string"
    assert channel["enum"] == ["CHANNEL_UNSPECIFIED", "CHANNEL_EMAIL", "CHANNEL_PUSH", "CHANNEL_SMS", "CHANNEL_IN_APP"]

    user = schema(document, "clarion.v1.User")["properties"]
    # The transcoder prints the protos' field names (preserve_proto_field_names), not lowerCamelCase.
    assert "email_address" in user
    assert "emailAddress" not in user
    assert user["create_time"]["format"] == "date-time"
    assert user["create_time"]["readOnly"] is True  # OUTPUT_ONLY
    assert user["devices"]["items"] == {"$ref": "#/components/schemas/clarion.v1.Device"}

    template = schema(document, "clarion.v1.Template")["properties"]
    assert template["push_data"]["additionalProperties"] == {"type": "string"}  # map<string, string>
    assert template["localizations"]["additionalProperties"] == {
        "$ref": "#/components/schemas/clarion.v1.TemplateContent"
    }
    assert schema(document, "clarion.v1.Notification")["properties"]["message_data"]["type"] == "object"  # Struct


def test_required_fields_and_oneofs(document: dict[str, Any]) -> None:
    assert schema(document, "clarion.v1.Device")["required"] == ["token", "platform"]
    assert schema(document, "clarion.v1.SendNotificationRequest")["required"] == ["user_id", "template_key"]
    # A oneof: never both.
    result = schema(document, "clarion.v1.RenderTemplateResult")
    assert result["not"] == {"anyOf": [{"required": ["rendered", "error"]}]}
    assert result["properties"]["error"]["$ref"] == "#/components/schemas/google.rpc.Status"


def test_every_error_is_a_google_rpc_status(document: dict[str, Any]) -> None:
    status = schema(document, "google.rpc.Status")
    assert set(status["properties"]) == {"code", "message", "details"}
    assert status["properties"]["details"]["items"] == {"$ref": "#/components/schemas/google.protobuf.Any"}
    assert schema(document, "google.protobuf.Any")["required"] == ["@type"]
    responses = document["components"]["responses"]
    for name in ("Error", "Unauthenticated", "RateLimited"):
        assert responses[name]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/google.rpc.Status"
        }
    assert "Retry-After" in responses["RateLimited"]["headers"]

    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"]["default"] == {"$ref": "#/components/responses/Error"}, (method, path)
            assert operation["responses"]["429"] == {"$ref": "#/components/responses/RateLimited"}, (method, path)


def test_every_call_needs_a_key_but_health_and_this_document(document: dict[str, Any]) -> None:
    assert document["security"] == [{"api_key": []}]
    assert document["components"]["securitySchemes"]["api_key"]["scheme"] == "bearer"

    keyless = {
        path
        for path, item in document["paths"].items()
        for operation in item.values()
        if operation.get("security") == []
    }
    assert keyless == {"/v1/health", OPENAPI_PATH}
    assert "401" not in document["paths"]["/v1/health"]["get"]["responses"]
    assert document["paths"]["/v1/users"]["get"]["responses"]["401"] == {
        "$ref": "#/components/responses/Unauthenticated"
    }


def test_the_document_is_the_same_every_time() -> None:
    descriptor_set = load_descriptor_set(default_descriptor_set_path())

    assert render_openapi(descriptor_set) == render_openapi(descriptor_set)
    assert json.loads(render_openapi(descriptor_set, compact=True)) == json.loads(render_openapi(descriptor_set))
