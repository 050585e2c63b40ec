"""A notification's status, derived from its deliveries."""

from __future__ import annotations

from collections.abc import Iterable

from clarion.notifications import models as m

_UNFINISHED = {m.QUEUED, m.SENDING, m.RETRYING}


def derive_status(delivery_statuses: Iterable[str], *, reason: str = "") -> str:
    """The notification status for a dispatched notification whose deliveries stand at `delivery_statuses`.

    Unfinished deliveries make it in progress; otherwise it is judged by the deliveries that were attempted (sent or
    failed); with none attempted it is cancelled if any delivery was, else skipped. No deliveries at all with a
    reason (user or template gone) is a failure.
    """
    statuses = list(delivery_statuses)
    if not statuses:
        return m.FAILED_ALL if reason else m.SKIPPED_ALL
    if _UNFINISHED.intersection(statuses):
        return m.IN_PROGRESS
    sent, failed = statuses.count(m.SENT), statuses.count(m.FAILED)
    if sent and failed:
        return m.PARTIALLY_SENT
    if sent:
        return m.SENT_ALL
    if failed:
        return m.FAILED_ALL
    return m.CANCELLED if m.DELIVERY_CANCELLED in statuses else m.SKIPPED_ALL
