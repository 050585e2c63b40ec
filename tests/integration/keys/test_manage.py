"""The operations behind `clarion keys` and local mode's first key, on real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.config import load_settings
from clarion.core.db import create_engine, session_factory
from clarion.core.errors import InvalidArgument, NotFound
from clarion.keys.manage import create_key, ensure_local_key, list_keys, revoke_key
from clarion.keys.repository import SqlKeyStore
from clarion.keys.scopes import Scope
from clarion.keys.tokens import hash_secret, parse_key

pytestmark = pytest.mark.integration

PEPPER = SecretStr("integration-pepper-0123456789abcdef-01234")


@pytest.fixture
async def sessions(migrated_database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(migrated_database, settings=load_settings())
    yield session_factory(engine)
    await engine.dispose()


async def test_a_key_is_stored_as_its_keyed_hash_only(sessions: async_sessionmaker[AsyncSession]) -> None:
    issued = await create_key(sessions, pepper=PEPPER, name="billing", scopes=[Scope.SEND, Scope.SEND])
    parsed = parse_key(issued.token)
    assert parsed is not None
    (row,) = await list_keys(sessions)
    assert (row.id, row.name, row.scopes) == (parsed.key_id, "billing", ["notifications:send"])
    assert bytes(row.secret_hash) == hash_secret(PEPPER, parsed.key_id, parsed.secret)
    assert parsed.secret.encode() not in bytes(row.secret_hash)
    assert (row.last_used_at, row.revoked_at) == (None, None)


@pytest.mark.parametrize(
    ("name", "scopes", "field"), [("", ["admin"], "name"), ("x", [], "scopes"), ("x", ["root"], "scopes")]
)
async def test_a_bad_name_or_scope_is_refused(
    sessions: async_sessionmaker[AsyncSession], name: str, scopes: list[str], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await create_key(sessions, pepper=PEPPER, name=name, scopes=scopes)
    assert caught.value.violations[0].field == field
    assert await list_keys(sessions) == []


async def test_revoking_is_idempotent_and_an_unknown_id_is_not_found(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    issued = await create_key(sessions, pepper=PEPPER, name="ci", scopes=[Scope.ADMIN])
    first = await revoke_key(sessions, issued.row.id)
    again = await revoke_key(sessions, issued.row.id)
    assert first.revoked_at is not None
    assert again.revoked_at == first.revoked_at
    stored = await SqlKeyStore(sessions).find(issued.row.id)
    assert stored is not None
    assert stored.revoked
    with pytest.raises(NotFound):
        await revoke_key(sessions, "nosuchkey0")


async def test_touch_writes_last_used_at_most_once_a_minute(sessions: async_sessionmaker[AsyncSession]) -> None:
    issued = await create_key(sessions, pepper=PEPPER, name="ci", scopes=[Scope.ADMIN])
    store = SqlKeyStore(sessions)
    await store.touch(issued.row.id)
    (row,) = await list_keys(sessions)
    assert row.last_used_at is not None
    await store.touch(issued.row.id)  # another process, a second later: nothing written
    (again,) = await list_keys(sessions)
    assert again.last_used_at == row.last_used_at


async def test_local_mode_keeps_one_admin_key_and_replaces_it_when_revoked(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    token, created = await ensure_local_key(sessions, pepper=PEPPER, data_dir=tmp_path)
    assert created
    assert (tmp_path / "api-key").read_text().strip() == token
    assert (os.stat(tmp_path / "api-key").st_mode & 0o777) == 0o600
    assert await ensure_local_key(sessions, pepper=PEPPER, data_dir=tmp_path) == (token, False)

    (row,) = await list_keys(sessions)
    assert (row.name, row.scopes) == ("local", ["admin"])
    await revoke_key(sessions, row.id)
    replacement, created = await ensure_local_key(sessions, pepper=PEPPER, data_dir=tmp_path)
    assert created
    assert replacement != token
    assert (tmp_path / "api-key").read_text().strip() == replacement

    # A different pepper (a new data dir with an old database) cannot verify the file's key: a new one is made.
    other = SecretStr("a-different-pepper-0123456789abcdef-0123")
    assert (await ensure_local_key(sessions, pepper=other, data_dir=tmp_path))[1]
