"""API key material: the `clr_<id>_<secret>` format, the keyed hash that is stored, and local mode's pepper file.

The `clr_` prefix lets secret scanners find leaked keys; the id (public, the primary key of `api_keys`) says which
key a caller claims to hold; only HMAC-SHA256(pepper, id:secret) is stored, so neither a database dump nor a backup
can be replayed as a key, nor brute-forced without the pepper, which lives outside the database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from clarion.core.config import Settings, SettingsError
from clarion.core.logging import get_logger

log = get_logger(__name__)

KEY_PREFIX = "clr"
KEY_ID_LENGTH = 10
_ID_ALPHABET = string.ascii_lowercase + string.digits
# The id never holds `_`, so the first `_` after the prefix ends it; the secret may hold `_` and `-`.
_KEY = re.compile(r"^clr_([a-z0-9][a-z0-9-]{0,31})_([A-Za-z0-9_-]{32,128})$")
# The ids of service keys (`svc-dispatcher-k3v9x0q2ma`), which Clarion's workloads call each other with. Other ids
# never hold a `-`, so the edge can refuse every service key by its shape (`clr_svc-`) without a lookup.
SERVICE_KEY_ID_PREFIX = "svc-"
# last_used_at is exact to this: each process writes it at most once per key and interval.
LAST_USED_RESOLUTION_S = 60.0


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the id and secret to show once, never to store."""

    key_id: str
    secret: str

    @property
    def token(self) -> str:
        """What the caller sends after `Bearer `."""
        return f"{KEY_PREFIX}_{self.key_id}_{self.secret}"


def generate_key(*, service: str | None = None) -> NewKey:
    """A new random key: a 10-character id (after `svc-<service>-` for a service's key) and a 256-bit secret
    (43 URL-safe characters)."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    if service is not None:
        key_id = f"{SERVICE_KEY_ID_PREFIX}{service}-{key_id}"
    return NewKey(key_id, secrets.token_urlsafe(32))


def is_service_key(key_id: str) -> bool:
    """Whether the id is a service key's: one Clarion's own workloads present to each other, refused at the edge."""
    return key_id.startswith(SERVICE_KEY_ID_PREFIX)


def parse_key(token: str) -> NewKey | None:
    """The id and secret of a well-formed key; None for anything else."""
    match = _KEY.match(token)
    return NewKey(match[1], match[2]) if match else None


def hash_secret(pepper: SecretStr, key_id: str, secret: str) -> bytes:
    """The keyed hash stored for a key. The id is in the message, so a hash cannot be moved to another row."""
    message = f"{key_id}:{secret}".encode()
    return hmac.new(pepper.get_secret_value().encode(), message, hashlib.sha256).digest()


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only (0600), replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    os.replace(temporary, path)


PEPPER_FILE = "api-key-pepper"


def local_pepper(data_dir: Path, *, create: bool) -> SecretStr | None:
    """Local mode's pepper, kept in `<data_dir>/api-key-pepper` (0600); made on first use when `create`."""
    path = data_dir / PEPPER_FILE
    if path.is_file():
        return SecretStr(path.read_text(encoding="utf-8").strip())
    if not create:
        return None
    pepper = secrets.token_urlsafe(48)
    write_secret_file(path, pepper)
    log.info("api_key_pepper_created", path=str(path))
    return SecretStr(pepper)


def require_pepper(settings: Settings) -> SecretStr:
    """The pepper, or a SettingsError naming the variable when auth is on without one."""
    if settings.api_key_pepper is None:
        raise SettingsError(
            "CLARION_API_KEY_PEPPER is not set: it is required while CLARION_AUTH_REQUIRED is true "
            "(32+ random characters, e.g. `openssl rand -base64 48`, the same for every Clarion process)"
        )
    return settings.api_key_pepper
