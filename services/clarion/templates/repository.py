"""TemplateService's queries, on a session the caller owns (one transaction per RPC)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import utcnow
from clarion.core.errors import AlreadyExists, FailedPrecondition, NotFound
from clarion.templates.models import TemplateRow, TemplateVersionRow


def template_not_found(key: str) -> NotFound:
    """The one NOT_FOUND every RPC gives for a missing template."""
    return NotFound(f"template {key!r} not found", reason="TEMPLATE_NOT_FOUND", metadata={"template_key": key})


def template_deleted(key: str) -> FailedPrecondition:
    """A deleted template can be read but not changed or sent."""
    return FailedPrecondition(
        f"template {key!r} is deleted; create it again to revive it",
        reason="TEMPLATE_DELETED",
        metadata={"template_key": key},
    )


class TemplateRepository:
    """Templates and their versions in PostgreSQL."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def head(self, key: str, *, for_update: bool = False) -> TemplateRow:
        """The template's head row (latest version, deletion), or NOT_FOUND."""
        query = select(TemplateRow).where(TemplateRow.key == key)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).scalar_one_or_none()
        if row is None:
            raise template_not_found(key)
        return row

    async def create(self, version: TemplateVersionRow) -> tuple[TemplateRow, TemplateVersionRow]:
        """Create a template at version 1, or revive a deleted one as its next version; ALREADY_EXISTS if live."""
        inserted = await self._session.execute(
            insert(TemplateRow)
            .values(key=version.key, latest_version=1, created_at=utcnow(), updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=[TemplateRow.key])
            .returning(TemplateRow.key)
        )
        head = await self.head(version.key, for_update=True)
        if inserted.scalar_one_or_none() is None:
            if head.deleted_at is None:
                raise AlreadyExists(
                    f"template {version.key!r} already exists; update it to make a new version",
                    reason="TEMPLATE_ALREADY_EXISTS",
                    metadata={"template_key": version.key},
                )
            head.deleted_at = None
            return head, await self.add_version(head, version)
        version.version = 1
        self._session.add(version)
        await self._session.flush()
        return head, version

    async def add_version(self, head: TemplateRow, version: TemplateVersionRow) -> TemplateVersionRow:
        """Store `version` as the next version of a head row read with `for_update`."""
        head.latest_version += 1
        head.updated_at = utcnow()
        version.version = head.latest_version
        self._session.add(version)
        await self._session.flush()
        return version

    async def version(self, key: str, number: int) -> tuple[TemplateRow, TemplateVersionRow]:
        """A given version (0 = the latest) with its head row, or NOT_FOUND."""
        head = await self.head(key)
        wanted = number or head.latest_version
        row = await self._session.get(TemplateVersionRow, (key, wanted))
        if row is None:
            raise NotFound(
                f"template {key!r} has no version {wanted} (latest is {head.latest_version})",
                reason="TEMPLATE_VERSION_NOT_FOUND",
                metadata={"template_key": key, "version": str(wanted)},
            )
        return head, row

    async def soft_delete(self, key: str) -> None:
        """Mark a template deleted; its versions stay readable. Deleting twice is NOT_FOUND the second time."""
        head = await self.head(key, for_update=True)
        if head.deleted_at is not None:
            raise template_not_found(key)
        head.deleted_at = head.updated_at = utcnow()
        await self._session.flush()

    async def list_latest(
        self, *, after_key: str | None, limit: int, show_deleted: bool
    ) -> list[tuple[TemplateRow, TemplateVersionRow]]:
        """The latest version of each template, by key, after `after_key`."""
        query = (
            select(TemplateRow, TemplateVersionRow)
            .join(
                TemplateVersionRow,
                (TemplateVersionRow.key == TemplateRow.key)
                & (TemplateVersionRow.version == TemplateRow.latest_version),
            )
            .order_by(TemplateRow.key)
            .limit(limit)
        )
        if after_key is not None:
            query = query.where(TemplateRow.key > after_key)
        if not show_deleted:
            query = query.where(TemplateRow.deleted_at.is_(None))
        return [(head, version) for head, version in (await self._session.execute(query)).all()]

    async def list_versions(
        self, key: str, *, before_version: int | None, limit: int
    ) -> tuple[TemplateRow, list[TemplateVersionRow]]:
        """A template's versions, newest first, below `before_version`."""
        head = await self.head(key)
        query = (
            select(TemplateVersionRow)
            .where(TemplateVersionRow.key == key)
            .order_by(TemplateVersionRow.version.desc())
            .limit(limit)
        )
        if before_version is not None:
            query = query.where(TemplateVersionRow.version < before_version)
        return head, list((await self._session.execute(query)).scalars())
