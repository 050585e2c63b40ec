"""Every statement on the inbox's tables (inbox_messages, inbox_sequences), on the plain asyncpg pool.

A user's messages are numbered by inbox_sequences, one row per user: taking the next number locks that row until
the message commits, so a user's messages commit in the order of their numbers and "every message after n" never
skips one that commits late. Each change commits with a NOTIFY on CHANGES carrying the user's id, which wakes the
user's watchers (clarion.inbox.hub). A message's states are times (seen, read, archived), none of them indexed, so
marking one can be a HOT update.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# The NOTIFY channel of inbox changes; the payload is the user's id.
CHANGES = "clarion_inbox"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What the in-app channel puts in an inbox: a delivery's rendered content."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    project_id: str  # the notification's
    user_id: str
    title: str
    body: str
    action_url: str
    data: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Message:
    """A stored inbox message."""

    message_id: uuid.UUID
    user_id: str
    seq: int
    notification_id: uuid.UUID
    title: str
    body: str
    action_url: str
    data: dict[str, str]
    created_at: datetime
    seen_at: datetime | None
    read_at: datetime | None
    archived_at: datetime | None


@dataclass(frozen=True, slots=True)
class Counts:
    """A user's inbox counts; archived messages are in none."""

    unread: int
    unseen: int
    total: int


class Mark(enum.Enum):
    """What MarkInboxMessages does, as the assignments of its UPDATE and the rows it can change."""

    READ = ("read_at = coalesce(read_at, now()), seen_at = coalesce(seen_at, now())", "read_at IS NULL")
    UNREAD = ("read_at = NULL", "read_at IS NOT NULL")
    SEEN = ("seen_at = coalesce(seen_at, now())", "seen_at IS NULL")
    ARCHIVED = ("archived_at = now()", "archived_at IS NULL")
    UNARCHIVED = ("archived_at = NULL", "archived_at IS NOT NULL")

    @property
    def assignments(self) -> str:
        return self.value[0]

    @property
    def changes(self) -> str:
        return self.value[1]


_COLUMNS = "id, user_id, seq, notification_id, title, body, action_url, data, created_at, seen_at, read_at, archived_at"


def _message(row: asyncpg.Record) -> Message:
    data = row["data"]
    return Message(
        message_id=row["id"],
        user_id=row["user_id"],
        seq=row["seq"],
        notification_id=row["notification_id"],
        title=row["title"],
        body=row["body"],
        action_url=row["action_url"],
        data=json.loads(data) if isinstance(data, str) else dict(data),
        created_at=row["created_at"],
        seen_at=row["seen_at"],
        read_at=row["read_at"],
        archived_at=row["archived_at"],
    )


class _AlreadyThere(Exception):
    """Rolls back put's transaction (and so its sequence number) when the message is in the inbox already."""


async def put(connection: asyncpg.Connection, message: NewMessage) -> bool:
    """Put a delivery's message in its user's inbox, in its notification's project, and wake the user's
    watchers. False when it is there already (a redelivered task): nothing changes. The user must exist (a user
    deleted meanwhile raises ForeignKeyViolationError)."""
    try:
        async with connection.transaction():
            seq = await connection.fetchval(
                """
                INSERT INTO inbox_sequences (user_id, last_seq) VALUES ($1, 1)
                ON CONFLICT (user_id) DO UPDATE SET last_seq = inbox_sequences.last_seq + 1
                RETURNING last_seq
                """,
                message.user_id,
            )
            inserted = await connection.fetchval(
                """
                INSERT INTO inbox_messages
                    (id, user_id, seq, project_id, notification_id, title, body, action_url, data)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
                ON CONFLICT (id) DO NOTHING
                RETURNING true
                """,
                message.delivery_id,
                message.user_id,
                seq,
                message.project_id,
                message.notification_id,
                message.title,
                message.body,
                message.action_url,
                json.dumps(dict(message.data)),
            )
            if not inserted:
                raise _AlreadyThere
            await connection.execute("SELECT pg_notify($1, $2)", CHANGES, message.user_id)
    except _AlreadyThere:
        return False
    return True


def _project_filter(projects: str | None, first: int) -> tuple[str, list[Any]]:
    return ("", []) if projects is None else (f" AND project_id = ${first}", [projects])


async def last_seq(connection: asyncpg.Connection, user_id: str) -> int:
    """The user's latest sequence number; 0 before their first message."""
    value = await connection.fetchval("SELECT last_seq FROM inbox_sequences WHERE user_id = $1", user_id)
    return int(value or 0)


async def after(
    connection: asyncpg.Connection, user_id: str, project: str | None, seq: int, *, limit: int
) -> list[Message]:
    """The user's messages numbered after `seq`, oldest first, archived or not (a watcher sees every arrival);
    only project `project`'s unless None."""
    where, args = _project_filter(project, 4)
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM inbox_messages WHERE user_id = $1 AND seq > $2{where} ORDER BY seq LIMIT $3",  # noqa: S608 - fixed fragments, values as parameters
        user_id,
        seq,
        limit,
        *args,
    )
    return [_message(row) for row in rows]


async def page(
    connection: asyncpg.Connection,
    user_id: str,
    project: str | None,
    *,
    before_seq: int | None,
    read: bool | None,
    archived: bool,
    limit: int,
) -> list[Message]:
    """A page of the user's messages, newest first: before `before_seq` (the last one of the previous page), read
    or unread or both (None), archived or in the inbox."""
    conditions = ["user_id = $1", "archived_at IS NOT NULL" if archived else "archived_at IS NULL"]
    args: list[Any] = [user_id, limit]
    if read is not None:
        conditions.append("read_at IS NOT NULL" if read else "read_at IS NULL")
    if before_seq is not None:
        args.append(before_seq)
        conditions.append(f"seq < ${len(args)}")
    if project is not None:
        args.append(project)
        conditions.append(f"project_id = ${len(args)}")
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM inbox_messages WHERE {' AND '.join(conditions)} ORDER BY seq DESC LIMIT $2",  # noqa: S608 - fixed fragments, values as parameters
        *args,
    )
    return [_message(row) for row in rows]


async def counts(connection: asyncpg.Connection, user_id: str, project: str | None) -> Counts:
    """The user's counts (of project `project` unless None)."""
    where, args = _project_filter(project, 2)
    row = await connection.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE read_at IS NULL) AS unread,
               count(*) FILTER (WHERE read_at IS NULL AND seen_at IS NULL) AS unseen,
               count(*) AS total
        FROM inbox_messages WHERE user_id = $1 AND archived_at IS NULL{where}
        """,  # noqa: S608 - fixed fragments, values as parameters
        user_id,
        *args,
    )
    return Counts(unread=row["unread"], unseen=row["unseen"], total=row["total"])


async def mark(
    connection: asyncpg.Connection,
    user_id: str,
    project: str | None,
    action: Mark,
    message_ids: Sequence[uuid.UUID] | None,
) -> int:
    """Apply `action` to the user's messages named (all of them for None; READ, UNREAD and SEEN only to those in
    the inbox, not archived), and wake the user's watchers when any changed. How many changed."""
    conditions = ["user_id = $1", action.changes]
    args: list[Any] = [user_id]
    if action not in (Mark.ARCHIVED, Mark.UNARCHIVED) and message_ids is None:
        conditions.append("archived_at IS NULL")
    if message_ids is not None:
        args.append(list(message_ids))
        conditions.append(f"id = ANY(${len(args)}::uuid[])")
    if project is not None:
        args.append(project)
        conditions.append(f"project_id = ${len(args)}")
    async with connection.transaction():
        status = await connection.execute(
            f"UPDATE inbox_messages SET {action.assignments} WHERE {' AND '.join(conditions)}",  # noqa: S608 - fixed fragments, values as parameters
            *args,
        )
        changed = int(status.split()[-1])
        if changed:
            await connection.execute("SELECT pg_notify($1, $2)", CHANGES, user_id)
    return changed
