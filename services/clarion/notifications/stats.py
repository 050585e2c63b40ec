"""Delivery statistics as `clarion deliveries --stats` prints them (the query: clarion.delivery.store.reads)."""

from __future__ import annotations

import json
from typing import Any

from clarion.delivery.store.reads import STATUSES, DeliveryStats, StatsGroup


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
        rate = f"{group.success_rate * 100:.2f}%" if group.finished else "-"
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


def stats_json(stats: DeliveryStats) -> str:
    """`clarion deliveries --stats --json`: the window, its totals and each slice, as the table shows them."""

    def group(slice_: StatsGroup) -> dict[str, Any]:
        return {
            "total": slice_.total,
            "counts": {str(status): slice_.counts[status] for status in STATUSES},
            "success_rate": slice_.success_rate if slice_.finished else None,
            "time_to_send_p50_s": slice_.time_to_send_p50_s,
            "time_to_send_p95_s": slice_.time_to_send_p95_s,
        }

    return json.dumps(
        {
            "start": stats.start.isoformat(),
            "end": stats.end.isoformat(),
            "totals": group(stats.totals),
            "channels": {g.channel: group(g) for g in stats.channels},
            "providers": {g.provider: group(g) for g in stats.providers},
        },
        indent=2,
    )
