"""The scopes: `read` reads everything and changes nothing; GetCaller needs only a valid key; allowed_methods is
what `permits` says, method by method."""

from __future__ import annotations

import pytest

from clarion.keys.scopes import (
    KEY_ONLY_METHODS,
    METHOD_SCOPES,
    READ_METHODS,
    SERVICE_KEY_SCOPES,
    Scope,
    allowed_methods,
    permits,
)
from tests.unit.keys.test_auth import contract_methods

# Every method of the contracts whose name says it changes something.
WRITING_PREFIXES = ("Create", "Update", "Delete", "Add", "Remove", "Send", "BatchSend", "Cancel", "Replay", "Mark")


def every_method() -> list[str]:
    return list(contract_methods())


def test_read_allows_exactly_the_methods_that_change_nothing() -> None:
    read = frozenset({Scope.READ.value})
    for method in every_method():
        name = method.rsplit("/", 1)[1]
        changes = name.startswith(WRITING_PREFIXES)
        assert permits(read, method) is (not changes), method
    assert set(METHOD_SCOPES) >= READ_METHODS


@pytest.mark.parametrize(
    "held",
    [frozenset(), frozenset({Scope.SEND.value}), frozenset({Scope.DEVICES_REMOVE.value}), frozenset({"unknown"})],
)
def test_get_caller_needs_a_key_and_no_scope(held: frozenset[str]) -> None:
    for method in KEY_ONLY_METHODS:
        assert permits(held, method)


def test_read_adds_to_a_narrower_scope_and_admin_holds_read() -> None:
    send_and_read = frozenset({Scope.SEND.value, Scope.READ.value})
    assert permits(send_and_read, "/clarion.v1.UserService/GetUser")
    assert permits(send_and_read, "/clarion.v1.NotificationService/ReplayDeadLetters")
    assert not permits(send_and_read, "/clarion.v1.TemplateService/UpdateTemplate")
    everything = sorted(m.lstrip("/") for m in {*METHOD_SCOPES, *KEY_ONLY_METHODS})
    assert allowed_methods(frozenset({Scope.ADMIN.value})) == everything


def test_allowed_methods_of_a_read_key() -> None:
    read = allowed_methods(frozenset({Scope.READ.value}))
    assert read == sorted(read)
    assert read == sorted([*(m.lstrip("/") for m in READ_METHODS), "clarion.v1.AccessService/GetCaller"])


def test_service_keys_do_not_hold_read() -> None:
    # A leaked service key must stay narrow: it cannot list users or read notifications.
    for scopes in SERVICE_KEY_SCOPES.values():
        assert not permits(frozenset(scopes), "/clarion.v1.UserService/ListUsers")
        assert not permits(frozenset(scopes), "/clarion.v1.NotificationService/ListNotifications")
