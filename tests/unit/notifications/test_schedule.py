"""Quiet hours across time zones and DST transitions: a deferred delivery is never due inside a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.notifications.schedule import quiet_hours_end
from clarion.users.validation import in_quiet_hours

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Lisbon",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Europe/Moscow",
]
times = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 59]))
# Instants spread over years, with extra weight right around DST transitions (early March/April, late Oct/Nov).
instants = st.one_of(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda year, month, day, minute: datetime(year, month, day, tzinfo=UTC) + timedelta(minutes=minute),
        st.integers(2024, 2028),
        st.sampled_from([3, 4, 10, 11]),
        st.integers(1, 28),
        st.integers(0, 48 * 60),
    ),
)


def _local_minute(moment: datetime, zone: str) -> int:
    local = moment.astimezone(ZoneInfo(zone))
    return local.hour * 60 + local.minute


@settings(max_examples=2000, deadline=None)
@given(now=instants, zone=st.sampled_from(ZONES), start=times, end=times)
def test_never_due_inside_a_window(now: datetime, zone: str, start: str, end: str) -> None:
    if start == end:
        return
    due = quiet_hours_end(now, start=start, end=end, timezone=zone)
    inside_now = in_quiet_hours(start, end, _local_minute(now, zone))
    if due is None:
        assert not inside_now
        return
    assert inside_now
    assert due > now
    assert due - now <= timedelta(hours=25), "a window never lasts more than a day (plus a DST hour)"
    assert not in_quiet_hours(start, end, _local_minute(due, zone)), "due inside the window"
    assert due.tzinfo is not None


def test_a_window_wrapping_midnight_ends_the_next_morning_local_time() -> None:
    now = datetime(2026, 11, 25, 23, 30, tzinfo=ZoneInfo("Europe/Lisbon"))
    due = quiet_hours_end(now, start="22:00", end="08:00", timezone="Europe/Lisbon")
    assert due == datetime(2026, 11, 26, 8, 0, tzinfo=ZoneInfo("Europe/Lisbon"))


def test_the_end_of_a_window_on_a_spring_forward_night_is_after_the_gap() -> None:
    # 2026-03-08 in New York: 02:00 jumps to 03:00. A window ending at 02:30 ends at 03:00 local.
    now = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # 01:00 EST
    due = quiet_hours_end(now, start="22:00", end="02:30", timezone="America/New_York")
    assert due == datetime(2026, 3, 8, 3, 0, tzinfo=ZoneInfo("America/New_York"))


def test_outside_the_window_nothing_is_deferred() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert quiet_hours_end(now, start="22:00", end="08:00", timezone="UTC") is None
