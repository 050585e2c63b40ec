"""API keys in PostgreSQL: the queries, and the KeyStore the authenticator reads them through."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.db import utcnow
from clarion.core.errors import AlreadyExists, NotFound
from clarion.keys.auth import StoredKey
from clarion.keys.models import ApiKeyRow, ProjectRow
from clarion.keys.tokens import LAST_USED_RESOLUTION_S


def project_not_found(project_id: str) -> NotFound:
    """The one NOT_FOUND for a missing project."""
    return NotFound(
        f"project {project_id!r} not found: create it first (clarion keys create-project)",
        reason="PROJECT_NOT_FOUND",
        metadata={"project_id": project_id},
    )


def key_not_found(key_id: str) -> NotFound:
    """The one NOT_FOUND for a missing key."""
    return NotFound(f"API key {key_id!r} not found", reason="API_KEY_NOT_FOUND", metadata={"key_id": key_id})


class KeyRepository:
    """API keys, on a session the caller owns."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, row: ApiKeyRow) -> ApiKeyRow:
        """Insert a key (its id is random: a clash is a bug worth an error, not a retry)."""
        self._session.add(row)
        await self._session.flush()
        return row

    async def create_project(self, row: ProjectRow) -> ProjectRow:
        """Insert a project; ALREADY_EXISTS if its id is taken."""
        if await self._session.get(ProjectRow, row.id) is not None:
            raise AlreadyExists(
                f"project {row.id!r} already exists", reason="PROJECT_EXISTS", metadata={"project_id": row.id}
            )
        self._session.add(row)
        await self._session.flush()
        return row

    async def project(self, project_id: str) -> ProjectRow:
        """The project, or NOT_FOUND."""
        row = await self._session.get(ProjectRow, project_id)
        if row is None:
            raise project_not_found(project_id)
        return row

    async def projects(self) -> list[ProjectRow]:
        """Every project, by id."""
        return list((await self._session.execute(select(ProjectRow).order_by(ProjectRow.id))).scalars())

    async def get(self, key_id: str) -> ApiKeyRow | None:
        """The key, revoked or not, or None."""
        return await self._session.get(ApiKeyRow, key_id)

    async def list(self) -> list[ApiKeyRow]:
        """Every key, by project, oldest first."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.project_id, ApiKeyRow.created_at, ApiKeyRow.id)
        return list((await self._session.execute(query)).scalars())

    async def revoke(self, key_id: str) -> ApiKeyRow:
        """Mark the key revoked (keeping the first revocation time); NOT_FOUND if there is no such key."""
        row = await self._session.get(ApiKeyRow, key_id, with_for_update=True)
        if row is None:
            raise key_not_found(key_id)
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            await self._session.flush()
        return row

    async def touch(self, key_id: str) -> None:
        """Set last_used_at to now unless some process did within the last minute."""
        now = utcnow()
        stale = now - timedelta(seconds=LAST_USED_RESOLUTION_S)
        await self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < stale))
            .values(last_used_at=now)
        )


def stored_key(row: ApiKeyRow) -> StoredKey:
    """What the authenticator needs of a row."""
    return StoredKey(
        key_id=row.id,
        name=row.name,
        secret_hash=bytes(row.secret_hash),
        scopes=frozenset(row.scopes),
        revoked=row.revoked_at is not None,
        project_id=row.project_id,
    )


class SqlKeyStore:
    """The authenticator's KeyStore: one short transaction per lookup or last-used write."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def find(self, key_id: str) -> StoredKey | None:
        """The key with this id, revoked or not; None when there is none."""
        async with self._sessions() as session:
            row = await KeyRepository(session).get(key_id)
            return stored_key(row) if row is not None else None

    async def touch(self, key_id: str) -> None:
        """Record that the key was just used."""
        async with self._sessions() as session, session.begin():
            await KeyRepository(session).touch(key_id)
