"""The delivery store: every statement on notifications, idempotency keys, deliveries and delivery attempts, on the
plain asyncpg pool (core.db.FastPath). Nothing else in Clarion names these tables; the statuses in the statements
come from the lifecycle's enums (clarion.delivery.lifecycle). The ORM models (notifications/models.py) describe the
schema for the migrations and nothing more.

- `accept`: record a notification with its idempotency key; find and prune keys.
- `relay`: the dispatcher's claims (due notifications, due unpublished deliveries) and what it writes back.
- `outcomes`: the workers' claims and outcomes, and the sweeper's releases.
- `reads`: what the API and the operators' commands read (a notification's view, lists, dead letters, stats).
- `control`: the clients' changes (cancel, replay a dead letter).
- `reports`: what providers report after they accepted a delivery (delivered, bounced, dropped).

Lock order, for every transaction that locks more than one row: notifications before deliveries, and several rows
of one table in id order. The dispatcher's and the sweeper's claims take rows with SKIP LOCKED and so never wait; a
worker's claim locks its batch's deliveries in id order and nothing else. A transaction that writes a delivery and
then its notification's status (a worker's outcome, a cancel, a replay) locks the notification first: two of them
on one notification's email and push then see each other's committed status, and none can deadlock another.
"""

from clarion.delivery.store.accept import Accepted, KeyHolder, find_key, find_keys, insert_notifications, prune_keys
from clarion.delivery.store.control import cancel, replay
from clarion.delivery.store.outcomes import (
    Attempt,
    Claimed,
    Outcome,
    claim_many,
    finish_many,
    release_expired_leases,
    republish_stale,
)
from clarion.delivery.store.reads import (
    AttemptRecord,
    DeadLetterRecord,
    DeliveryLine,
    DeliveryRecord,
    DeliveryStats,
    NotificationRecord,
    NotificationView,
    StatsGroup,
    dead_letters,
    delivery_stats,
    get_view,
    get_views,
    list_views,
    notification_project,
    recent_deliveries,
)
from clarion.delivery.store.relay import (
    DISPATCH_CHANNEL,
    Deferred,
    DueNotification,
    NewDelivery,
    Rechecked,
    Unpublished,
    claim_due,
    claim_unpublished,
    deferred_due,
    record_dispatch,
    record_rechecks,
    relay_backlog,
    set_published,
)
from clarion.delivery.store.reports import Report, Reported, apply_reports

__all__ = [
    "DISPATCH_CHANNEL",
    "Accepted",
    "Attempt",
    "AttemptRecord",
    "Claimed",
    "DeadLetterRecord",
    "Deferred",
    "DeliveryLine",
    "DeliveryRecord",
    "DeliveryStats",
    "DueNotification",
    "KeyHolder",
    "NewDelivery",
    "NotificationRecord",
    "NotificationView",
    "Outcome",
    "Rechecked",
    "Report",
    "Reported",
    "StatsGroup",
    "Unpublished",
    "apply_reports",
    "cancel",
    "claim_due",
    "claim_many",
    "claim_unpublished",
    "dead_letters",
    "deferred_due",
    "delivery_stats",
    "find_key",
    "find_keys",
    "finish_many",
    "get_view",
    "get_views",
    "insert_notifications",
    "list_views",
    "notification_project",
    "prune_keys",
    "recent_deliveries",
    "record_dispatch",
    "record_rechecks",
    "relay_backlog",
    "release_expired_leases",
    "replay",
    "republish_stale",
    "set_published",
]
