"""User tokens: what mint signs, read gives back; anything else (another pepper, a changed byte, a wrong shape, an
oversized token) reads as nothing, without decoding what it need not."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import SecretStr

from clarion.keys.user_tokens import MAX_TOKEN_CHARS, UserClaims, mint, read

PEPPER = SecretStr("user-token-tests-pepper-0123456789abcdef")
CLAIMS = UserClaims(user_id="ada", project_id="default", key_id="k3v9x0q2ma", expires_at=1_900_000_000)


def test_a_minted_token_reads_back_its_claims() -> None:
    token = mint(PEPPER, CLAIMS)
    assert token.startswith("clu_")
    assert len(token) < 300
    assert read(PEPPER, token) == CLAIMS


def test_another_pepper_reads_nothing() -> None:
    assert read(SecretStr("another-pepper-0123456789abcdefghij"), mint(PEPPER, CLAIMS)) is None


def test_claims_changed_under_the_signature_read_nothing() -> None:
    token = mint(PEPPER, CLAIMS)
    payload, signature = token.removeprefix("clu_").split(".")
    forged = json.dumps({"u": "bob", "p": "default", "k": "k3v9x0q2ma", "e": 1_900_000_000}, separators=(",", ":"))
    forged_payload = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
    assert read(PEPPER, f"clu_{forged_payload}.{signature}") is None
    assert read(PEPPER, f"clu_{payload}.{'A' * len(signature)}") is None


@pytest.mark.parametrize(
    "token",
    ["", "clu_", "clu_abc", "clr_abc.def", "clu_" + "a" * 10 + "." + "b" * 42, "clu_" + "a" * MAX_TOKEN_CHARS],
)
def test_malformed_tokens_read_nothing(token: str) -> None:
    assert read(PEPPER, token) is None


def test_a_signed_payload_of_the_wrong_shape_reads_nothing() -> None:
    # Signed correctly (as if by a bug or an older version) but not the claims: still nothing.
    import hashlib
    import hmac

    from clarion.keys import user_tokens

    for body in ([1, 2], {"u": "ada", "p": "default", "k": "k", "e": "soon"}, {"u": 1, "p": "d", "k": "k", "e": 1}):
        payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        key = hmac.new(PEPPER.get_secret_value().encode(), user_tokens._PURPOSE, hashlib.sha256).digest()
        signature = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        token = f"clu_{payload}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"
        assert read(PEPPER, token) is None, body
