"""What `clarion keys` does, and local mode's first key: create (a client's or a service's key), list, revoke,
projects, ensure."""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.errors import InvalidArgument
from clarion.core.logging import get_logger
from clarion.keys.models import ApiKeyRow, ProjectRow
from clarion.keys.repository import KeyRepository
from clarion.keys.scopes import DEFAULT_PROJECT, SERVICE_KEY_SCOPES, Scope
from clarion.keys.tokens import NewKey, generate_key, hash_secret, parse_key, write_secret_file

log = get_logger(__name__)

MAX_NAME_LENGTH = 100
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
LOCAL_KEY_NAME = "local"
LOCAL_KEY_FILE = "api-key"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: `token` is the only time its secret exists outside the caller's hands."""

    token: str
    row: ApiKeyRow


def _checked(name: str, scopes: Sequence[str]) -> tuple[str, list[str]]:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument.for_field("name", f"must be 1 to {MAX_NAME_LENGTH} characters")
    known = {scope.value for scope in Scope}
    unknown = sorted(set(scopes) - known)
    if not scopes or unknown:
        raise InvalidArgument.for_field(
            "scopes",
            f"must be one or more of {', '.join(sorted(known))}" + (f"; not {', '.join(unknown)}" if unknown else ""),
        )
    return name, sorted(set(scopes))


async def create_key(
    sessions: async_sessionmaker[AsyncSession],
    *,
    pepper: SecretStr,
    name: str,
    scopes: Sequence[str],
    project_id: str = DEFAULT_PROJECT,
) -> IssuedKey:
    """Create a key with `scopes` in `project_id` (which must exist); the returned token is shown once and never
    stored."""
    name, checked_scopes = _checked(name, scopes)
    return await _insert(sessions, pepper, generate_key(), name, checked_scopes, project_id)


async def create_service_key(
    sessions: async_sessionmaker[AsyncSession], *, pepper: SecretStr, workload: str
) -> IssuedKey:
    """Create a service key for one of Clarion's workloads (SERVICE_KEY_SCOPES): only the scopes its calls need,
    an id the edge refuses (`svc-<workload>-…`), revocable like any key. Rotate by creating a new one, rolling it
    out, and revoking the old."""
    if workload not in SERVICE_KEY_SCOPES:
        raise InvalidArgument.for_field("workload", f"must be one of {', '.join(SERVICE_KEY_SCOPES)}")
    scopes = sorted(scope.value for scope in SERVICE_KEY_SCOPES[workload])
    new = generate_key(service=workload)
    return await _insert(sessions, pepper, new, f"{workload} service", scopes, DEFAULT_PROJECT)


async def _insert(
    sessions: async_sessionmaker[AsyncSession],
    pepper: SecretStr,
    new: NewKey,
    name: str,
    checked_scopes: list[str],
    project_id: str,
) -> IssuedKey:
    row = ApiKeyRow(
        id=new.key_id,
        name=name,
        secret_hash=hash_secret(pepper, new.key_id, new.secret),
        scopes=checked_scopes,
        project_id=project_id,
    )
    async with sessions() as session, session.begin():
        repository = KeyRepository(session)
        await repository.project(project_id)
        await repository.create(row)
    log.info("api_key_created", key_id=row.id, key_name=name, scopes=checked_scopes, project_id=project_id)
    return IssuedKey(new.token, row)


async def create_project(sessions: async_sessionmaker[AsyncSession], *, project_id: str, name: str) -> ProjectRow:
    """Create a project (a slug such as `billing`); ALREADY_EXISTS if there is one by that id."""
    if not _PROJECT_ID.match(project_id):
        raise InvalidArgument.for_field(
            "project_id", "must be 1 to 63 lowercase letters, digits or '-', starting with a letter"
        )
    name = name.strip() or project_id
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument.for_field("name", f"must be at most {MAX_NAME_LENGTH} characters")
    async with sessions() as session, session.begin():
        row = await KeyRepository(session).create_project(ProjectRow(id=project_id, name=name))
    log.info("project_created", project_id=project_id)
    return row


async def list_projects(sessions: async_sessionmaker[AsyncSession]) -> list[ProjectRow]:
    """Every project, by id."""
    async with sessions() as session:
        return await KeyRepository(session).projects()


async def list_keys(sessions: async_sessionmaker[AsyncSession]) -> list[ApiKeyRow]:
    """Every key, oldest first (no secrets: the table has none)."""
    async with sessions() as session:
        return await KeyRepository(session).list()


async def revoke_key(sessions: async_sessionmaker[AsyncSession], key_id: str) -> ApiKeyRow:
    """Revoke a key; servers stop accepting it within CLARION_API_KEY_CACHE_TTL_S. Revoking twice is fine."""
    async with sessions() as session, session.begin():
        row = await KeyRepository(session).revoke(key_id)
    log.info("api_key_revoked", key_id=key_id)
    return row


async def _still_valid(sessions: async_sessionmaker[AsyncSession], pepper: SecretStr, token: str) -> bool:
    parsed = parse_key(token)
    if parsed is None:
        return False
    async with sessions() as session:
        row = await KeyRepository(session).get(parsed.key_id)
    if row is None or row.revoked_at is not None:
        return False
    return hmac.compare_digest(bytes(row.secret_hash), hash_secret(pepper, parsed.key_id, parsed.secret))


async def ensure_local_key(
    sessions: async_sessionmaker[AsyncSession], *, pepper: SecretStr, data_dir: Path
) -> tuple[str, bool]:
    """Local mode's admin key, kept in `<data_dir>/api-key` (0600): the one there if the database still accepts
    it, else a new one written there. Returns the key and whether it is new."""
    path = data_dir / LOCAL_KEY_FILE
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if await _still_valid(sessions, pepper, token):
            return token, False
        log.warning("local_api_key_replaced", path=str(path), why="revoked, unknown to this database or malformed")
    issued = await create_key(sessions, pepper=pepper, name=LOCAL_KEY_NAME, scopes=[Scope.ADMIN.value])
    write_secret_file(path, issued.token)
    return issued.token, True
