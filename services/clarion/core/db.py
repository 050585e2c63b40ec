"""PostgreSQL through SQLAlchemy 2 async and asyncpg: engine, sessions, the declarative base and migrations; and a
plain asyncpg pool for the few statements on the hot path of every notification."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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

from clarion.core.config import Settings, SettingsError

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


def database_location(url: str) -> str:
    """`host:port/database` of a database URL, without the credentials; "" for none."""
    if not url:
        return ""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"


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
        # A statement's parameters are users' data (addresses, message data): errors and logs show the SQL only.
        hide_parameters=True,
    )


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no type hints
    """Goes back to the pool without asyncpg's reset query (UNLISTEN, RESET ALL, ...: one more round trip per use).
    The pool's users leave no session state behind: no LISTEN, SET, cursors or advisory locks; asyncpg still rolls
    back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


class FastPath:
    """A plain asyncpg pool for the statements every notification runs (accept, claim, outcome, dispatch).

    Why not the ORM there: measured on this 2-core class of machine, an accept through SQLAlchemy sessions took ten
    round trips (pre-ping, BEGIN, statements, COMMIT, for two sessions) and ~5 ms of CPU; the same work as one
    prepared statement in autocommit is one round trip (bench/RESULTS.md). Everything else keeps the ORM. The pool
    opens on first use, so building it needs no running loop or database."""

    def __init__(self, url: str, *, max_size: int) -> None:
        self._dsn = asyncpg_dsn(url)
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                # min_size 0: no connection until one is needed, so a process starts while PostgreSQL is down.
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_size,
                    connection_class=_PooledConnection,
                    # Planned with each execution's values: a generic plan made while a table was small (a new
                    # deployment) is a sequential scan that PostgreSQL keeps for the connection's lifetime, and
                    # the batch statements (`= ANY($1)`, `unnest`) then read the whole table every time.
                    server_settings={"plan_cache_mode": "force_custom_plan"},
                )
            return self._pool

    @property
    def dsn(self) -> str:
        """The database's address as asyncpg takes it (for a connection of its own: LISTEN)."""
        return self._dsn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection from the pool, in autocommit until the caller opens a transaction."""
        pool = self._pool or await self._open()
        async with pool.acquire() as connection:
            yield connection

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


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


async def migrate(url: str, *, app_role: str | None = None) -> None:
    """Apply every migration without blocking the event loop; then, with `app_role`, give that role data access
    (and no more) to every table: the services connect as it, and only migrations, as the schema's owner, change
    the schema."""
    if app_role is not None:
        await _check_app_role(url, app_role)
    await asyncio.to_thread(upgrade_database, url)
    if app_role is not None:
        await grant_data_access(url, app_role)


async def _check_app_role(url: str, role: str) -> None:
    """SettingsError unless `role` exists and is not the role migrations run as (revoking its write on
    alembic_version would break the next migration)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        current, exists = await connection.fetchrow(
            "SELECT current_user, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role
        )
    finally:
        await connection.close()
    if role == current:
        raise SettingsError(
            f"CLARION_DATABASE_APP_ROLE={role!r} is the role migrations run as: name the role the services use"
        )
    if not exists:
        raise SettingsError(f"CLARION_DATABASE_APP_ROLE={role!r}: no such role (CREATE ROLE {role} LOGIN PASSWORD …)")


async def grant_data_access(url: str, role: str) -> None:
    """SELECT, INSERT, UPDATE and DELETE on every table of the public schema, and the sequences, for `role` (a
    checked identifier): what the services need, and nothing of the schema (no CREATE, ALTER, DROP, TRUNCATE).
    Run after every migration, so tables a migration adds are granted too."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        quoted = '"' + role.replace('"', '""') + '"'
        async with connection.transaction():
            await connection.execute(f"GRANT USAGE ON SCHEMA public TO {quoted}")
            await connection.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}")
            await connection.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}")
            # Which migrations ran is the migrations' business: the services may read it, never write it.
            await connection.execute(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {quoted}")
    finally:
        await connection.close()
