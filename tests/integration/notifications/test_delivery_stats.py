"""GetDeliveryStats against real PostgreSQL: the figures it gives equal those computed here from the same rows, for
the whole window, each channel and each provider, with filters; bad windows and filters are INVALID_ARGUMENT naming
the field. (Over REST: tests/integration/gateway/test_rest_delivery_stats.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2

from clarion.notifications import models as m
from clarion.v1 import common_pb2, notifications_pb2
from tests.helpers import notification_row
from tests.integration.conftest import RunningClarion
from tests.integration.users.test_user_service import rpc_error, violations

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW_START = NOW - timedelta(hours=6)
PROVIDERS = {"email": ("sendgrid", "smtp"), "push": ("fcm",)}
STATUSES = ("queued", "sending", "retrying", "sent", "failed", "skipped", "cancelled")


@dataclass(frozen=True)
class Row:
    """What the test inserted for one delivery."""

    channel: str
    provider: str
    status: str
    created_at: datetime
    time_to_send_s: float | None


def percentile(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected(rows: Iterable[Row]) -> dict[str, object]:
    """The figures of a slice, computed from the rows the test wrote."""
    chosen = list(rows)
    counts = {status: sum(1 for r in chosen if r.status == status) for status in STATUSES}
    times = [r.time_to_send_s for r in chosen if r.status == "sent" and r.time_to_send_s is not None]
    finished = counts["sent"] + counts["failed"]
    return {
        "total": len(chosen),
        **counts,
        "success_rate": counts["sent"] / finished if finished else 0.0,
        "p50": percentile(times, 0.5) if times else None,
        "p95": percentile(times, 0.95) if times else None,
    }


def actual(group: notifications_pb2.DeliveryStatsGroup) -> dict[str, object]:
    def seconds(field: str) -> float | None:
        return getattr(group, field).ToTimedelta().total_seconds() if group.HasField(field) else None

    return {
        "total": group.total,
        **{status: getattr(group, status) for status in STATUSES},
        "success_rate": group.success_rate,
        "p50": seconds("time_to_send_p50"),
        "p95": seconds("time_to_send_p95"),
    }


def assert_matches(group: notifications_pb2.DeliveryStatsGroup, rows: Iterable[Row]) -> None:
    want, got = expected(rows), actual(group)
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-3), key
        else:
            assert got[key] == value, key


async def insert(clarion: RunningClarion, rows: list[Row]) -> None:
    """One notification per row, accepted `time_to_send_s` before its delivery was sent."""
    async with clarion.resources.sessions.begin() as session:
        for row in rows:
            sent_at = row.created_at + timedelta(seconds=1) if row.status == "sent" else None
            accepted_at = sent_at - timedelta(seconds=row.time_to_send_s or 0) if sent_at else row.created_at
            notification_id = uuid.uuid4()
            session.add(
                notification_row(id=notification_id, user_id="stats-user", send_at=accepted_at, created_at=accepted_at)
            )
            await session.flush()
            session.add(
                m.DeliveryRow(
                    notification_id=notification_id,
                    channel=row.channel,
                    status=row.status,
                    payload={},
                    due_at=row.created_at,
                    provider=row.provider,
                    sent_at=sent_at,
                    created_at=row.created_at,
                    updated_at=row.created_at,
                )
            )


def random_rows(count: int, *, seed: int) -> list[Row]:
    chance = random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography
    rows = []
    for _ in range(count):
        channel = chance.choice(["email", "push"])
        status = chance.choices(STATUSES, weights=[2, 1, 1, 10, 3, 2, 1])[0]
        # Skipped and still-queued deliveries were never handed to a provider.
        provider = "" if status in ("skipped", "queued") else chance.choice(PROVIDERS[channel])
        created_at = WINDOW_START + timedelta(seconds=chance.uniform(0, 6 * 3600 - 60))
        rows.append(Row(channel, provider, status, created_at, round(chance.uniform(0.05, 900), 3)))
    return rows


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    proto = timestamp_pb2.Timestamp()
    proto.FromDatetime(value)
    return proto


def window(**fields: object) -> notifications_pb2.GetDeliveryStatsRequest:
    return notifications_pb2.GetDeliveryStatsRequest(
        start_time=timestamp(WINDOW_START), end_time=timestamp(NOW), **fields
    )


@pytest.fixture
async def rows(clarion: RunningClarion) -> list[Row]:
    inside = random_rows(120, seed=7)
    # Outside the window on both sides: never counted.
    outside = [
        Row("email", "sendgrid", "sent", WINDOW_START - timedelta(seconds=1), 1.0),
        Row("push", "fcm", "failed", NOW, None),
    ]
    await insert(clarion, inside + outside)
    return inside


async def test_the_figures_match_the_rows_in_total_per_channel_and_per_provider(
    clarion: RunningClarion, rows: list[Row]
) -> None:
    stats = await clarion.notifications.GetDeliveryStats(window(), timeout=10)

    assert stats.start_time == timestamp(WINDOW_START)
    assert stats.end_time == timestamp(NOW)
    assert_matches(stats.totals, rows)
    assert stats.totals.channel == common_pb2.CHANNEL_UNSPECIFIED
    assert stats.totals.provider == ""
    assert [g.channel for g in stats.channels] == [common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_PUSH]
    for group, name in zip(stats.channels, ["email", "push"], strict=True):
        assert_matches(group, (r for r in rows if r.channel == name))
    assert [g.provider for g in stats.providers] == ["fcm", "sendgrid", "smtp"]
    for group in stats.providers:
        assert_matches(group, (r for r in rows if r.provider == group.provider))


@pytest.mark.parametrize(
    ("fields", "keep"),
    [
        ({"channel": common_pb2.CHANNEL_EMAIL}, lambda r: r.channel == "email"),
        ({"provider": "fcm"}, lambda r: r.provider == "fcm"),
        ({"channel": common_pb2.CHANNEL_PUSH, "provider": "sendgrid"}, lambda r: False),
    ],
)
async def test_filters_narrow_every_figure(
    clarion: RunningClarion, rows: list[Row], fields: dict[str, object], keep: Callable[[Row], bool]
) -> None:
    stats = await clarion.notifications.GetDeliveryStats(window(**fields), timeout=10)

    assert_matches(stats.totals, filter(keep, rows))


async def test_the_default_window_is_the_last_24_hours(clarion: RunningClarion) -> None:
    await insert(
        clarion,
        [
            Row("email", "sendgrid", "sent", NOW - timedelta(hours=23), 2.0),
            Row("email", "sendgrid", "failed", NOW - timedelta(hours=25), None),
        ],
    )
    stats = await clarion.notifications.GetDeliveryStats(notifications_pb2.GetDeliveryStatsRequest(), timeout=10)

    assert (stats.totals.total, stats.totals.sent, stats.totals.failed) == (1, 1, 0)
    assert stats.totals.success_rate == 1.0
    span = stats.end_time.ToDatetime() - stats.start_time.ToDatetime()
    assert span == timedelta(hours=24)


async def test_an_empty_window_has_zeros_and_no_times(clarion: RunningClarion) -> None:
    stats = await clarion.notifications.GetDeliveryStats(window(), timeout=10)

    assert stats.totals.total == 0
    assert stats.totals.success_rate == 0.0
    assert not stats.totals.HasField("time_to_send_p50")
    assert list(stats.channels) == []
    assert list(stats.providers) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"start_time": timestamp(NOW), "end_time": timestamp(NOW - timedelta(hours=1))}, "end_time"),
        ({"start_time": timestamp(NOW - timedelta(days=400)), "end_time": timestamp(NOW)}, "start_time"),
        ({"provider": "Send Grid"}, "provider"),
        ({"channel": 42}, "channel"),
        ({"end_time": timestamp_pb2.Timestamp(seconds=10**12)}, "end_time"),
    ],
)
async def test_a_bad_window_or_filter_is_invalid_argument_naming_the_field(
    clarion: RunningClarion, request_fields: dict[str, object], field: str
) -> None:
    code, status = await rpc_error(
        clarion.notifications.GetDeliveryStats(notifications_pb2.GetDeliveryStatsRequest(**request_fields), timeout=10)
    )

    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status)


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    environment["CLARION_DATABASE_URL"] = database_url
    return subprocess.run(
        [str(Path(sys.executable).parent / "clarion"), "deliveries", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


async def test_the_cli_prints_the_same_figures(clarion: RunningClarion, migrated_database: str) -> None:
    await insert(
        clarion,
        [
            Row("email", "sendgrid", "sent", NOW - timedelta(hours=1), 2.0),
            Row("email", "sendgrid", "sent", NOW - timedelta(hours=1), 4.0),
            Row("email", "sendgrid", "failed", NOW - timedelta(hours=1), None),
            Row("push", "", "skipped", NOW - timedelta(hours=1), None),
        ],
    )

    result = await asyncio.to_thread(run_cli, migrated_database, "--stats", "--hours", "3")

    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0].strip(): line.split() for line in result.stdout.splitlines()[2:]}
    # SLICE TOTAL QUEUED SENDING RETRYING SENT FAILED SKIPPED CANCELLED DELIVERED BOUNCED DROPPED SUCCESS P50 P95
    assert lines["all"][1:13] == ["4", "0", "0", "0", "2", "1", "1", "0", "0", "0", "0", "66.67%"]
    assert lines["provider sendgrid"][2:15] == [
        *("3", "0", "0", "0", "2", "1", "0", "0", "0", "0", "0"),
        *("66.67%", "3.0s"),
    ]
    assert lines["channel push"][2:] == ["1", "0", "0", "0", "0", "0", "1", "0", "0", "0", "0", "-", "-", "-"]
    # The same figures for scripts.
    as_json = await asyncio.to_thread(run_cli, migrated_database, "--stats", "--hours", "3", "--json")
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    assert figures["totals"]["total"] == 4
    assert figures["totals"]["counts"]["sent"] == 2
    assert figures["providers"]["sendgrid"]["success_rate"] == pytest.approx(2 / 3)
    assert figures["providers"]["sendgrid"]["time_to_send_p50_s"] == pytest.approx(3.0)
    assert figures["channels"]["push"]["success_rate"] is None
    refused = await asyncio.to_thread(run_cli, migrated_database, "--stats", "--status", "sent")
    assert refused.returncode == 2
    assert "--status does not apply to --stats" in refused.stderr
