"""InboxService on a real server and PostgreSQL: user tokens open exactly one user's inbox; lists page and filter;
marks change states and counts; WatchInbox streams arrivals and count changes live, and a client that reconnects
with its cursor misses nothing and gets nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from clarion.inbox import store
from clarion.inbox.servicer import InboxServicer
from clarion.keys.auth import Principal
from clarion.keys.manage import revoke_key
from clarion.keys.scopes import Scope
from clarion.v1 import inbox_pb2, inbox_pb2_grpc, users_pb2, users_pb2_grpc
from tests.integration.auth.conftest import channel_with
from tests.integration.conftest import RunningClarion
from tests.integration.users.test_user_service import rpc_error, violations

pytestmark = pytest.mark.integration


async def a_user(clarion: RunningClarion) -> str:
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user={}), timeout=10)
    return str(user.user_id)


async def put(clarion: RunningClarion, user_id: str, title: str, *, project: str = "default") -> uuid.UUID:
    """A message in the user's inbox, as the in-app worker puts one."""
    message_id = uuid.uuid4()
    message = store.NewMessage(message_id, uuid.uuid4(), project, user_id, title, f"body of {title}", "", {"k": title})
    async with clarion.resources.fast.connection() as connection:
        assert await store.put(connection, message)
    return message_id


def inbox(channel: grpc.aio.Channel) -> Any:
    """The stub on an aio channel (the generated types describe the blocking one)."""
    return inbox_pb2_grpc.InboxServiceStub(channel)


async def user_token(clarion: RunningClarion, user_id: str, **fields: Any) -> str:
    made = await inbox(clarion.channel).CreateUserToken(
        inbox_pb2.CreateUserTokenRequest(user_id=user_id, **fields), timeout=10
    )
    assert made.user_id == user_id
    assert made.token.startswith("clu_")
    return str(made.token)


@contextlib.asynccontextmanager
async def as_user(clarion: RunningClarion, token: str) -> AsyncIterator[Any]:
    async with channel_with(clarion.address, token) as channel:
        yield inbox(channel)


async def test_a_user_token_opens_its_users_inbox_and_nothing_else(clarion: RunningClarion) -> None:
    ada, bob = await a_user(clarion), await a_user(clarion)
    await put(clarion, ada, "for Ada")
    await put(clarion, bob, "for Bob")
    token = await user_token(clarion, ada)
    async with as_user(clarion, token) as mine:
        listed = await mine.ListInboxMessages(inbox_pb2.ListInboxMessagesRequest(user_id=ada), timeout=10)
        assert [m.title for m in listed.messages] == ["for Ada"]
        # The user id may be left out: the token says whose inbox it is.
        counts = await mine.GetUnreadCount(inbox_pb2.GetUnreadCountRequest(), timeout=10)
        assert (counts.user_id, counts.unread_count) == (ada, 1)

        code, status = await rpc_error(mine.ListInboxMessages(inbox_pb2.ListInboxMessagesRequest(user_id=bob)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "another user" in status.message
        marked = mine.MarkInboxMessages(
            inbox_pb2.MarkInboxMessagesRequest(user_id=bob, action=inbox_pb2.MARK_ACTION_READ, all=True)
        )
        assert (await rpc_error(marked))[0] == grpc.StatusCode.PERMISSION_DENIED
        # Nothing but the inbox: not even a token for itself, nor a user's record.
        code, status = await rpc_error(mine.CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id=ada)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "only its own inbox" in status.message
    async with channel_with(clarion.address, token) as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        assert (await rpc_error(users.GetUser(users_pb2.GetUserRequest(user_id=ada))))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    # Bob's inbox is untouched.
    async with clarion.resources.fast.connection() as connection:
        assert (await store.counts(connection, bob, None)).unread == 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature
        lambda token: "clu_" + token[5:],  # payload
        lambda token: token + "x" * 2000,  # far too long
        lambda token: "clu_not-a-token",
    ],
)
async def test_a_token_that_is_not_one_we_made_is_refused(clarion: RunningClarion, tamper: Any) -> None:
    ada = await a_user(clarion)
    token = tamper(await user_token(clarion, ada))
    async with as_user(clarion, token) as mine:
        code, status = await rpc_error(mine.GetUnreadCount(inbox_pb2.GetUnreadCountRequest(user_id=ada)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert status.message == "the user token is not valid"


async def test_an_expired_token_and_one_whose_key_is_revoked_are_refused(start_clarion: Any) -> None:
    clarion: RunningClarion = await start_clarion(api_key_cache_ttl_s=0.001)
    ada = await a_user(clarion)
    authenticator = clarion.resources.authenticator
    assert authenticator is not None
    sender_key = await clarion.make_key(Scope.SEND, name="backend")
    key_id = sender_key.split("_")[1]
    sender = Principal(key_id, "backend", frozenset({Scope.SEND.value}))
    expired = authenticator.mint_user_token(sender, ada, int(time.time()) - 1)
    async with as_user(clarion, expired) as mine:
        code, status = await rpc_error(mine.GetUnreadCount(inbox_pb2.GetUnreadCountRequest(user_id=ada)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in status.message

    async with channel_with(clarion.address, sender_key) as channel:
        made = await inbox(channel).CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id=ada), timeout=10)
    async with as_user(clarion, made.token) as mine:
        assert (await mine.GetUnreadCount(inbox_pb2.GetUnreadCountRequest(), timeout=10)).user_id == ada
        await revoke_key(clarion.resources.sessions, key_id)
        code, status = await rpc_error(mine.GetUnreadCount(inbox_pb2.GetUnreadCountRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in status.message


async def test_create_user_token_checks_its_request(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    code, status = await rpc_error(
        inbox(clarion.channel).CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id="nobody-here"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    for seconds in (59, 86_401):
        request = inbox_pb2.CreateUserTokenRequest(user_id=ada)
        request.ttl.seconds = seconds
        code, status = await rpc_error(inbox(clarion.channel).CreateUserToken(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "ttl" in violations(status)
    request = inbox_pb2.CreateUserTokenRequest(user_id=ada)
    request.ttl.seconds = 120
    made = await inbox(clarion.channel).CreateUserToken(request, timeout=10)
    assert 100 <= made.expire_time.seconds - time.time() <= 121
    # A key that can only read may not make tokens.
    async with channel_with(clarion.address, await clarion.make_key(Scope.READ)) as channel:
        code, _ = await rpc_error(inbox(channel).CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id=ada)))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_lists_page_newest_first_and_filter_by_state(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    ids = [await put(clarion, ada, f"m{i}") for i in range(5)]
    service = inbox(clarion.channel)
    titles: list[str] = []
    token = ""
    while True:
        page = await service.ListInboxMessages(
            inbox_pb2.ListInboxMessagesRequest(user_id=ada, page_size=2, page_token=token), timeout=10
        )
        titles += [m.title for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert titles == ["m4", "m3", "m2", "m1", "m0"]

    marked = await service.MarkInboxMessages(
        inbox_pb2.MarkInboxMessagesRequest(
            user_id=ada, action=inbox_pb2.MARK_ACTION_READ, message_ids=[str(ids[0]), str(ids[1]), str(uuid.uuid4())]
        ),
        timeout=10,
    )
    assert marked.updated_count == 2
    assert (marked.counts.unread_count, marked.counts.unseen_count, marked.counts.total_count) == (3, 3, 5)
    unread = await service.ListInboxMessages(
        inbox_pb2.ListInboxMessagesRequest(user_id=ada, read_filter=inbox_pb2.READ_FILTER_UNREAD), timeout=10
    )
    assert [m.title for m in unread.messages] == ["m4", "m3", "m2"]
    read = await service.ListInboxMessages(
        inbox_pb2.ListInboxMessagesRequest(user_id=ada, read_filter=inbox_pb2.READ_FILTER_READ), timeout=10
    )
    assert [m.title for m in read.messages] == ["m1", "m0"]
    assert all(m.HasField("read_time") and m.HasField("seen_time") for m in read.messages)
    # Marking again changes nothing.
    again = await service.MarkInboxMessages(
        inbox_pb2.MarkInboxMessagesRequest(user_id=ada, action=inbox_pb2.MARK_ACTION_READ, message_ids=[str(ids[0])]),
        timeout=10,
    )
    assert again.updated_count == 0

    archived = await service.MarkInboxMessages(
        inbox_pb2.MarkInboxMessagesRequest(user_id=ada, action=inbox_pb2.MARK_ACTION_ARCHIVED, all=True), timeout=10
    )
    assert archived.updated_count == 5
    assert archived.counts.total_count == 0
    assert not (await service.ListInboxMessages(inbox_pb2.ListInboxMessagesRequest(user_id=ada), timeout=10)).messages
    shelf = await service.ListInboxMessages(inbox_pb2.ListInboxMessagesRequest(user_id=ada, archived=True), timeout=10)
    assert len(shelf.messages) == 5


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"action": inbox_pb2.MARK_ACTION_UNSPECIFIED, "all": True}, "action"),
        ({"action": inbox_pb2.MARK_ACTION_READ}, "message_ids"),
        ({"action": inbox_pb2.MARK_ACTION_READ, "all": True, "message_ids": [str(uuid.uuid4())]}, "message_ids"),
        ({"action": inbox_pb2.MARK_ACTION_READ, "message_ids": ["nope"]}, "message_ids[0]"),
        ({"action": inbox_pb2.MARK_ACTION_READ, "message_ids": [str(uuid.uuid4())] * 101}, "message_ids"),
        ({"user_id": "", "action": inbox_pb2.MARK_ACTION_READ, "all": True}, "user_id"),
    ],
)
async def test_a_bad_mark_names_its_field(clarion: RunningClarion, fields: dict[str, Any], field: str) -> None:
    request = inbox_pb2.MarkInboxMessagesRequest(**{"user_id": "someone", **fields})
    code, status = await rpc_error(inbox(clarion.channel).MarkInboxMessages(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status)


async def stream_error(call: Any) -> tuple[grpc.StatusCode, Any]:
    """Read a stream that must fail at once; its code and google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return caught.value.code(), await rpc_status.aio.from_call(call)


async def _events(stream: Any, count: int, *, timeout_s: float = 15) -> list[inbox_pb2.InboxEvent]:
    events: list[inbox_pb2.InboxEvent] = []
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            events.append(await stream.read())
    return events


async def test_watch_streams_arrivals_and_counts_and_resumes_without_gap_or_duplicate(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    await put(clarion, ada, "before the watch")
    token = await user_token(clarion, ada)
    async with as_user(clarion, token) as mine:
        stream = mine.WatchInbox(inbox_pb2.WatchInboxRequest(), timeout=60)
        [start] = await _events(stream, 1)
        # Starting without a cursor starts now: the counts, and no earlier message.
        assert start.WhichOneof("event") == "counts"
        assert start.counts.unread_count == 1
        for i in range(3):
            await put(clarion, ada, f"live {i}")
        seen: list[inbox_pb2.InboxEvent] = []
        while len([e for e in seen if e.WhichOneof("event") == "message"]) < 3:
            seen += await _events(stream, 1)
        arrived = [e for e in seen if e.WhichOneof("event") == "message"]
        assert [e.message.title for e in arrived] == ["live 0", "live 1", "live 2"]
        assert [int(e.cursor) for e in arrived] == sorted(int(e.cursor) for e in arrived)
        assert all(e.cursor == e.message.cursor for e in arrived)
        stream.cancel()
        last = arrived[-1].cursor

        # Away: two more arrive. Back with the last cursor: exactly those two, in order, then the counts.
        await put(clarion, ada, "while away 0")
        await put(clarion, ada, "while away 1")
        resumed = mine.WatchInbox(inbox_pb2.WatchInboxRequest(cursor=last), timeout=60)
        first, second, counts = await _events(resumed, 3)
        assert [first.message.title, second.message.title] == ["while away 0", "while away 1"]
        assert counts.counts.unread_count == 6

        # Marked read elsewhere: the stream says the count dropped.
        await mine.MarkInboxMessages(
            inbox_pb2.MarkInboxMessagesRequest(
                action=inbox_pb2.MARK_ACTION_READ, message_ids=[first.message.message_id]
            ),
            timeout=10,
        )
        [dropped] = await _events(resumed, 1)
        assert dropped.counts.unread_count == 5
        assert dropped.cursor == second.cursor
        resumed.cancel()

        code, status = await stream_error(mine.WatchInbox(inbox_pb2.WatchInboxRequest(cursor="abc")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "cursor" in violations(status)


async def test_an_api_key_reads_only_its_projects_messages(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    async with clarion.resources.fast.connection() as connection:
        await connection.execute("INSERT INTO projects (id, name) VALUES ('p2', 'Two') ON CONFLICT DO NOTHING")
    await put(clarion, ada, "default's")
    await put(clarion, ada, "p2's", project="p2")
    async with channel_with(clarion.address, await clarion.make_key(Scope.SEND, project="p2")) as channel:
        listed = await inbox(channel).ListInboxMessages(inbox_pb2.ListInboxMessagesRequest(user_id=ada), timeout=10)
        assert [m.title for m in listed.messages] == ["p2's"]
        token = (await inbox(channel).CreateUserToken(inbox_pb2.CreateUserTokenRequest(user_id=ada), timeout=10)).token
    async with as_user(clarion, token) as mine:
        counts = await mine.GetUnreadCount(inbox_pb2.GetUnreadCountRequest(), timeout=10)
        assert counts.total_count == 1


async def test_watchers_beyond_the_limit_are_told_to_retry(start_clarion: Any) -> None:
    clarion: RunningClarion = await start_clarion(inbox_max_watchers=1)
    ada = await a_user(clarion)
    service = inbox(clarion.channel)
    first = service.WatchInbox(inbox_pb2.WatchInboxRequest(user_id=ada), timeout=30)
    await _events(first, 1)
    code, status = await stream_error(service.WatchInbox(inbox_pb2.WatchInboxRequest(user_id=ada)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.message.startswith("this server already streams 1 inboxes")
    first.cancel()


async def test_stopping_the_service_ends_its_streams(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    stream = inbox(clarion.channel).WatchInbox(inbox_pb2.WatchInboxRequest(user_id=ada), timeout=30)
    await _events(stream, 1)
    registration = clarion.registrations["inbox"]
    assert isinstance(registration.servicer, InboxServicer)
    assert registration.stop is not None
    await registration.stop()
    async with asyncio.timeout(10):
        assert await stream.read() == grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK


async def _end_of(stream: Any) -> grpc.aio.AioRpcError:
    """Read a stream until it fails (within 15 s); its error."""
    async with asyncio.timeout(15):
        while True:
            try:
                await stream.read()
            except grpc.aio.AioRpcError as error:
                return error


async def test_a_stream_ends_when_its_token_expires_or_its_key_is_revoked(start_clarion: Any) -> None:
    clarion: RunningClarion = await start_clarion(api_key_cache_ttl_s=0.001)
    ada = await a_user(clarion)
    authenticator = clarion.resources.authenticator
    assert authenticator is not None
    sender_key = await clarion.make_key(Scope.SEND, name="backend")
    key_id = sender_key.split("_")[1]
    sender = Principal(key_id, "backend", frozenset({Scope.SEND.value}))

    short = authenticator.mint_user_token(sender, ada, int(time.time()) + 2)
    async with as_user(clarion, short) as mine:
        stream = mine.WatchInbox(inbox_pb2.WatchInboxRequest(), timeout=30)
        await _events(stream, 1)
        ended = await _end_of(stream)
        assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "expired or were revoked" in str(ended.details())

    token = authenticator.mint_user_token(sender, ada, int(time.time()) + 600)
    async with as_user(clarion, token) as mine:
        stream = mine.WatchInbox(inbox_pb2.WatchInboxRequest(), timeout=30)
        await _events(stream, 1)
        await revoke_key(clarion.resources.sessions, key_id)
        await put(clarion, ada, "wakes the stream")  # the next look ends it
        assert (await _end_of(stream)).code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_that_reads_every_project_marks_only_its_own(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    async with clarion.resources.fast.connection() as connection:
        await connection.execute("INSERT INTO projects (id, name) VALUES ('p4', 'Four') ON CONFLICT DO NOTHING")
    await put(clarion, ada, "default's")
    key = await clarion.make_key(Scope.SEND, Scope.READ_ALL_PROJECTS, project="p4")
    async with channel_with(clarion.address, key) as channel:
        listed = await inbox(channel).ListInboxMessages(inbox_pb2.ListInboxMessagesRequest(user_id=ada), timeout=10)
        assert [m.title for m in listed.messages] == ["default's"]
        marked = await inbox(channel).MarkInboxMessages(
            inbox_pb2.MarkInboxMessagesRequest(user_id=ada, action=inbox_pb2.MARK_ACTION_ARCHIVED, all=True),
            timeout=10,
        )
    assert marked.updated_count == 0
    async with clarion.resources.fast.connection() as connection:
        assert (await store.counts(connection, ada, "default")).total == 1


async def test_one_user_cannot_hold_every_stream_and_a_cursor_past_the_end_is_refused(clarion: RunningClarion) -> None:
    ada = await a_user(clarion)
    service = inbox(clarion.channel)
    streams = [service.WatchInbox(inbox_pb2.WatchInboxRequest(user_id=ada), timeout=30) for _ in range(10)]
    for stream in streams:
        await _events(stream, 1)
    code, status = await stream_error(service.WatchInbox(inbox_pb2.WatchInboxRequest(user_id=ada)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already has 10 inbox streams" in status.message
    # Another user still gets one.
    bob = await a_user(clarion)
    other = service.WatchInbox(inbox_pb2.WatchInboxRequest(user_id=bob), timeout=30)
    await _events(other, 1)
    for stream in (*streams, other):
        stream.cancel()

    await put(clarion, bob, "one")
    code, status = await stream_error(service.WatchInbox(inbox_pb2.WatchInboxRequest(user_id=bob, cursor="5")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "past the end" in violations(status)["cursor"]
