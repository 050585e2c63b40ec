"""SendGrid's v3 `mail/send` on loopback: checks each request the way SendGrid would, then answers as scripted."""

from __future__ import annotations

from collections import deque
from typing import Any

from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request

MAIL_SEND = "/v3/mail/send"


def sendgrid_errors(*messages: str) -> dict[str, Any]:
    """SendGrid's error body."""
    return {"errors": [{"message": m, "field": None, "help": None} for m in messages]}


class FakeSendGrid:
    """Validates Authorization and the v3 JSON; a malformed request gets SendGrid's 400, a valid one the next
    scripted reply (default: 202 with an X-Message-Id)."""

    def __init__(self, server: FakeHttpServer, *, api_key: str) -> None:
        self.server = server
        self.api_key = api_key
        self.replies: deque[Reply] = deque()
        self.accepted = 0
        server.route(MAIL_SEND, self._mail_send)

    @property
    def host(self) -> str:
        """What CLARION_SENDGRID_HOST is set to."""
        return self.server.url

    @property
    def requests(self) -> list[Request]:
        """Every mail/send request received."""
        return self.server.requests_to(MAIL_SEND)

    def then(self, *replies: Reply) -> None:
        """Answer the next valid requests with these, in order."""
        self.replies.extend(replies)

    def _mail_send(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, sendgrid_errors("method not allowed"))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, sendgrid_errors("The provided authorization grant is invalid, expired, or revoked"))
        problems = _problems(request.json())
        if problems:
            return Reply(400, sendgrid_errors(*problems))
        if self.replies:
            return self.replies.popleft()
        self.accepted += 1
        return Reply(202, b"", {"X-Message-Id": f"sg-message-{self.accepted}"})


def _problems(mail: Any) -> list[str]:
    """What SendGrid would refuse in a v3 mail/send body (the parts Clarion uses)."""
    problems = []
    personalizations = mail.get("personalizations") or []
    if len(personalizations) != 1 or not [t.get("email") for t in personalizations[0].get("to", [])]:
        problems.append("personalizations[0].to is required")
    if not (mail.get("from") or {}).get("email"):
        problems.append("from.email is required")
    if not mail.get("subject"):
        problems.append("subject is required")
    types = [c.get("type") for c in mail.get("content") or []]
    if not types or types[0] != "text/plain" or any(t not in ("text/plain", "text/html") for t in types):
        problems.append("content must start with text/plain, then optional text/html")
    if not (mail.get("custom_args") or {}).get("delivery_id"):
        problems.append("custom_args.delivery_id is missing (Clarion's requirement, not SendGrid's)")
    return problems
