"""`clarion deliveries`: recent deliveries with their attempts and last error, for operators (the seed system's
check_email_logs.py). The query: clarion.delivery.store.reads."""

from __future__ import annotations

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
