"""The Python client package as a caller uses it, run by tests/clients/test_python_client.py in a virtualenv that
holds `clients/python` and nothing of the server. Arguments: the gRPC address, Envoy's address; CLARION_API_KEY in
the environment. Prints one JSON line per check."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from clarion.v1 import access_pb2, common_pb2, inbox_pb2, notifications_pb2, templates_pb2, users_pb2
from clarion_client import AsyncClient, Client, InvalidArgument, NotFound, Unauthenticated

KEY = os.environ["CLARION_API_KEY"]
DATA = {"app_name": "MyApp", "new_updates": 10, "digest_link": "https://example.com/digest"}


def say(**record: Any) -> None:
    print(json.dumps(record), flush=True)  # noqa: T201 - the test reads these lines


def template_request(key: str) -> templates_pb2.CreateTemplateRequest:
    return templates_pb2.CreateTemplateRequest(
        template=templates_pb2.Template(
            template_key=key,
            subject="Your Weekly {app_name} Digest: {new_updates} new items!",
            body="Check out your latest activity. See summary: {digest_link}",
        )
    )


def sync_checks(target: str, via: str) -> None:
    with Client(target, api_key=KEY) as clarion:
        caller = clarion.access.GetCaller(access_pb2.GetCallerRequest())
        user = clarion.users.CreateUser(
            users_pb2.CreateUserRequest(user=users_pb2.User(email_address=f"{uuid.uuid4().hex}@example.com"))
        )
        key = f"PY_{uuid.uuid4().hex[:12].upper()}"
        clarion.templates.CreateTemplate(template_request(key))
        first = clarion.send_notification(
            user.user_id, key, DATA, priority=notifications_pb2.PRIORITY_CRITICAL, idempotency_key=f"py-{key}"
        )
        again = clarion.send_notification(
            user.user_id, key, DATA, priority=notifications_pb2.PRIORITY_CRITICAL, idempotency_key=f"py-{key}"
        )
        stored = clarion.notifications.GetNotification(
            notifications_pb2.GetNotificationRequest(notification_id=first.notification.notification_id)
        )
        try:
            null_name = {**DATA, "app_name": None}
            clarion.send_notification(user.user_id, key, null_name, channels=[common_pb2.CHANNEL_EMAIL])
        except InvalidArgument as error:
            invalid = {"reason": error.reason, "fields": [v.field for v in error.field_violations]}
        try:
            clarion.users.GetUser(users_pb2.GetUserRequest(user_id=f"nobody-{uuid.uuid4().hex[:8]}"))
        except NotFound as error:
            missing = error.code().name
        token = clarion.inbox.CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id=user.user_id)).token
    # An end user's app: only the user token, a live inbox stream and a count.
    with Client(target, api_key=token) as app:
        watch = app.inbox.WatchInbox(inbox_pb2.WatchInboxRequest(), timeout=30)
        opened: inbox_pb2.InboxEvent = next(watch)
        watch.cancel()
        counts = app.inbox.GetUnreadCount(inbox_pb2.GetUnreadCountRequest())
    with Client(target) as anonymous:
        try:
            anonymous.users.ListUsers(users_pb2.ListUsersRequest(page_size=1))
        except Unauthenticated as error:
            refused = error.reason
    say(
        inbox={"first": opened.WhichOneof("event"), "own": counts.user_id == user.user_id},
        via=via,
        notification_id=first.notification.notification_id,
        user_id=user.user_id,
        template_key=key,
        replayed=again.replayed,
        same_id=again.notification.notification_id == first.notification.notification_id,
        stored_status=notifications_pb2.NotificationStatus.Name(stored.status),
        invalid=invalid,
        missing=missing,
        without_key=refused,
        scopes=list(caller.scopes),
    )


async def async_checks(target: str, via: str) -> None:
    async with AsyncClient(target, api_key=KEY) as clarion:
        user = await clarion.users.CreateUser(
            users_pb2.CreateUserRequest(user=users_pb2.User(email_address=f"{uuid.uuid4().hex}@example.com"))
        )
        key = f"PYA_{uuid.uuid4().hex[:12].upper()}"
        await clarion.templates.CreateTemplate(template_request(key))
        sent = await clarion.send_notification(user.user_id, key, DATA, priority=notifications_pb2.PRIORITY_CRITICAL)
        try:
            nameless = templates_pb2.CreateTemplateRequest(template=templates_pb2.Template())
            await clarion.templates.CreateTemplate(nameless)
        except InvalidArgument as error:
            invalid = {"reason": error.reason, "fields": [v.field for v in error.field_violations]}
        made = await clarion.inbox.CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id=user.user_id))
    async with AsyncClient(target, api_key=made.token) as app:
        watch = app.inbox.WatchInbox(inbox_pb2.WatchInboxRequest(), timeout=30)
        opened = await watch.read()
        assert isinstance(opened, inbox_pb2.InboxEvent), "the stream ended"
        watch.cancel()
        counts = await app.inbox.GetUnreadCount(inbox_pb2.GetUnreadCountRequest())
    async with AsyncClient(target) as anonymous:
        try:
            await anonymous.users.ListUsers(users_pb2.ListUsersRequest(page_size=1))
        except Unauthenticated as error:
            refused = error.reason
    say(
        via=via,
        notification_id=sent.notification.notification_id,
        user_id=user.user_id,
        template_key=key,
        # The client always sends an idempotency key, so gRPC's retries of this send are safe.
        request_id=sent.notification.request_id,
        inbox={"first": opened.WhichOneof("event"), "own": counts.user_id == user.user_id},
        invalid=invalid,
        without_key=refused,
    )


def main() -> None:
    grpc_address, envoy_address = sys.argv[1], sys.argv[2]
    for target, via in ((grpc_address, "direct"), (envoy_address, "envoy")):
        sync_checks(target, f"sync-{via}")
        asyncio.run(async_checks(target, f"async-{via}"))


if __name__ == "__main__":
    main()
