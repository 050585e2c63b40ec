"""UserService's queries, on a session the caller owns (one transaction per RPC)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import utcnow, violated_constraint
from clarion.core.errors import AlreadyExists, NotFound
from clarion.users.models import DeviceRow, UserRow


def user_not_found(user_id: str) -> NotFound:
    """The one NOT_FOUND every RPC gives for a missing user."""
    return NotFound(f"user {user_id!r} not found", reason="USER_NOT_FOUND", metadata={"user_id": user_id})


def _conflict(error: IntegrityError, user_id: str) -> AlreadyExists:
    if violated_constraint(error) == "uq_users_email_lower":
        return AlreadyExists(
            "another user already has this email_address", reason="EMAIL_ALREADY_EXISTS", metadata={"user_id": user_id}
        )
    return AlreadyExists(
        f"user {user_id!r} already exists", reason="USER_ALREADY_EXISTS", metadata={"user_id": user_id}
    )


class UserRepository:
    """Users and their devices in PostgreSQL."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, row: UserRow) -> UserRow:
        """Insert a user; ALREADY_EXISTS when the id or the email address is taken."""
        user_id = row.id  # read now: a failed flush expires the row
        self._session.add(row)
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise _conflict(exc, user_id) from None
        return row

    async def get(self, user_id: str, *, for_update: bool = False) -> UserRow:
        """The user with their devices, or NOT_FOUND."""
        query = select(UserRow).where(UserRow.id == user_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).scalar_one_or_none()
        if row is None:
            raise user_not_found(user_id)
        return row

    async def get_many(self, user_ids: list[str]) -> dict[str, UserRow]:
        """The users among `user_ids` that exist, with their devices, by id."""
        rows = (await self._session.execute(select(UserRow).where(UserRow.id.in_(user_ids)))).scalars()
        return {row.id: row for row in rows}

    async def list(self, *, email_address: str, after: tuple[datetime, str] | None, limit: int) -> list[UserRow]:
        """Up to `limit` users after the (created_at, id) position, oldest first, optionally by email."""
        query = select(UserRow).order_by(UserRow.created_at, UserRow.id).limit(limit)
        if email_address:
            query = query.where(func.lower(UserRow.email_address) == email_address.lower())
        if after is not None:
            query = query.where(tuple_(UserRow.created_at, UserRow.id) > tuple_(*after))
        return list((await self._session.execute(query)).scalars())

    async def update(self, row: UserRow, changes: dict[str, Any]) -> UserRow:
        """Set the given columns of a row read with `for_update`; ALREADY_EXISTS when the new email address
        belongs to someone else."""
        user_id = row.id  # read now: a failed flush expires the row
        for column, value in changes.items():
            setattr(row, column, value)
        row.updated_at = utcnow()
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise _conflict(exc, user_id) from None
        return row

    async def delete(self, user_id: str) -> None:
        """Delete a user; their devices go with them."""
        result = await self._session.execute(delete(UserRow).where(UserRow.id == user_id).returning(UserRow.id))
        if result.scalar_one_or_none() is None:
            raise user_not_found(user_id)

    async def add_device(self, user_id: str, token: str, platform: str) -> tuple[DeviceRow, str | None]:
        """Register a token for a user. A token already registered moves to this user (the install changed hands)
        and keeps its id, so the same token is never stored twice. Returns the device and its previous owner."""
        await self.get(user_id)
        previous_owner = (
            await self._session.execute(select(DeviceRow.user_id).where(DeviceRow.token == token).with_for_update())
        ).scalar_one_or_none()
        now = utcnow()
        statement = (
            insert(DeviceRow)
            .values(id=uuid.uuid4(), user_id=user_id, token=token, platform=platform, created_at=now)
            .on_conflict_do_update(
                index_elements=[DeviceRow.token],
                set_={"user_id": user_id, "platform": platform},
            )
            .returning(DeviceRow)
        )
        device = (await self._session.execute(statement)).scalar_one()
        await self._touch(user_id)
        return device, previous_owner

    async def remove_device(self, user_id: str, device_id: uuid.UUID) -> None:
        """Remove one of the user's devices; NOT_FOUND when the user has no such device."""
        result = await self._session.execute(
            delete(DeviceRow).where(DeviceRow.id == device_id, DeviceRow.user_id == user_id).returning(DeviceRow.id)
        )
        if result.scalar_one_or_none() is None:
            await self.get(user_id)  # NOT_FOUND for the user first, when that is what is missing
            raise NotFound(
                f"user {user_id!r} has no device {str(device_id)!r}",
                reason="DEVICE_NOT_FOUND",
                metadata={"user_id": user_id, "device_id": str(device_id)},
            )
        await self._touch(user_id)

    async def _touch(self, user_id: str) -> None:
        """A device change changes the user: move their update_time, in one statement."""
        await self._session.execute(update(UserRow).where(UserRow.id == user_id).values(updated_at=utcnow()))
