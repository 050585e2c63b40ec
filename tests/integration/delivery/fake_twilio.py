"""Twilio's Messages API on loopback: checks basic auth and the form the way Twilio does, then answers as scripted."""

from __future__ import annotations

import base64
import re
import uuid
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from clarion.delivery.sms_text import measure
from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def messages_path(account_sid: str) -> str:
    """The Messages resource of an account."""
    return f"/2010-04-01/Accounts/{account_sid}/Messages.json"


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def twilio_reply(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """A scripted error reply with Twilio's body."""
    return Reply(status, twilio_error(status, code, message), headers or {})


@dataclass(frozen=True)
class AcceptThenHang:
    """Take the message (it counts as sent) but never answer: the caller times out after Twilio queued it."""


class FakeTwilio:
    """Validates basic auth and the form; a malformed request gets Twilio's 400, a valid one the next scripted reply
    (default: 201 with the message JSON, status "queued", or "accepted" through a messaging service)."""

    def __init__(self, server: FakeHttpServer, *, account_sid: str, auth_token: str) -> None:
        self.server = server
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.replies: deque[Reply | AcceptThenHang] = deque()
        self.messages: list[dict[str, Any]] = []  # every message Twilio took, as answered
        self.path = messages_path(account_sid)
        server.route(self.path, self._create_message)

    @property
    def base_url(self) -> str:
        """What CLARION_TWILIO_BASE_URL is set to."""
        return self.server.url

    @property
    def requests(self) -> list[Request]:
        """Every request to the Messages resource."""
        return self.server.requests_to(self.path)

    def then(self, *replies: Reply | AcceptThenHang) -> None:
        """Answer the next valid requests with these, in order."""
        self.replies.extend(replies)

    def _create_message(self, request: Request) -> Reply:
        if request.method != "POST":
            return twilio_reply(405, 20004, "Method not allowed")
        if not self._authorized(request.headers.get("authorization", "")):
            return twilio_reply(401, 20003, "Authenticate")
        form = form_fields(request)
        problem = _problem(form)
        if problem is not None:
            return problem
        reply = self.replies.popleft() if self.replies else None
        if isinstance(reply, Reply):
            return reply
        message = self._message(form)
        self.messages.append(message)
        return Reply(hang=True) if isinstance(reply, AcceptThenHang) else Reply(201, message)

    def _authorized(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return header == f"Basic {expected}"

    def _message(self, form: dict[str, str]) -> dict[str, Any]:
        """Twilio's message resource, as the create call returns it."""
        sid = "SM" + uuid.uuid4().hex
        service = form.get("MessagingServiceSid")
        now = formatdate(usegmt=True)
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": None if service else form["From"],
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(measure(form["Body"]).segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{messages_path(self.account_sid)[:-5]}/{sid}/Media.json"},
            "to": form["To"],
            "uri": f"{messages_path(self.account_sid)[:-5]}/{sid}.json",
        }


def form_fields(request: Request) -> dict[str, str]:
    """The request's form, one value per field (Twilio takes the first)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    fields = parse_qs(request.body.decode(), keep_blank_values=True, strict_parsing=False)
    return {name: values[0] for name, values in fields.items()}


def _problem(form: dict[str, str]) -> Reply | None:
    """Twilio's 400 for what it would refuse in the form (the parts Clarion sends)."""
    to = form.get("To", "")
    if not to:
        return twilio_reply(400, 21604, "A 'To' phone number is required.")
    if not _E164.fullmatch(to):
        return twilio_reply(400, 21211, f"The 'To' number {to} is not a valid phone number.")
    if not form.get("Body"):
        return twilio_reply(400, 21602, "Message body is required.")
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return twilio_reply(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message")
    if len(form["Body"]) > 1600:
        return twilio_reply(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
    return None
