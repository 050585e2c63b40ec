"""The delivery lifecycle's contract without a database: the statuses against the protos, every legal move and
every illegal one, an owner and a bound for every unfinished status, and the two decisions (settling an attempt,
deriving a notification's status)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from clarion.core.config import Settings
from clarion.delivery.lifecycle import (
    DELIVERY_MOVES,
    DELIVERY_OWNERS,
    FINAL_DELIVERY_STATUSES,
    NOTIFICATION_OWNERS,
    AttemptOutcome,
    Component,
    DeliveryStatus,
    IllegalMove,
    NotificationStatus,
    check_delivery_move,
    derive_notification_status,
    settle,
)
from clarion.v1 import notifications_pb2

D, N, A = DeliveryStatus, NotificationStatus, AttemptOutcome


@pytest.mark.parametrize(
    ("statuses", "proto_enum", "prefix"),
    [
        (NotificationStatus, notifications_pb2.NotificationStatus, "NOTIFICATION_STATUS_"),
        (DeliveryStatus, notifications_pb2.DeliveryStatus, "DELIVERY_STATUS_"),
        (AttemptOutcome, notifications_pb2.AttemptOutcome, "ATTEMPT_OUTCOME_"),
    ],
)
def test_each_status_is_one_value_of_the_contracts_and_each_value_one_status(
    statuses: Any, proto_enum: Any, prefix: str
) -> None:
    names = {name.removeprefix(prefix) for name in proto_enum.keys() if not name.endswith("_UNSPECIFIED")}  # noqa: SIM118
    assert {status.name for status in statuses} == names, "a value added to the contracts needs a status here"
    for status in statuses:
        assert status.proto == proto_enum.Value(prefix + status.name)
        assert status.value == status.name.lower(), "stored as the lowercase name"


def test_statuses_come_back_from_the_contracts_and_unspecified_is_none() -> None:
    for status in NotificationStatus:
        assert NotificationStatus.from_proto(status.proto) is status
    for delivery in DeliveryStatus:
        assert DeliveryStatus.from_proto(delivery.proto) is delivery
    assert NotificationStatus.from_proto(notifications_pb2.NOTIFICATION_STATUS_UNSPECIFIED) is None
    assert DeliveryStatus.from_proto(999) is None


def test_every_legal_move_is_allowed_and_every_other_refused() -> None:
    legal = {(move.before, move.after, move.by) for move in DELIVERY_MOVES}
    assert len(legal) == len(DELIVERY_MOVES), "no move listed twice"
    for before, after, by in itertools.product([None, *DeliveryStatus], DeliveryStatus, Component):
        if (before, after, by) in legal:
            assert check_delivery_move(before, after, by).by is by
        else:
            with pytest.raises(IllegalMove):
                check_delivery_move(before, after, by)


def test_nothing_leaves_a_final_status_but_a_replayed_dead_letter_or_a_providers_report() -> None:
    for move in DELIVERY_MOVES:
        if move.before in FINAL_DELIVERY_STATUSES and move.by is not Component.PROVIDER:
            assert (move.before, move.after, move.by) == (D.FAILED, D.QUEUED, Component.CLIENT)
    # A provider's report only refines a sent delivery: it never sends, retries or revives one.
    reported = {(move.before, move.after) for move in DELIVERY_MOVES if move.by is Component.PROVIDER}
    assert reported == {
        (D.SENT, D.DELIVERED),
        (D.SENT, D.BOUNCED),
        (D.SENT, D.DROPPED),
        (D.DELIVERED, D.BOUNCED),
    }


def test_reported_outcomes_count_as_sent_or_failed() -> None:
    assert derive_notification_status(["delivered", "sent"]) == NotificationStatus.SENT
    assert derive_notification_status(["delivered", "bounced"]) == NotificationStatus.PARTIALLY_SENT
    assert derive_notification_status(["dropped", "skipped"]) == NotificationStatus.FAILED


def test_a_delivery_is_created_queued_or_skipped_when_it_is_planned() -> None:
    created = {(move.after, move.by) for move in DELIVERY_MOVES if move.before is None}
    planners = (Component.ACCEPT, Component.DISPATCHER)  # the dispatcher: notifications of an earlier release
    assert created == {(status, by) for status in (D.QUEUED, D.SKIPPED) for by in planners}


def test_every_unfinished_status_has_one_owner_that_moves_it_on_and_a_bound() -> None:
    settings = set(Settings.model_fields)
    unfinished = set(DeliveryStatus) - FINAL_DELIVERY_STATUSES
    assert set(DELIVERY_OWNERS) == unfinished, "an unfinished delivery status without an owner"
    for status, owner in DELIVERY_OWNERS.items():
        out = {move.after for move in DELIVERY_MOVES if move.before is status and move.by is owner.by}
        assert out - {status}, f"{owner.by} never moves a delivery out of {status}"
        assert owner.bound
        assert owner.settings
        assert set(owner.settings) <= settings, owner.settings
        if owner.watchdog is not None:
            # When the owner does not keep the bound, the watchdog can take the delivery back.
            assert any(move.before is status and move.by is owner.watchdog for move in DELIVERY_MOVES), status
    for moved in DELIVERY_MOVES:
        # Every status a delivery reaches is either final or owned: none is left ownerless.
        assert moved.after in FINAL_DELIVERY_STATUSES or moved.after in DELIVERY_OWNERS
    pending_and_running = {N.ACCEPTED, N.SCHEDULED, N.IN_PROGRESS}
    assert set(NOTIFICATION_OWNERS) == pending_and_running
    for notification_owner in NOTIFICATION_OWNERS.values():
        assert set(notification_owner.settings) <= settings


@pytest.mark.parametrize(
    ("outcome", "attempt", "partial", "expected"),
    [
        (A.SUCCEEDED, 1, False, D.SENT),
        (A.SUCCEEDED, 5, False, D.SENT),
        (A.TRANSIENT_FAILURE, 1, False, D.RETRYING),
        (A.TRANSIENT_FAILURE, 4, False, D.RETRYING),
        (A.TRANSIENT_FAILURE, 5, False, D.FAILED),
        (A.TRANSIENT_FAILURE, 5, True, D.SENT),
        (A.UNKNOWN, 1, False, D.RETRYING),
        (A.UNKNOWN, 5, False, D.FAILED),
        (A.PERMANENT_FAILURE, 1, False, D.FAILED),
        (A.PERMANENT_FAILURE, 1, True, D.SENT),
        (A.PERMANENT_FAILURE, 5, False, D.FAILED),
        # Partial success only decides the end: with attempts left, the devices still to do are retried.
        (A.TRANSIENT_FAILURE, 2, True, D.RETRYING),
        # Claimed again after the last attempt's lease ran out (its outcome unknown): no attempt is left.
        (A.TRANSIENT_FAILURE, 6, False, D.FAILED),
        (A.TRANSIENT_FAILURE, 6, True, D.SENT),
    ],
)
def test_an_attempt_settles_its_delivery(
    outcome: AttemptOutcome, attempt: int, partial: bool, expected: DeliveryStatus
) -> None:
    settled = settle(outcome, attempt=attempt, max_attempts=5, partial_success=partial)
    assert settled is expected
    check_delivery_move(D.SENDING, settled, Component.WORKER)  # always a legal move for the worker


def test_settling_refuses_attempt_numbers_that_cannot_be() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        settle(A.SUCCEEDED, attempt=0, max_attempts=5)


@pytest.mark.parametrize(
    ("deliveries", "reason", "expected"),
    [
        ([], "", N.SKIPPED),
        ([], "user_deleted", N.FAILED),
        (["queued"], "", N.IN_PROGRESS),
        (["sent", "sending"], "", N.IN_PROGRESS),
        (["sent", "retrying"], "", N.IN_PROGRESS),
        (["sent"], "", N.SENT),
        (["sent", "skipped"], "", N.SENT),
        (["sent", "failed"], "", N.PARTIALLY_SENT),
        (["failed", "skipped"], "", N.FAILED),
        (["failed", "cancelled"], "", N.FAILED),
        (["skipped"], "", N.SKIPPED),
        (["skipped", "cancelled"], "", N.CANCELLED),
        (["cancelled", "cancelled"], "", N.CANCELLED),
    ],
)
def test_a_notifications_status_follows_its_deliveries(
    deliveries: list[str], reason: str, expected: NotificationStatus
) -> None:
    assert derive_notification_status(deliveries, reason=reason) is expected


def test_a_delivery_status_of_a_newer_version_is_left_out() -> None:
    # After a rollback, rows may hold statuses this version does not know: they neither crash nor count.
    assert derive_notification_status(["opened"]) is N.SKIPPED
    assert derive_notification_status(["opened", "sent"]) is N.SENT
    assert derive_notification_status(["opened", "queued"]) is N.IN_PROGRESS


def test_no_status_is_spelled_outside_the_lifecycle() -> None:
    # Statuses in Python and in SQL come from the enums (lifecycle.sql for statements); the migrations are history.
    root = Path(__file__).resolve().parents[3] / "services" / "clarion"
    values = {member.value for enum in (NotificationStatus, DeliveryStatus, AttemptOutcome) for member in enum}
    alternatives = "|".join(sorted(values))
    in_sql = re.compile(f"'({alternatives})'")
    # "unknown" is also a word of error messages: only its SQL spelling counts.
    words = "|".join(sorted(values - {"unknown"}))
    in_python = re.compile(f'"({words})"')
    offenders = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        # SendGrid's event names are SendGrid's vocabulary ("delivered", "dropped"), defined in one place.
        if path.name != "lifecycle.py"
        and "migrations" not in path.parts
        and path.relative_to(root) != Path("provider_events/sendgrid.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if in_sql.search(line) or in_python.search(line)
    ]
    assert not offenders, "\n".join(offenders)
