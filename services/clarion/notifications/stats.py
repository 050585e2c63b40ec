"""Delivery statistics over a time window (GetDeliveryStats, `clarion deliveries --stats`): one grouped query.

The window holds the deliveries created in it (`ix_deliveries_created`). One statement with GROUPING SETS gives the
totals, each channel's slice and each provider's slice together: counts by status with FILTER, and the time to send
— the delivery's `sent_at` minus its notification's acceptance — as continuous percentiles over the sent ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.delivery.lifecycle import DeliveryStatus
from clarion.notifications import models as m

# Every status a delivery can have, in the order reports print them.
STATUSES = (
    DeliveryStatus.QUEUED,
    DeliveryStatus.SENDING,
    DeliveryStatus.RETRYING,
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SKIPPED,
    DeliveryStatus.CANCELLED,
)


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """One slice of the window: the totals (channel and provider empty), a channel's, or a provider's."""

    channel: str
    provider: str
    counts: dict[str, int]
    time_to_send_p50_s: float | None
    time_to_send_p95_s: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def success_rate(self) -> float:
        """sent / (sent + failed); 0 when nothing has finished."""
        finished = self.counts[DeliveryStatus.SENT] + self.counts[DeliveryStatus.FAILED]
        return self.counts[DeliveryStatus.SENT] / finished if finished else 0.0


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """The window, its totals, and its channel and provider slices (sorted by name)."""

    start: datetime
    end: datetime
    totals: StatsGroup
    channels: list[StatsGroup] = field(default_factory=list)
    providers: list[StatsGroup] = field(default_factory=list)


def _empty_group() -> StatsGroup:
    return StatsGroup("", "", dict.fromkeys(STATUSES, 0), None, None)


async def delivery_stats(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    channel: str = "",
    provider: str = "",
    project: str | None,
) -> DeliveryStats:
    """Statistics of the deliveries created in [start, end), optionally only one channel's or one provider's, of
    one project (None: of every project)."""
    d, n = m.DeliveryRow, m.NotificationRow
    seconds = func.extract("epoch", d.sent_at - n.created_at)
    sent = d.status == DeliveryStatus.SENT
    query = (
        select(
            func.grouping(d.channel).label("by_channel"),
            func.grouping(d.provider).label("by_provider"),
            d.channel,
            d.provider,
            *(func.count().filter(d.status == status).label(status) for status in STATUSES),
            func.percentile_cont(0.5).within_group(seconds).filter(sent).label("p50"),
            func.percentile_cont(0.95).within_group(seconds).filter(sent).label("p95"),
        )
        .join(n, n.id == d.notification_id)
        .where(d.created_at >= start, d.created_at < end)
        .group_by(func.grouping_sets(text("()"), tuple_(d.channel), tuple_(d.provider)))
    )
    if channel:
        query = query.where(d.channel == channel)
    if provider:
        query = query.where(d.provider == provider)
    if project is not None:
        query = query.where(n.project_id == project)
    totals = _empty_group()
    channels: list[StatsGroup] = []
    providers: list[StatsGroup] = []
    for row in (await session.execute(query)).mappings():
        by_channel, by_provider = not row["by_channel"], not row["by_provider"]
        if by_provider and not row["provider"]:
            continue  # deliveries no provider has handled yet (queued, skipped): in the totals only
        group = StatsGroup(
            channel=row["channel"] if by_channel else "",
            provider=row["provider"] if by_provider else "",
            counts={status: int(row[status]) for status in STATUSES},
            time_to_send_p50_s=_seconds(row["p50"]),
            time_to_send_p95_s=_seconds(row["p95"]),
        )
        if by_channel:
            channels.append(group)
        elif by_provider:
            providers.append(group)
        else:
            totals = group
    return DeliveryStats(
        start=start,
        end=end,
        totals=totals,
        channels=sorted(channels, key=lambda g: g.channel),
        providers=sorted(providers, key=lambda g: g.provider),
    )


def _seconds(value: object) -> float | None:
    return None if value is None else max(0.0, float(value))  # type: ignore[arg-type]


def format_stats(stats: DeliveryStats) -> str:
    """A fixed-width table: the totals, then each channel, then each provider."""
    header = (
        f"{'SLICE':<18} {'TOTAL':>7} "
        + " ".join(f"{s.upper():>9}" for s in STATUSES)
        + f" {'SUCCESS':>8} {'P50':>9} {'P95':>9}"
    )
    window = f"deliveries created {stats.start:%Y-%m-%d %H:%M:%S} to {stats.end:%Y-%m-%d %H:%M:%S} UTC"
    out = [window, header]
    slices = [("all", stats.totals)]
    slices += [(f"channel {g.channel}", g) for g in stats.channels]
    slices += [(f"provider {g.provider}", g) for g in stats.providers]
    for name, group in slices:
        rate = (
            f"{group.success_rate * 100:.2f}%"
            if group.counts[DeliveryStatus.SENT] + group.counts[DeliveryStatus.FAILED]
            else "-"
        )
        out.append(
            f"{name:<18} {group.total:>7} "
            + " ".join(f"{group.counts[s]:>9}" for s in STATUSES)
            + f" {rate:>8} {_duration(group.time_to_send_p50_s):>9} {_duration(group.time_to_send_p95_s):>9}"
        )
    return "\n".join(out)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"
