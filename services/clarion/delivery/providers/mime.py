"""Building RFC 5322 messages so that nothing from a variable can add a header.

This machine's Python 3.11.7 predates the fix for CR/LF header injection in `email` (CVE-2024-6923), so the
checks are ours: addresses and display names with a line break are refused; subjects have line breaks stripped.
Headers are only ever set from `Address` objects and cleaned strings, never concatenated.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage as MimeMessage

import email_validator

from clarion.delivery.providers.base import EmailMessage, check_delivery_id

# Everything str.splitlines() splits on: any of these could end a header line in some parser along the way.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Other C0 controls and DEL have no business in a display name either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_NAME_ADDR = re.compile(r"(?P<name>[^<>]*)<(?P<addr>[^<>]*)>")


def clean_subject(subject: str) -> str:
    """The subject on one line. Stripped rather than refused: subjects are rendered from template data, and a
    stray newline in a user's name should not cost them the email."""
    return " ".join(_LINE_BREAKS.sub(" ", subject).split())


def parse_mailbox(value: str, *, what: str) -> Address:
    """`addr@example.com` or `Name <addr@example.com>` as an Address.

    Raises ValueError naming `what` (never the value, which is personal data) when there is a line break or
    anything but exactly one valid address."""
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains a line break or control character")
    match = _NAME_ADDR.fullmatch(value.strip())
    name, addr = (match["name"].strip(), match["addr"].strip()) if match else ("", value.strip())
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1]
    try:
        valid = email_validator.validate_email(addr, check_deliverability=False)
    except email_validator.EmailNotValidError:
        # Its reason is not repeated: some reasons quote the domain, which is personal data.
        raise ValueError(f"{what} is not a valid email address") from None
    return Address(display_name=name, addr_spec=valid.ascii_email or valid.normalized)


def message_id(delivery_id: str, domain: str) -> str:
    """The same Message-ID on every retry of a delivery, so receivers can recognise a duplicate."""
    return f"<{check_delivery_id(delivery_id)}@{domain}>"


def build_mime(message: EmailMessage, *, sender: Address, recipient: Address) -> MimeMessage:
    """text/plain, plus text/html as an alternative when there is one, with CRLF line endings for SMTP."""
    mime = MimeMessage(policy=email.policy.SMTP)
    mime["From"] = sender
    mime["To"] = recipient
    mime["Subject"] = clean_subject(message.subject)
    mime["Date"] = email.utils.format_datetime(datetime.now(UTC))
    mime["Message-ID"] = message_id(message.delivery_id, sender.domain)
    # RFC 3834: a notification; auto-responders should not answer it.
    mime["Auto-Submitted"] = "auto-generated"
    mime.set_content(message.body)
    if message.html_body:
        mime.add_alternative(message.html_body, subtype="html")
    return mime
