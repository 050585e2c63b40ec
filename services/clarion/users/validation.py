"""What makes a user's fields valid, and their canonical forms."""

from __future__ import annotations

import re
import zoneinfo
from functools import lru_cache

import email_validator
import phonenumbers

from clarion.core.validation import Violations, check_single_line, has_line_break_or_nul

MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
MAX_TOKEN_LENGTH = 4096
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")


def normalize_email(value: str, field: str, violations: Violations) -> str:
    """The address in canonical form (lower-case domain), or "" after recording why it is not an address."""
    if has_line_break_or_nul(value):
        violations.add(field, "must not contain CR, LF or NUL characters")
        return ""
    if len(value) > MAX_EMAIL_LENGTH:
        violations.add(field, f"must be at most {MAX_EMAIL_LENGTH} characters")
        return ""
    try:
        # No DNS lookups: accepting a request must not depend on the network.
        return str(email_validator.validate_email(value, check_deliverability=False).normalized)
    except email_validator.EmailNotValidError as exc:
        violations.add(field, f"is not a valid email address ({exc})")
        return ""


def normalize_phone(value: str, field: str, violations: Violations) -> str:
    """The number in E.164 form (`+14155550123`).

    The number must start with `+` and a known country code and have an E.164 length; whether it is assigned is
    not checked (the seed system's own example, +1234567890, must keep working).
    """
    if has_line_break_or_nul(value):
        violations.add(field, "must not contain CR, LF or NUL characters")
        return ""
    if not value.strip().startswith("+"):
        violations.add(field, "must be in E.164 form, starting with + and the country code, e.g. +14155550123")
        return ""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        violations.add(field, "is not a phone number in E.164 form, e.g. +14155550123")
        return ""
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not re.fullmatch(r"\+[1-9]\d{6,14}", formatted):
        violations.add(field, "must have 7 to 15 digits after the +")
        return ""
    return formatted


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: str, field: str, violations: Violations) -> None:
    """An IANA time zone name known to this machine's tz database (e.g. Europe/Lisbon)."""
    # Looked up in the list rather than passed to ZoneInfo(), which would read any file path it is given.
    violations.check(value in _time_zones(), field, "must be an IANA time zone such as UTC or Europe/Lisbon")


def check_quiet_hours(start: str, end: str, field_prefix: str, violations: Violations) -> None:
    """Both "HH:MM" (24-hour) and different, or both empty. The window may wrap midnight (22:00 → 08:00)."""
    for name, value in (("quiet_hours_start", start), ("quiet_hours_end", end)):
        if value and not _HH_MM.match(value):
            violations.add(f"{field_prefix}.{name}", 'must be a 24-hour time "HH:MM", e.g. "22:00"')
    if bool(start) != bool(end):
        missing = "quiet_hours_end" if start else "quiet_hours_start"
        violations.add(f"{field_prefix}.{missing}", "must be set when the other end of the quiet window is")
    elif start and start == end:
        violations.add(f"{field_prefix}.quiet_hours_end", "must differ from quiet_hours_start")


def check_display_name(value: str, field: str, violations: Violations) -> None:
    """A name to address the user by: one line, bounded."""
    check_single_line(violations, field, value, max_length=MAX_NAME_LENGTH)


def check_token(value: str, field: str, violations: Violations) -> None:
    """A push registration token: printable ASCII without spaces, bounded."""
    if not value:
        violations.add(field, "is required")
    elif len(value) > MAX_TOKEN_LENGTH:
        violations.add(field, f"must be at most {MAX_TOKEN_LENGTH} characters")
    elif not _TOKEN.match(value):
        violations.add(field, "must be printable ASCII without spaces")


def in_quiet_hours(start: str, end: str, minute_of_day: int) -> bool:
    """Whether a local time (minutes since midnight) falls inside the window [start, end), which may wrap midnight."""
    if not start or not end:
        return False
    begin = int(start[:2]) * 60 + int(start[3:])
    finish = int(end[:2]) * 60 + int(end[3:])
    if begin == finish:  # validation refuses it; an empty window is the safe reading
        return False
    if begin < finish:
        return begin <= minute_of_day < finish
    return minute_of_day >= begin or minute_of_day < finish
