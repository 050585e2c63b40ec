"""Alembic environment: runs migrations on the async engine, one migrator at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from clarion.core.config import get_settings
from clarion.core.db import Base, async_url
from clarion.keys import models as _keys  # noqa: F401 - registers the tables on Base.metadata
from clarion.notifications import models as _notifications  # noqa: F401 - registers the tables on Base.metadata
from clarion.templates import models as _templates  # noqa: F401 - registers the tables on Base.metadata
from clarion.users import models as _users  # noqa: F401 - registers the tables on Base.metadata

target_metadata = Base.metadata

# Any constant will do; it only has to be the same in every process that migrates this database.
_MIGRATION_LOCK_ID = 0x636C6172696F6E  # "clarion"


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url
    if not url:
        raise RuntimeError("no database: set CLARION_DATABASE_URL")
    return async_url(url)


def _run(connection: Connection) -> None:
    # Several pods may start `clarion migrate` at once; the lock makes the others wait, then find nothing to do.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    try:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
        connection.commit()


async def _run_online() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
