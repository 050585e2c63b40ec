"""`clarion deliveries`: recent deliveries with their attempts and last error, for operators (the seed system's
check_email_logs.py). The query: clarion.delivery.store.reads."""

from __future__ import annotations

import json

from clarion.delivery.store.reads import DeliveryLine


def format_report(lines: list[DeliveryLine]) -> str:
    """A fixed-width table, one delivery per line."""
    header = f"{'UPDATED (UTC)':<20} {'DELIVERY':<36} {'CHANNEL':<7} {'STATUS':<10} {'TRIES':>5} {'PROVIDER':<9} ERROR"
    out = [header]
    for line in lines:
        out.append(
            f"{line.updated_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {line.delivery_id:<36} {line.channel:<7} "
            f"{line.status:<10} {line.attempts:>5} {line.provider or '-':<9} {line.last_error[:80]}"
        )
    if not lines:
        out.append("(no deliveries)")
    return "\n".join(out)


def report_json(lines: list[DeliveryLine]) -> str:
    """`clarion deliveries --json`: the table's rows as objects, the time in ISO 8601 UTC."""
    return json.dumps(
        [
            {
                "updated": line.updated_at.isoformat(),
                "notification_id": line.notification_id,
                "delivery_id": line.delivery_id,
                "channel": line.channel,
                "status": line.status,
                "attempts": line.attempts,
                "provider": line.provider or None,
                "last_error": line.last_error or None,
            }
            for line in lines
        ],
        indent=2,
    )
