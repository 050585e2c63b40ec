"""When a delivery is due: now, at `send_at`, or at the end of the user's quiet hours in their time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clarion.users.validation import in_quiet_hours


def _minute_of_day(moment: datetime) -> int:
    return moment.hour * 60 + moment.minute


def quiet_hours_end(now: datetime, *, start: str, end: str, timezone: str) -> datetime | None:
    """If `now` falls inside the daily window [start, end) in `timezone`, the UTC instant the window ends; else None.

    Wall-clock arithmetic in the user's zone, so DST is honoured: a window ending at 08:00 ends at 08:00 local time
    whatever the UTC offset that day. An end time that does not exist that day (skipped by a spring-forward jump)
    resolves to the first instant after the gap.
    """
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    if not in_quiet_hours(start, end, _minute_of_day(local)):
        return None
    end_time = time(int(end[:2]), int(end[3:]))
    end_day = local.date()
    if _minute_of_day(local) >= end_time.hour * 60 + end_time.minute:
        end_day += timedelta(days=1)  # the window wrapped midnight: it ends tomorrow
    candidate = datetime.combine(end_day, end_time, tzinfo=zone)
    # A wall time inside a DST gap round-trips to a different wall time; step past the gap minute by minute.
    while candidate.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != candidate.replace(tzinfo=None):
        candidate += timedelta(minutes=1)
    return candidate.astimezone(UTC)
