"""The delivery lifecycle in one place: the statuses of notifications, deliveries and attempts (stored as these
strings, shown as the contracts' enums), every legal move between them and the component that makes it, who moves
each unfinished status forward and how long a row may wait in it, and the decisions as pure functions (how an
attempt settles a delivery; a notification's status from its deliveries').

A notification is accepted and planned at once into one delivery per channel (QUEUED, or SKIPPED with a reason;
the notification ACCEPTED, or SCHEDULED for later); the dispatcher publishes the queued ones as they fall due,
checking a deferred one again first; a channel's worker claims a delivery (SENDING, under a lease) and settles it
with the provider's answer (SENT, RETRYING, FAILED). The sweeper is the watchdog: a lease that runs out, or a
published message nobody claims, goes back to QUEUED. Clients cancel what has not started and replay what failed.
docs/delivery-guarantees.md tells the story; this module is its contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

from clarion.v1 import notifications_pb2


class _Contracted(StrEnum):
    """A value stored as its lowercase name and shown as the contracts' enum value `<PREFIX><NAME>`."""

    @property
    def proto(self) -> Any:
        """The contracts' enum value."""
        return _PROTO_VALUES[type(self), self.value]

    @classmethod
    def from_proto(cls, value: int) -> Self | None:
        """The member a contracts' enum value stands for; None for UNSPECIFIED or a value this version lacks."""
        return next((member for member in cls if _PROTO_VALUES[cls, member.value] == value), None)

    @classmethod
    def proto_of(cls, stored: str) -> Any:
        """The contracts' value of a stored one; UNSPECIFIED (0) for a value this version does not know (a row a
        newer version wrote, read after a rollback), so that a read still answers."""
        return _PROTO_VALUES.get((cls, stored), 0)


class NotificationStatus(_Contracted):
    """Where a notification stands. The first two wait for the dispatcher; the rest are derived from the
    notification's deliveries (derive_notification_status), except CANCELLED before dispatch."""

    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    IN_PROGRESS = "in_progress"
    SENT = "sent"
    PARTIALLY_SENT = "partially_sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class DeliveryStatus(_Contracted):
    """Where one channel's delivery stands."""

    QUEUED = "queued"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    # What the provider reported after it accepted the message (clarion.events): SENT moves on to these.
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"


class AttemptOutcome(_Contracted):
    """What one provider call came to. UNKNOWN: the request may have reached the provider but no answer was
    recorded (a timeout, or a worker that stopped first); retried like a transient failure, it is what accounts
    for a duplicate send."""

    SUCCEEDED = "succeeded"
    TRANSIENT_FAILURE = "transient_failure"
    PERMANENT_FAILURE = "permanent_failure"
    UNKNOWN = "unknown"


# Each member's contracts' value, found once by name (`<PREFIX><NAME>`). Keyed by class and value: members of
# different classes with the same value ("sent") are equal strings.
_PROTO_VALUES: Mapping[tuple[type, str], int] = {
    (members, member.value): enum.Value(prefix + member.name)
    for members, enum, prefix in (
        (NotificationStatus, notifications_pb2.NotificationStatus, "NOTIFICATION_STATUS_"),
        (DeliveryStatus, notifications_pb2.DeliveryStatus, "DELIVERY_STATUS_"),
        (AttemptOutcome, notifications_pb2.AttemptOutcome, "ATTEMPT_OUTCOME_"),
    )
    for member in members
}


def sql(*values: StrEnum) -> str:
    """The values as SQL string literals, comma-separated (`'queued', 'retrying'`), for the statements that name
    statuses: written from the enums, so no status is spelled anywhere but here."""
    return ", ".join(f"'{value.value}'" for value in values)


PENDING_NOTIFICATION_STATUSES = (NotificationStatus.ACCEPTED, NotificationStatus.SCHEDULED)
# Final: no component owns them, though a provider's report still moves SENT on (and DELIVERED to BOUNCED).
FINAL_DELIVERY_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.SKIPPED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.DELIVERED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.DROPPED,
    }
)
# What a notification's status counts as sent, and as failed.
REACHED_DELIVERY_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.DELIVERED})
REFUSED_DELIVERY_STATUSES = frozenset({DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.DROPPED})
UNFINISHED_DELIVERY_STATUSES = frozenset(DeliveryStatus) - FINAL_DELIVERY_STATUSES


class Component(StrEnum):
    """Who changes statuses. Each is one place in the code (named below)."""

    ACCEPT = "accept"  # SendNotification (notifications/servicer.py, delivery/planning.py): plans the deliveries
    DISPATCHER = "dispatcher"  # notifications/dispatcher.py: publishes due deliveries, checks deferred ones again
    WORKER = "worker"  # delivery/consumer.py (statements: store/outcomes.py): claims and settles deliveries
    SWEEPER = "sweeper"  # delivery/sweeper.py: takes back what nothing works on any more
    CLIENT = "client"  # CancelNotification, ReplayDeadLetters
    PROVIDER = "provider"  # clarion/events: what a provider reports about a message it accepted (SendGrid's events)


@dataclass(frozen=True, slots=True)
class Move:
    """One legal change of a delivery's status (`before` None: the delivery is created), and who makes it."""

    before: DeliveryStatus | None
    after: DeliveryStatus
    by: Component
    why: str


_D = DeliveryStatus
# Every way a delivery's status may change. A change not listed here is a bug (`check_delivery_move`).
DELIVERY_MOVES: tuple[Move, ...] = (
    Move(None, _D.QUEUED, Component.ACCEPT, "planned: the channel applies, now or when quiet hours end"),
    Move(None, _D.SKIPPED, Component.ACCEPT, "planned: no address, no device, the channel off, no content"),
    # Notifications an earlier release accepted without planning them are planned by the dispatcher.
    Move(None, _D.QUEUED, Component.DISPATCHER, "planned late: accepted by an earlier release"),
    Move(None, _D.SKIPPED, Component.DISPATCHER, "planned late: accepted by an earlier release"),
    Move(_D.QUEUED, _D.SKIPPED, Component.DISPATCHER, "deferred, then due: the channel switched off, the user gone"),
    Move(_D.QUEUED, _D.QUEUED, Component.DISPATCHER, "deferred, then due: checked again (published, or quiet)"),
    Move(_D.QUEUED, _D.SENDING, Component.WORKER, "claimed from its message, under a lease"),
    Move(_D.RETRYING, _D.SENDING, Component.WORKER, "claimed when its retry message comes back"),
    Move(_D.SENDING, _D.SENT, Component.WORKER, "the provider accepted it"),
    Move(_D.SENDING, _D.RETRYING, Component.WORKER, "a transient failure, attempts left"),
    Move(_D.SENDING, _D.FAILED, Component.WORKER, "a permanent failure, or the last attempt failed"),
    # The worker answered after the sweeper took its lease back, and nobody has claimed the delivery since: the
    # answer still counts (a RETRYING one leaves it QUEUED: its new message is already on the way).
    Move(_D.QUEUED, _D.SENT, Component.WORKER, "a late answer: sent"),
    Move(_D.QUEUED, _D.FAILED, Component.WORKER, "a late answer: failed"),
    Move(_D.SENDING, _D.QUEUED, Component.SWEEPER, "the lease ran out: the worker stopped mid-send"),
    Move(_D.QUEUED, _D.QUEUED, Component.SWEEPER, "published long ago and never claimed: published again"),
    Move(_D.RETRYING, _D.QUEUED, Component.SWEEPER, "its retry message never came back: published again"),
    # A delivery the sweeper took back from a worker that stopped may have been sent already: a cancel then wins,
    # and the worker's late answer changes nothing but the attempt log.
    Move(_D.QUEUED, _D.CANCELLED, Component.CLIENT, "cancelled before a worker claimed it (again)"),
    Move(_D.RETRYING, _D.CANCELLED, Component.CLIENT, "cancelled between attempts"),
    Move(_D.FAILED, _D.QUEUED, Component.CLIENT, "a dead letter replayed"),
    Move(_D.SENT, _D.DELIVERED, Component.PROVIDER, "the recipient's server accepted it"),
    Move(_D.SENT, _D.BOUNCED, Component.PROVIDER, "the recipient's server refused it"),
    Move(_D.SENT, _D.DROPPED, Component.PROVIDER, "the provider dropped it without trying"),
    # A bounce can come after the delivery was reported (an asynchronous bounce): the later report wins.
    Move(_D.DELIVERED, _D.BOUNCED, Component.PROVIDER, "refused after all: an asynchronous bounce"),
)
_LEGAL = {(move.before, move.after, move.by): move for move in DELIVERY_MOVES}


class IllegalMove(ValueError):
    """A status change the lifecycle does not allow: a bug in the code that asked for it."""


def check_delivery_move(before: DeliveryStatus | None, after: DeliveryStatus, by: Component) -> Move:
    """The legal move from `before` to `after` made by `by`; IllegalMove for any other."""
    move = _LEGAL.get((before, after, by))
    if move is None:
        raise IllegalMove(f"a delivery may not go from {before or 'nothing'} to {after} by {by}")
    return move


@dataclass(frozen=True, slots=True)
class Owner:
    """The one component that moves an unfinished status forward, and the bound on how long a row may stay in it:
    the settings it is made of, and how the bound is kept when the owner does not keep it."""

    by: Component
    bound: str
    settings: tuple[str, ...]
    watchdog: Component | None = None


# Every unfinished status, its owner and its bound. A test walks every status: each unfinished one is here, and
# each is left by a move its owner makes.
NOTIFICATION_OWNERS: Mapping[NotificationStatus, Owner] = {
    NotificationStatus.ACCEPTED: Owner(
        Component.WORKER,
        "moved on by the first outcome of its deliveries, each bound by its own status's bound; one an earlier "
        "release accepted without deliveries is planned by the dispatcher within LEGACY_EVERY passes",
        ("dispatch_poll_interval_s",),
    ),
    NotificationStatus.SCHEDULED: Owner(
        Component.DISPATCHER,
        "its deliveries fall due at send_at: the dispatcher checks them again within a poll interval and moves the "
        "notification on (IN_PROGRESS, or SKIPPED when no channel applies any more)",
        ("dispatch_poll_interval_s",),
    ),
    NotificationStatus.IN_PROGRESS: Owner(
        Component.WORKER, "settled when its last delivery is; each delivery's bound holds", ()
    ),
}
DELIVERY_OWNERS: Mapping[DeliveryStatus, Owner] = {
    DeliveryStatus.QUEUED: Owner(
        Component.WORKER,
        "published by the relay once due (within a poll interval while the broker answers), then claimed; "
        "published again by the sweeper when unclaimed past due_at + republish_after",
        ("dispatch_poll_interval_s", "delivery_republish_after_s", "sweeper_interval_s"),
        watchdog=Component.SWEEPER,
    ),
    DeliveryStatus.SENDING: Owner(
        Component.WORKER,
        "settled within the lease; taken back by the sweeper when the lease runs out (after a database outage, one "
        "lease later: workers that held outcomes through it record them first)",
        ("delivery_lease_s", "sweeper_interval_s"),
        watchdog=Component.SWEEPER,
    ),
    DeliveryStatus.RETRYING: Owner(
        Component.WORKER,
        "claimed when its retry message comes back; published again by the sweeper past due_at + republish_after",
        ("delivery_republish_after_s", "sweeper_interval_s"),
        watchdog=Component.SWEEPER,
    ),
}


def settle(
    outcome: AttemptOutcome, *, attempt: int, max_attempts: int, partial_success: bool = False
) -> DeliveryStatus:
    """The status a claimed delivery settles at after its attempt number `attempt` came to `outcome`: SENT on
    success; RETRYING after a transient or unknown failure with attempts left; else FAILED, or SENT when some of
    its messages went out (a push to several devices, some of them gone)."""
    if attempt < 1 or max_attempts < 1:
        raise ValueError(f"attempt {attempt} of {max_attempts}: both start at 1")
    if outcome is AttemptOutcome.SUCCEEDED:
        return DeliveryStatus.SENT
    retryable = outcome in (AttemptOutcome.TRANSIENT_FAILURE, AttemptOutcome.UNKNOWN)
    if retryable and attempt < max_attempts:
        return DeliveryStatus.RETRYING
    return DeliveryStatus.SENT if partial_success else DeliveryStatus.FAILED


def derive_notification_status(delivery_statuses: Iterable[str], *, reason: str = "") -> NotificationStatus:
    """A dispatched notification's status from its deliveries'. Unfinished deliveries make it IN_PROGRESS;
    otherwise it is judged by the deliveries that were attempted (sent or failed); with none attempted it is
    CANCELLED if any delivery was, else SKIPPED. No deliveries at all is FAILED when there is a reason (the user or
    the template was gone), else SKIPPED."""
    # A status this version does not know (written by a newer one, before a rollback) is left out, not guessed at.
    known = {status.value for status in DeliveryStatus}
    statuses = [DeliveryStatus(status) for status in delivery_statuses if status in known]
    if not statuses:
        return NotificationStatus.FAILED if reason else NotificationStatus.SKIPPED
    if UNFINISHED_DELIVERY_STATUSES.intersection(statuses):
        return NotificationStatus.IN_PROGRESS
    sent = sum(status in REACHED_DELIVERY_STATUSES for status in statuses)
    failed = sum(status in REFUSED_DELIVERY_STATUSES for status in statuses)
    if sent and failed:
        return NotificationStatus.PARTIALLY_SENT
    if sent:
        return NotificationStatus.SENT
    if failed:
        return NotificationStatus.FAILED
    return NotificationStatus.CANCELLED if DeliveryStatus.CANCELLED in statuses else NotificationStatus.SKIPPED
