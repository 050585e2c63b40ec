"""Property tests for the user field validators."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.core.validation import Violations, normalize_language_tag
from clarion.users import validation

times = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))
minutes = st.integers(0, 24 * 60 - 1)


def _minute(hh_mm: str) -> int:
    return int(hh_mm[:2]) * 60 + int(hh_mm[3:])


@given(start=times, end=times, now=minutes)
def test_quiet_window_membership_matches_a_walk_around_the_clock(start: str, end: str, now: int) -> None:
    expected = False
    minute = _minute(start)
    while minute != _minute(end):  # walk from start (inclusive) to end (exclusive), wrapping at midnight
        if minute == now:
            expected = True
            break
        minute = (minute + 1) % (24 * 60)
    assert validation.in_quiet_hours(start, end, now) is expected


@given(now=minutes)
def test_no_window_is_never_quiet(now: int) -> None:
    assert validation.in_quiet_hours("", "", now) is False


@given(start=times, end=times)
def test_well_formed_windows_validate_and_equal_ends_do_not(start: str, end: str) -> None:
    violations = Violations()
    validation.check_quiet_hours(start, end, "p", violations)
    assert bool(violations.items) is (start == end)


@given(value=st.text(max_size=8))
def test_quiet_hours_reject_anything_but_hh_mm(value: str) -> None:
    violations = Violations()
    validation.check_quiet_hours(value, "08:00", "p", violations)
    well_formed = len(value) == 5 and value[2] == ":" and value[:2].isdigit() and value[3:].isdigit()
    valid = well_formed and int(value[:2]) < 24 and int(value[3:]) < 60 and value.isascii() and value != "08:00"
    assert (not violations.items) is valid


@given(
    country=st.sampled_from(["+1415555", "+44207946", "+35191234", "+4930123"]),
    rest=st.text(string.digits, min_size=3, max_size=4),
)
def test_phone_normalization_is_idempotent(country: str, rest: str) -> None:
    first = Violations()
    normalized = validation.normalize_phone(country + rest, "phone", first)
    if first.items:
        return
    again = Violations()
    assert validation.normalize_phone(normalized, "phone", again) == normalized
    assert not again.items
    assert normalized.startswith("+")
    assert normalized[1:].isdigit()


@given(value=st.text(max_size=40))
@settings(max_examples=300)
def test_validators_never_raise_and_refuse_line_breaks(value: str) -> None:
    for normalize in (validation.normalize_email, validation.normalize_phone, normalize_language_tag):
        violations = Violations()
        result = normalize(value, "f", violations)
        if any(c in value for c in "\r\n\x00"):
            assert violations.items
        if violations.items:
            assert result == ""
    violations = Violations()
    validation.check_timezone(value, "tz", violations)


@given(
    local=st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20),
    domain=st.text(string.ascii_letters, min_size=1, max_size=20),
)
def test_email_normalization_is_idempotent_and_lowercases_the_domain(local: str, domain: str) -> None:
    violations = Violations()
    normalized = validation.normalize_email(f"{local}@{domain}.com", "email", violations)
    assert not violations.items
    assert normalized == f"{local}@{domain.lower()}.com"
    assert validation.normalize_email(normalized, "email", Violations()) == normalized


@pytest.mark.parametrize(("tag", "canonical"), [("pt-br", "pt-BR"), ("EN", "en"), ("zh-hant-tw", "zh-Hant-TW")])
def test_language_tags_are_canonicalized(tag: str, canonical: str) -> None:
    assert normalize_language_tag(tag, "lang", Violations()) == canonical
