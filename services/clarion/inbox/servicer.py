"""InboxService (clarion.v1.InboxService): a user's in-app messages, their states and counts, a live stream of
them, and the user tokens end users reach their own inbox with.

Who may see what: a user token (clarion.keys.user_tokens) opens exactly one user's inbox, in the project of the key
that made it; an API key opens any user's inbox in its project (every project's with `projects:read_all` for the
reads); with keys off every caller is trusted, as everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from grpc.aio import ServicerContext

from clarion.core.db import FastPath
from clarion.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from clarion.core.pagination import decode_keyset, encode_page_token, page_size, position_int
from clarion.core.server import ServiceRegistration, service_registration
from clarion.inbox import store
from clarion.inbox.hub import InboxHub
from clarion.keys.auth import Authenticator, caller_project, current_caller
from clarion.notifications.clients import ServiceClients
from clarion.v1 import inbox_pb2, inbox_pb2_grpc

Context = ServicerContext[Any, Any]

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_MARK_IDS = 100
DEFAULT_TOKEN_TTL_S = 3600
MIN_TOKEN_TTL_S, MAX_TOKEN_TTL_S = 60, 86_400
# A watcher reads at most this many messages at a time (a reconnect after a long absence pages through the rest).
WATCH_BATCH = 100
_CURSOR = re.compile(r"^[0-9]{1,18}$")
_USER_ID_MAX_CHARS = 63

_MARKS = {
    inbox_pb2.MARK_ACTION_READ: store.Mark.READ,
    inbox_pb2.MARK_ACTION_UNREAD: store.Mark.UNREAD,
    inbox_pb2.MARK_ACTION_SEEN: store.Mark.SEEN,
    inbox_pb2.MARK_ACTION_ARCHIVED: store.Mark.ARCHIVED,
    inbox_pb2.MARK_ACTION_UNARCHIVED: store.Mark.UNARCHIVED,
}
_READ_FILTERS = {
    inbox_pb2.READ_FILTER_UNSPECIFIED: None,
    inbox_pb2.READ_FILTER_UNREAD: False,
    inbox_pb2.READ_FILTER_READ: True,
}


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose inbox a call reaches, and the project whose messages it sees (None: every project)."""

    user_id: str
    project: str | None


def owner_of(user_id: str, *, writes: bool = False) -> Owner:
    """The inbox the current call may reach for the request's `user_id`: a user token's own user (PERMISSION_DENIED
    for another), or with a key the user asked for, in the key's project; a key that reads every project
    (`projects:read_all`) reads every project's messages, but `writes` only in its own."""
    principal = current_caller()
    if principal is not None and principal.user_id:
        if user_id and user_id != principal.user_id:
            raise PermissionDenied(
                "this user token opens another user's inbox", reason="USER_TOKEN_OTHER_USER", metadata={}
            )
        return Owner(principal.user_id, principal.project_id)
    if not user_id:
        raise InvalidArgument.for_field("user_id", "is required")
    if len(user_id) > _USER_ID_MAX_CHARS or "\x00" in user_id:
        raise InvalidArgument.for_field("user_id", f"must be at most {_USER_ID_MAX_CHARS} characters, no NUL")
    project = caller_project()
    return Owner(user_id, project.project_id if writes else project.readable)


def _cursor(text: str) -> int | None:
    if not text:
        return None
    if not _CURSOR.match(text):
        raise InvalidArgument.for_field("cursor", "must be a cursor from an InboxEvent or an InboxMessage")
    return int(text)


def message_to_proto(message: store.Message) -> inbox_pb2.InboxMessage:
    proto = inbox_pb2.InboxMessage(
        name=f"users/{message.user_id}/inboxMessages/{message.message_id}",
        message_id=str(message.message_id),
        user_id=message.user_id,
        notification_id=str(message.notification_id),
        title=message.title,
        body=message.body,
        action_url=message.action_url,
        data=message.data,
        cursor=str(message.seq),
    )
    proto.create_time.FromDatetime(message.created_at)
    for field, moment in (
        ("seen_time", message.seen_at),
        ("read_time", message.read_at),
        ("archive_time", message.archived_at),
    ):
        if moment is not None:
            getattr(proto, field).FromDatetime(moment)
    return proto


def _counts(user_id: str, counts: store.Counts) -> inbox_pb2.InboxCounts:
    return inbox_pb2.InboxCounts(
        user_id=user_id, unread_count=counts.unread, unseen_count=counts.unseen, total_count=counts.total
    )


class InboxServicer(inbox_pb2_grpc.InboxServiceServicer):
    def __init__(
        self,
        *,
        fast: FastPath,
        hub: InboxHub,
        authenticator: Authenticator | None,
        users: ServiceClients,
        poll_s: float = 30.0,
        heartbeat_s: float = 25.0,
    ) -> None:
        self._fast = fast
        self._hub = hub
        self._authenticator = authenticator
        # UserService, through the one client NotificationService uses (in process or over gRPC).
        self._users = users
        self._poll_s = poll_s
        # Below the edge's stream idle timeout (60 s): a quiet inbox's stream is not cut.
        self._heartbeat_s = heartbeat_s

    async def CreateUserToken(self, request: inbox_pb2.CreateUserTokenRequest, context: Context) -> inbox_pb2.UserToken:
        principal = current_caller()
        if self._authenticator is None or principal is None:
            raise FailedPrecondition(
                "user tokens need API keys: this server checks none (CLARION_AUTH_REQUIRED=false)",
                reason="USER_TOKENS_UNAVAILABLE",
            )
        owner = owner_of(request.user_id)
        ttl_s = DEFAULT_TOKEN_TTL_S
        if request.HasField("ttl"):
            ttl_s = request.ttl.seconds
            if not MIN_TOKEN_TTL_S <= ttl_s <= MAX_TOKEN_TTL_S or request.ttl.nanos:
                raise InvalidArgument.for_field("ttl", "must be whole seconds from 60s (1 minute) to 86400s (24 hours)")
        await self._users.get_user(owner.user_id)  # NOT_FOUND for a user that does not exist
        expires_at = int(time.time()) + ttl_s
        token = self._authenticator.mint_user_token(principal, owner.user_id, expires_at)
        answer = inbox_pb2.UserToken(token=token, user_id=owner.user_id)
        answer.expire_time.FromSeconds(expires_at)
        return answer

    async def ListInboxMessages(
        self, request: inbox_pb2.ListInboxMessagesRequest, context: Context
    ) -> inbox_pb2.ListInboxMessagesResponse:
        owner = owner_of(request.user_id)
        size = page_size(request.page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        if request.read_filter not in _READ_FILTERS:
            raise InvalidArgument.for_field("read_filter", "is not a ReadFilter value")
        filters = {"user": owner.user_id, "read": request.read_filter, "archived": request.archived}
        before = decode_keyset(request.page_token, filters, lambda position: position_int(position[0], high=2**63 - 1))
        async with self._fast.connection() as connection:
            messages = await store.page(
                connection,
                owner.user_id,
                owner.project,
                before_seq=before,
                read=_READ_FILTERS[request.read_filter],
                archived=request.archived,
                limit=size + 1,
            )
        response = inbox_pb2.ListInboxMessagesResponse(messages=[message_to_proto(m) for m in messages[:size]])
        if len(messages) > size:
            response.next_page_token = encode_page_token([messages[size - 1].seq], filters)
        return response

    async def GetUnreadCount(self, request: inbox_pb2.GetUnreadCountRequest, context: Context) -> inbox_pb2.InboxCounts:
        owner = owner_of(request.user_id)
        async with self._fast.connection() as connection:
            return _counts(owner.user_id, await store.counts(connection, owner.user_id, owner.project))

    async def MarkInboxMessages(
        self, request: inbox_pb2.MarkInboxMessagesRequest, context: Context
    ) -> inbox_pb2.MarkInboxMessagesResponse:
        owner = owner_of(request.user_id, writes=True)
        action = _MARKS.get(request.action)
        if action is None:
            raise InvalidArgument.for_field("action", "is required: READ, UNREAD, SEEN, ARCHIVED or UNARCHIVED")
        ids: list[uuid.UUID] | None = None
        if request.all:
            if request.message_ids:
                raise InvalidArgument.for_field("message_ids", "must be empty with `all`")
        else:
            if not request.message_ids:
                raise InvalidArgument.for_field("message_ids", "name 1 to 100 messages, or set `all`")
            if len(request.message_ids) > MAX_MARK_IDS:
                raise InvalidArgument.for_field("message_ids", f"must name at most {MAX_MARK_IDS} messages")
            ids = []
            for index, text in enumerate(request.message_ids):
                try:
                    ids.append(uuid.UUID(text))
                except ValueError:
                    raise InvalidArgument.for_field(f"message_ids[{index}]", "is not a message id") from None
        async with self._fast.connection() as connection:
            changed = await store.mark(connection, owner.user_id, owner.project, action, ids)
            counts = await store.counts(connection, owner.user_id, owner.project)
        return inbox_pb2.MarkInboxMessagesResponse(updated_count=changed, counts=_counts(owner.user_id, counts))

    async def WatchInbox(
        self, request: inbox_pb2.WatchInboxRequest, context: Context
    ) -> AsyncIterator[inbox_pb2.InboxEvent]:
        owner = owner_of(request.user_id)
        cursor = _cursor(request.cursor)
        # Watching starts before the first read: a message that commits in between wakes this watcher.
        async with self._hub.watch(owner.user_id) as wake:
            async with self._fast.connection() as connection:
                latest = await store.last_seq(connection, owner.user_id)
            if cursor is None:
                cursor = latest
            elif cursor > latest:
                # Not a cursor of this inbox: its user was deleted and made again, or the cursor was made up.
                raise InvalidArgument.for_field("cursor", "is past the end of this inbox: start again without one")
            sent_counts: store.Counts | None = None
            heartbeat_at = 0.0
            caller = current_caller()
            while not self._hub.closing.is_set():
                # A stream outlives the check made when it opened: its token may expire or its key be revoked.
                authenticator = self._authenticator
                if caller is not None and authenticator is not None and not await authenticator.still_valid(caller):
                    raise Unauthenticated(
                        "this stream's credentials expired or were revoked: reconnect with new ones",
                        reason="STREAM_CREDENTIALS_ENDED",
                    )
                wake.clear()
                async with self._fast.connection() as connection:
                    messages = await store.after(connection, owner.user_id, owner.project, cursor, limit=WATCH_BATCH)
                    counts = await store.counts(connection, owner.user_id, owner.project)
                for message in messages:
                    cursor = message.seq
                    yield inbox_pb2.InboxEvent(cursor=str(cursor), message=message_to_proto(message))
                now = time.monotonic()
                if counts != sent_counts or now >= heartbeat_at:
                    yield inbox_pb2.InboxEvent(cursor=str(cursor), counts=_counts(owner.user_id, counts))
                    sent_counts, heartbeat_at = counts, now + self._heartbeat_s
                if len(messages) == WATCH_BATCH:
                    continue
                wait_s = min(self._poll_s, max(heartbeat_at - time.monotonic(), 0.0))
                if caller is not None and caller.expires_at is not None:
                    wait_s = min(wait_s, max(caller.expires_at - time.time(), 0.0))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await wake.wait()


def registration(
    *, fast: FastPath, authenticator: Authenticator | None, users: ServiceClients, max_watchers: int
) -> ServiceRegistration:
    """How to add InboxService to a server; its `stop` ends every WatchInbox stream (clients resume elsewhere)."""
    hub = InboxHub(fast.dsn, max_watchers=max_watchers)
    registration = service_registration(
        InboxServicer(fast=fast, hub=hub, authenticator=authenticator, users=users),
        inbox_pb2_grpc.add_InboxServiceServicer_to_server,
        inbox_pb2.DESCRIPTOR.services_by_name["InboxService"],
    )
    return ServiceRegistration(registration.name, registration.add_to_server, registration.servicer, stop=hub.close)
