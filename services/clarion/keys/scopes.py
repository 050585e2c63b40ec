"""What a key may do: the scopes, the scope each RPC needs, and the service keys Clarion's own workloads call each
other with (each holding only the scopes its calls need)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Scope(StrEnum):
    """What a key may do. `manage` includes the narrow user and template scopes; `admin` includes every scope."""

    SEND = "notifications:send"
    MANAGE = "manage"
    # The narrow scopes of Clarion's service keys: exactly the calls one service makes of another, so a leaked
    # service key can neither list users nor register a device of its own.
    USERS_GET = "users:get"
    TEMPLATES_RENDER = "templates:render"
    DEVICES_REMOVE = "devices:remove"
    # Reading (never changing) the notifications, dead letters and statistics of every project, not only the
    # key's own: for operators and support.
    READ_ALL_PROJECTS = "projects:read_all"
    # Reading, never changing: users and templates (shared by every project), rendering templates, and the
    # notifications, dead letters and statistics of the key's project. For people looking (the console, a support
    # engineer) and dashboards: it reads users' contact details and device tokens, as `manage` does.
    READ = "read"
    ADMIN = "admin"


# What holding a scope grants besides itself.
_INCLUDES: Mapping[Scope, frozenset[Scope]] = {
    Scope.MANAGE: frozenset({Scope.USERS_GET, Scope.TEMPLATES_RENDER, Scope.DEVICES_REMOVE}),
    Scope.ADMIN: frozenset(Scope),
}


def grants(held: frozenset[str], needed: Scope) -> bool:
    """Whether a key holding the scopes `held` may do what `needed` allows."""
    # A StrEnum hashes as its value, so the stored strings look the scopes up directly.
    return needed in held or any(needed in _INCLUDES.get(scope, ()) for scope in held)  # type: ignore[call-overload]


def broader(scope: Scope) -> list[Scope]:
    """The scopes that include `scope`, narrowest first (`users:get` → manage, admin)."""
    return [held for held in (Scope.MANAGE, Scope.ADMIN) if held != scope and scope in _INCLUDES[held]]


# The project of every key and notification made before projects existed, and of calls made with keys off.
DEFAULT_PROJECT = "default"

# Anyone may ask whether the server is up and what it serves: probes and grpcurl `list` carry no key.
OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
# Each RPC and the scope it needs. An RPC missing here needs `admin` (closed until someone decides), and a test
# fails for every RPC of the contracts that is not listed.
SERVICE_SCOPES: Mapping[str, Mapping[str, Scope]] = {
    "clarion.v1.NotificationService": {
        "SendNotification": Scope.SEND,
        "BatchSendNotifications": Scope.SEND,
        "GetNotification": Scope.SEND,
        "ListNotifications": Scope.SEND,
        "CancelNotification": Scope.SEND,
        "ListDeadLetters": Scope.SEND,
        "ReplayDeadLetters": Scope.SEND,
        "GetDeliveryStats": Scope.SEND,
    },
    "clarion.v1.UserService": {
        "CreateUser": Scope.MANAGE,
        "GetUser": Scope.USERS_GET,
        "BatchGetUsers": Scope.USERS_GET,
        "ListUsers": Scope.MANAGE,
        "UpdateUser": Scope.MANAGE,
        "DeleteUser": Scope.MANAGE,
        "AddDevice": Scope.MANAGE,
        "RemoveDevice": Scope.DEVICES_REMOVE,
    },
    "clarion.v1.InboxService": {
        "CreateUserToken": Scope.SEND,
        "ListInboxMessages": Scope.SEND,
        "GetUnreadCount": Scope.SEND,
        "MarkInboxMessages": Scope.SEND,
        "WatchInbox": Scope.SEND,
    },
    "clarion.v1.SuppressionService": {
        "ListSuppressions": Scope.SEND,
        "CreateSuppression": Scope.SEND,
        "DeleteSuppression": Scope.SEND,
    },
    "clarion.v1.TemplateService": {
        "CreateTemplate": Scope.MANAGE,
        "GetTemplate": Scope.MANAGE,
        "ListTemplates": Scope.MANAGE,
        "UpdateTemplate": Scope.MANAGE,
        "DeleteTemplate": Scope.MANAGE,
        "ListTemplateVersions": Scope.MANAGE,
        "RenderTemplate": Scope.TEMPLATES_RENDER,
        "BatchRenderTemplates": Scope.TEMPLATES_RENDER,
    },
}
# The methods any valid key may call, whatever its scopes (and no caller without one).
KEY_ONLY_METHODS = frozenset({"/clarion.v1.AccessService/GetCaller"})
METHOD_SCOPES: Mapping[str, Scope] = {
    f"/{service}/{method}": scope for service, methods in SERVICE_SCOPES.items() for method, scope in methods.items()
}


# The methods that read and never change anything: the `read` scope is enough for them, besides the scope each needs.
READ_METHODS = frozenset(
    f"/clarion.v1.{method}"
    for method in (
        "NotificationService/GetNotification",
        "NotificationService/ListNotifications",
        "NotificationService/ListDeadLetters",
        "NotificationService/GetDeliveryStats",
        "InboxService/ListInboxMessages",
        "InboxService/GetUnreadCount",
        "InboxService/WatchInbox",
        "SuppressionService/ListSuppressions",
        "UserService/GetUser",
        "UserService/BatchGetUsers",
        "UserService/ListUsers",
        "TemplateService/GetTemplate",
        "TemplateService/ListTemplates",
        "TemplateService/ListTemplateVersions",
        "TemplateService/RenderTemplate",
        "TemplateService/BatchRenderTemplates",
    )
)


# What a user token (clarion.keys.user_tokens) may call, for its own user only: that user's inbox.
USER_TOKEN_METHODS = frozenset(
    f"/clarion.v1.InboxService/{method}"
    for method in ("ListInboxMessages", "GetUnreadCount", "MarkInboxMessages", "WatchInbox")
)
# The method that makes user tokens: a token works only while the key that made it may still call it.
CREATE_USER_TOKEN = "/clarion.v1.InboxService/CreateUserToken"  # noqa: S105 - a method name


def permits(held: frozenset[str], method: str) -> bool:
    """Whether a key holding the scopes `held` may call `method` (a full gRPC method name)."""
    if method in KEY_ONLY_METHODS:
        return True
    scope = required_scope(method)
    if scope is None or grants(held, scope):
        return True
    return method in READ_METHODS and grants(held, Scope.READ)


def allowed_methods(held: frozenset[str]) -> list[str]:
    """Every Clarion method a key holding `held` may call, as `service/method` without the leading slash, sorted."""
    return sorted(method.lstrip("/") for method in {*METHOD_SCOPES, *KEY_ONLY_METHODS} if permits(held, method))


# Methods called without an API key, each authenticated by other means: the providers' signed webhooks.
OPEN_METHODS = frozenset({"/clarion.v1.ProviderEventService/ReceiveSendGridEvents"})


def required_scope(method: str) -> Scope | None:
    """The scope a full gRPC method name (`/clarion.v1.UserService/GetUser`) needs; None for open services. A
    method of KEY_ONLY_METHODS needs a key and no scope: `permits` says so, and this answers the narrowest, `read`."""
    service = method.split("/")[1] if method.count("/") == 2 else ""
    if service in OPEN_SERVICES or method in OPEN_METHODS:
        return None
    if method in KEY_ONLY_METHODS:
        return Scope.READ
    return METHOD_SCOPES.get(method, Scope.ADMIN)


# The workloads that call other Clarion services, and the scopes of their service keys: what their calls need and
# nothing more. NotificationService and the dispatcher read users and render templates; the push worker removes a
# device FCM says is gone. The email worker and the sweeper call no service and have no key.
SERVICE_KEY_SCOPES: Mapping[str, frozenset[Scope]] = {
    "notifications": frozenset({Scope.USERS_GET, Scope.TEMPLATES_RENDER}),
    "dispatcher": frozenset({Scope.USERS_GET, Scope.TEMPLATES_RENDER}),
    "push": frozenset({Scope.DEVICES_REMOVE}),
}
