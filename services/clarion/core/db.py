"""PostgreSQL through SQLAlchemy 2 async and asyncpg: engine, sessions, the declarative base and migrations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from clarion.core.config import Settings

# Stable constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class Base(DeclarativeBase):
    """The declarative base of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# What a lost or refused database connection raises, as opposed to a failed statement: PostgreSQL is down,
# restarting (57P01 admin shutdown, 57P03 cannot connect now) or unreachable.
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,
)


def is_database_unavailable(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) says PostgreSQL cannot be reached right now — worth a retry, not a bug."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _CONNECTION_ERRORS):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def utcnow() -> datetime:
    """The current time, timezone-aware, for timestamp columns."""
    return datetime.now(UTC)


def violated_constraint(error: IntegrityError) -> str | None:
    """The name of the unique or foreign-key constraint an INSERT/UPDATE broke, as asyncpg reports it."""
    cause = getattr(error.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return str(name) if name else None


def async_url(url: str) -> str:
    """Turn any PostgreSQL URL (e.g. the seed's `postgresql://…?sslmode=require`) into an asyncpg one."""
    parts = urlsplit(url)
    scheme = "postgresql+asyncpg"
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        # asyncpg calls libpq's `sslmode` `ssl`.
        query.append(("ssl", value) if key == "sslmode" else (key, value))
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


async def snapshot(session: AsyncSession) -> None:
    """Make a fresh session's reads one consistent snapshot (REPEATABLE READ), for a view assembled from several
    queries — a row and its children read while a worker commits must not disagree. Call before any query."""
    await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def asyncpg_dsn(url: str) -> str:
    """A URL asyncpg.connect() takes directly (for LISTEN, which needs a raw connection)."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


def create_engine(url: str, *, settings: Settings) -> AsyncEngine:
    """An engine with a bounded pool that checks connections before use (PostgreSQL may have restarted)."""
    return create_async_engine(
        async_url(url),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
        echo=settings.database_echo,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    """Alembic's configuration, built in code so it works from an installed wheel as well as a checkout."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config is an INI file: a literal % must be doubled.
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`. Blocking: call it from a thread inside an event loop."""
    command.upgrade(alembic_config(url), revision)


async def migrate(url: str) -> None:
    """Apply every migration without blocking the event loop."""
    await asyncio.to_thread(upgrade_database, url)
