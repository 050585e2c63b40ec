"""User tokens: what an end user's browser or app presents to reach its own inbox, without the project's key.

`clu_<payload>.<signature>`: the payload is base64url JSON {user, project, key, expiry}; the signature is
HMAC-SHA256 over the payload's text with a key derived from the API-key pepper (so every Clarion process can check
a token, and nothing is stored per token). A token is checked on every call like a key: its signature, its expiry,
and that the key which made it still exists, is not revoked and may still make tokens (clarion.keys.auth); so
revoking that key ends its tokens within the key cache's TTL. Stateless HMAC rather than a JWT library: one
algorithm, no header to negotiate it, and the `clu_` prefix lets secret scanners find leaked ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from pydantic import SecretStr

USER_TOKEN_PREFIX = "clu_"  # noqa: S105 - a prefix, not a secret
# Far above a real token (about 200 characters): anything longer is refused before it is decoded.
MAX_TOKEN_CHARS = 1024
_TOKEN = re.compile(r"^clu_([A-Za-z0-9_-]{8,900})\.([A-Za-z0-9_-]{43})$")
_PURPOSE = b"clarion user token v1"


@dataclass(frozen=True, slots=True)
class UserClaims:
    """What a user token says: whose inbox, in which project, made by which key, until when (Unix seconds)."""

    user_id: str
    project_id: str
    key_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(pepper: SecretStr, payload: str) -> bytes:
    key = hmac.new(pepper.get_secret_value().encode(), _PURPOSE, hashlib.sha256).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def mint(pepper: SecretStr, claims: UserClaims) -> str:
    """A signed token for `claims`."""
    body = {"u": claims.user_id, "p": claims.project_id, "k": claims.key_id, "e": claims.expires_at}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{USER_TOKEN_PREFIX}{payload}.{_b64(_signature(pepper, payload))}"


def read(pepper: SecretStr, token: str) -> UserClaims | None:
    """The claims of a token whose signature is right (expired or not: the caller says which); None for anything
    else. Bounded work: the length is checked before anything is decoded."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    match = _TOKEN.match(token)
    if match is None:
        return None
    payload, signature = match[1], match[2]
    try:
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(given, _signature(pepper, payload)):
        return None
    try:
        body = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    user, project, key, expires = body.get("u"), body.get("p"), body.get("k"), body.get("e")
    if not (isinstance(user, str) and isinstance(project, str) and isinstance(key, str)):
        return None
    if type(expires) is not int:
        return None
    return UserClaims(user, project, key, expires)
