"""FCM HTTP v1 and Google's OAuth token endpoint on loopback, and a throwaway service account that trusts them.

The token endpoint verifies the JWT assertion with the service account's public key, as Google does; the send
endpoint accepts only the access token it issued, checks the message, then answers as scripted.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request

PROJECT_ID = "clarion-test"
CLIENT_EMAIL = f"clarion-push@{PROJECT_ID}.iam.gserviceaccount.com"
TOKEN_PATH = "/token"
SEND_PATH = f"/v1/projects/{PROJECT_ID}/messages:send"
ACCESS_TOKEN = "ya29.fake-access-token-never-logged"
# google-auth always names Google's endpoint as the assertion's audience, whatever token_uri it posts to.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class ServiceAccount:
    """A service-account JSON file on disk and the public half of its key."""

    path: Path
    public_key: rsa.RSAPublicKey


def private_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key (2048 bits: what Google issues; about 50 ms to make)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_service_account(directory: Path, *, key: rsa.RSAPrivateKey, token_uri: str) -> ServiceAccount:
    """The JSON a Firebase console download would hold, with `token_uri` aimed at the fake."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": "test-key-1",
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    path = directory / "service-account.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    return ServiceAccount(path, key.public_key())


def fcm_error(http_status: int, status: str, message: str, *, error_code: str = "", field: str = "") -> Reply:
    """An FCM v1 error answer (google.rpc.Status with FcmError and BadRequest details)."""
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
    if field:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": field}]})
    body = {"error": {"code": http_status, "message": message, "status": status, "details": details}}
    return Reply(http_status, body)


class FakeFcm:
    """Both endpoints on one server. `then(...)` scripts the next send answers; by default each is accepted."""

    def __init__(self, server: FakeHttpServer, account_key: rsa.RSAPublicKey | None = None) -> None:
        self.server = server
        self.account_key = account_key
        self.replies: deque[Reply] = deque()
        self.accepted = 0
        server.route(TOKEN_PATH, self._token)
        server.route(SEND_PATH, self._send)

    @property
    def token_uri(self) -> str:
        """What the service account's token_uri is set to."""
        return self.server.url + TOKEN_PATH

    @property
    def sends(self) -> list[Request]:
        """Every messages:send request received."""
        return self.server.requests_to(SEND_PATH)

    @property
    def token_requests(self) -> list[Request]:
        """Every OAuth token request received."""
        return self.server.requests_to(TOKEN_PATH)

    def then(self, *replies: Reply) -> None:
        """Answer the next valid sends with these, in order."""
        self.replies.extend(replies)

    def _token(self, request: Request) -> Reply:
        form = urllib.parse.parse_qs(request.body.decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return Reply(400, {"error": "unsupported_grant_type"})
        claims = self._verified_claims(form.get("assertion", [""])[0])
        if claims is None:
            return Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        if claims.get("iss") != CLIENT_EMAIL or claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT claims."})
        if "https://www.googleapis.com/auth/cloud-platform" not in claims.get("scope", "").split():
            return Reply(400, {"error": "invalid_scope"})
        return Reply(200, {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})

    def _verified_claims(self, assertion: str) -> dict[str, Any] | None:
        assert self.account_key is not None, "FakeFcm needs the service account's public key"
        try:
            header, payload, signature = assertion.split(".")
            self.account_key.verify(
                _unb64(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:  # noqa: BLE001 - any malformed or badly signed assertion is refused, like Google does
            return None
        claims: dict[str, Any] = json.loads(_unb64(payload))
        return claims

    def _send(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        message = request.json().get("message") or {}
        if not message.get("token"):
            return fcm_error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.")
        if self.replies:
            return self.replies.popleft()
        self.accepted += 1
        return Reply(200, {"name": f"projects/{PROJECT_ID}/messages/{self.accepted}"})


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
