"""API keys without a server: the scope table against the contracts, the key format and its keyed hash, and the
Authenticator's cache, revocation bound, last-used writes and per-key quota on a fake clock."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from clarion import contracts
from clarion.core.config import SettingsError, load_settings
from clarion.core.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from clarion.core.logging import configure_logging, get_logger
from clarion.keys.auth import Authenticator, Principal, StoredKey, bearer_token
from clarion.keys.quotas import KeyedRateLimiter
from clarion.keys.scopes import (
    KEY_ONLY_METHODS,
    METHOD_SCOPES,
    OPEN_METHODS,
    OPEN_SERVICES,
    SERVICE_KEY_SCOPES,
    Scope,
    grants,
    required_scope,
)
from clarion.keys.tokens import (
    generate_key,
    hash_secret,
    is_service_key,
    local_pepper,
    parse_key,
    require_pepper,
)

PEPPER = SecretStr("unit-test-pepper-0123456789abcdef-0123456789")


def contract_methods() -> dict[str, str]:
    """Every RPC of the contracts, as `/package.Service/Method` → service name (the list is checked against
    protos/ in tests/unit/test_contracts_modules.py)."""
    return contracts.methods()


def test_every_rpc_of_the_contracts_has_an_explicit_scope() -> None:
    methods = contract_methods()
    unmapped = sorted(set(methods) - set(METHOD_SCOPES) - KEY_ONLY_METHODS - OPEN_METHODS)
    assert not unmapped, (
        f"map these RPCs in clarion.keys.scopes.SERVICE_SCOPES (until then they need admin): {unmapped}"
    )
    assert not {*METHOD_SCOPES, *KEY_ONLY_METHODS} - set(methods), "the table names RPCs the contracts no longer have"
    assert not KEY_ONLY_METHODS & set(METHOD_SCOPES), "a method needs a scope or only a key, not both"
    # Open methods (a provider's signed webhook) are authenticated by their servicer, and are few on purpose.
    assert {"/clarion.v1.ProviderEventService/ReceiveSendGridEvents"} == OPEN_METHODS
    assert all(required_scope(method) is None for method in OPEN_METHODS)


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("/clarion.v1.NotificationService/SendNotification", Scope.SEND),
        ("/clarion.v1.NotificationService/ReplayDeadLetters", Scope.SEND),
        ("/clarion.v1.UserService/CreateUser", Scope.MANAGE),
        ("/clarion.v1.TemplateService/RenderTemplate", Scope.TEMPLATES_RENDER),
        ("/clarion.v1.TemplateService/UpdateTemplate", Scope.MANAGE),
        ("/clarion.v1.UserService/BatchGetUsers", Scope.USERS_GET),
        ("/clarion.v1.UserService/ListUsers", Scope.MANAGE),
        ("/clarion.v1.UserService/RemoveDevice", Scope.DEVICES_REMOVE),
        ("/clarion.v1.UserService/AddDevice", Scope.MANAGE),
        ("/clarion.v1.UserService/SomethingNew", Scope.ADMIN),
        ("/clarion.v2.Whatever/Do", Scope.ADMIN),
        ("/grpc.health.v1.Health/Check", None),
        ("/grpc.health.v1.Health/Watch", None),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None),
        ("garbage", Scope.ADMIN),
    ],
)
def test_required_scope(method: str, scope: Scope | None) -> None:
    assert required_scope(method) == scope


def test_open_services_are_only_health_and_reflection() -> None:
    assert {name.split(".")[1] for name in OPEN_SERVICES} == {"health", "reflection"}


def test_admin_holds_every_scope_and_the_others_only_their_own() -> None:
    admin = Principal("a", "a", frozenset({Scope.ADMIN}))
    sender = Principal("s", "s", frozenset({Scope.SEND}))
    assert all(admin.allows(scope) for scope in Scope)
    assert sender.allows(Scope.SEND)
    assert not sender.allows(Scope.MANAGE)
    assert not sender.allows(Scope.ADMIN)


def test_manage_includes_the_narrow_scopes_and_they_include_nothing() -> None:
    narrow = (Scope.USERS_GET, Scope.TEMPLATES_RENDER, Scope.DEVICES_REMOVE)
    assert all(grants(frozenset({"manage"}), scope) for scope in narrow)
    assert not grants(frozenset({"manage"}), Scope.SEND)
    for scope in narrow:
        assert [other for other in Scope if grants(frozenset({scope.value}), other)] == [scope]
    assert not grants(frozenset({"no-such-scope"}), Scope.USERS_GET)


def test_service_keys_hold_only_what_their_calls_need() -> None:
    assert set(SERVICE_KEY_SCOPES) == {"notifications", "dispatcher", "push"}
    for scopes in SERVICE_KEY_SCOPES.values():
        assert not scopes & {Scope.MANAGE, Scope.ADMIN, Scope.SEND, Scope.READ_ALL_PROJECTS}
    # What each workload calls (notifications/clients.py) is allowed, and nothing that changes users or templates.
    reads = {"/clarion.v1.UserService/GetUser", "/clarion.v1.UserService/BatchGetUsers"}
    renders = {"/clarion.v1.TemplateService/RenderTemplate", "/clarion.v1.TemplateService/BatchRenderTemplates"}
    for workload, calls in {"notifications": reads | renders, "dispatcher": reads | renders}.items():
        held = frozenset(scope.value for scope in SERVICE_KEY_SCOPES[workload])
        allowed = {method for method, scope in METHOD_SCOPES.items() if grants(held, scope)}
        assert allowed == calls
    push = frozenset(scope.value for scope in SERVICE_KEY_SCOPES["push"])
    allowed = {method for method, scope in METHOD_SCOPES.items() if grants(push, scope)}
    assert allowed == {"/clarion.v1.UserService/RemoveDevice"}


def test_a_generated_key_parses_back_and_looks_like_a_clarion_key() -> None:
    key = generate_key()
    assert key.token.startswith(f"clr_{key.key_id}_")
    assert len(key.key_id) == 10
    assert len(key.secret) >= 43  # 256 bits of randomness
    assert parse_key(key.token) == key
    assert generate_key().key_id != key.key_id
    assert not is_service_key(key.key_id)


def test_a_service_key_says_whose_it_is_and_only_service_keys_look_like_one() -> None:
    for workload in SERVICE_KEY_SCOPES:
        key = generate_key(service=workload)
        assert key.token.startswith(f"clr_svc-{workload}-")
        assert len(key.key_id) <= 32
        assert parse_key(key.token) == key
        assert is_service_key(key.key_id)
    assert all("-" not in generate_key().key_id for _ in range(200)), "client keys never hold the service mark"


@pytest.mark.parametrize(
    "token",
    ["", "clr_", "clr_abc", "clr_abc_short", "xyz_abcdefghij_" + "s" * 43, "clr_ABC!_" + "s" * 43, "Bearer clr_x_y"],
)
def test_malformed_keys_do_not_parse(token: str) -> None:
    assert parse_key(token) is None


def test_the_stored_hash_is_hmac_sha256_keyed_by_the_pepper_and_bound_to_the_id() -> None:
    expected = hmac.new(PEPPER.get_secret_value().encode(), b"abc:secret", hashlib.sha256).digest()
    assert hash_secret(PEPPER, "abc", "secret") == expected
    assert hash_secret(PEPPER, "abd", "secret") != expected
    assert hash_secret(SecretStr("another-pepper-0123456789abcdef-0123"), "abc", "secret") != expected


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        (None, None),
        ((("x-request-id", "r"),), None),
        ((("authorization", "Bearer clr_a_b"),), "clr_a_b"),
        ((("authorization", "bearer   clr_a_b "),), "clr_a_b"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), ""),
        ((("authorization", "Bearer"),), ""),
        ((("authorization", "clr_a_b"),), ""),
    ],
)
def test_bearer_token(metadata: tuple[tuple[str, str], ...] | None, token: str | None) -> None:
    assert bearer_token(metadata) == token


def test_the_local_pepper_is_made_once_and_owner_only(tmp_path: Path) -> None:
    assert local_pepper(tmp_path, create=False) is None
    made = local_pepper(tmp_path, create=True)
    assert made is not None
    assert len(made.get_secret_value()) >= 32
    assert (os.stat(tmp_path / "api-key-pepper").st_mode & 0o777) == 0o600
    again = local_pepper(tmp_path, create=True)
    assert again is not None
    assert again.get_secret_value() == made.get_secret_value()


def test_auth_without_a_pepper_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="CLARION_API_KEY_PEPPER"):
        require_pepper(load_settings(api_key_pepper=None))
    assert require_pepper(load_settings(api_key_pepper=PEPPER.get_secret_value())) == PEPPER


def test_a_short_pepper_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(api_key_pepper="hunter2")
    assert "CLARION_API_KEY_PEPPER" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_logs_never_show_a_key() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    try:
        key = generate_key().token
        get_logger("test").info("calling", header=f"Bearer {key}", note=f"used {key}", authorization=key)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    line = stream.getvalue()
    assert key not in line
    assert key.split("_")[1] not in json.loads(line)["authorization"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """A KeyStore in a dict, counting lookups and last-used writes."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}
        self.finds = 0
        self.touches: list[str] = []

    def add(self, *scopes: str, revoked: bool = False, service: str | None = None) -> str:
        key = generate_key(service=service)
        self.keys[key.key_id] = StoredKey(
            key.key_id, "k", hash_secret(PEPPER, key.key_id, key.secret), frozenset(scopes), revoked
        )
        return key.token

    def revoke(self, token: str) -> None:
        parsed = parse_key(token)
        assert parsed is not None
        stored = self.keys[parsed.key_id]
        self.keys[parsed.key_id] = StoredKey(stored.key_id, stored.name, stored.secret_hash, stored.scopes, True)

    async def find(self, key_id: str) -> StoredKey | None:
        self.finds += 1
        return self.keys.get(key_id)

    async def touch(self, key_id: str) -> None:
        self.touches.append(key_id)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


SEND = "/clarion.v1.NotificationService/SendNotification"
CREATE_USER = "/clarion.v1.UserService/CreateUser"


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authenticator(store: FakeStore, clock: FakeClock) -> Authenticator:
    return Authenticator(
        store,
        pepper=PEPPER,
        cache_ttl_s=30,
        rate_per_s=2,
        burst=3,
        service_rate_per_s=20,
        service_burst=10,
        clock=clock,
    )


async def reason_of(authenticator: Authenticator, method: str, metadata: tuple[tuple[str, str], ...] | None) -> str:
    with pytest.raises((Unauthenticated, PermissionDenied, ResourceExhausted)) as caught:
        await authenticator.check(method, metadata)
    return caught.value.reason


async def test_the_reasons_a_key_is_refused(authenticator: Authenticator, store: FakeStore) -> None:
    good = store.add(Scope.SEND)
    revoked = store.add(Scope.ADMIN, revoked=True)
    wrong_secret = good[:-4] + "AAAA"
    made_up = generate_key().token
    assert await reason_of(authenticator, SEND, None) == "API_KEY_MISSING"
    assert await reason_of(authenticator, SEND, (("authorization", "Basic x"),)) == "API_KEY_INVALID"
    assert await reason_of(authenticator, SEND, bearer("not-a-key")) == "API_KEY_INVALID"
    assert await reason_of(authenticator, SEND, bearer(wrong_secret)) == "API_KEY_INVALID"
    assert await reason_of(authenticator, SEND, bearer(made_up)) == "API_KEY_INVALID"
    assert await reason_of(authenticator, SEND, bearer(revoked)) == "API_KEY_REVOKED"
    assert await reason_of(authenticator, CREATE_USER, bearer(good)) == "SCOPE_MISSING"
    principal = await authenticator.check(SEND, bearer(good))
    assert principal is not None
    assert principal.scopes == {Scope.SEND}
    assert await authenticator.check("/grpc.health.v1.Health/Check", None) is None


async def test_a_revoked_key_learns_it_only_with_the_right_secret(
    authenticator: Authenticator, store: FakeStore
) -> None:
    revoked = store.add(Scope.ADMIN, revoked=True)
    assert await reason_of(authenticator, SEND, bearer(revoked[:-4] + "AAAA")) == "API_KEY_INVALID"


async def test_the_scope_error_names_the_scope(authenticator: Authenticator, store: FakeStore) -> None:
    with pytest.raises(PermissionDenied) as caught:
        await authenticator.check(CREATE_USER, bearer(store.add(Scope.SEND)))
    assert caught.value.metadata == {"scope": "manage", "method": CREATE_USER}


async def test_lookups_are_cached_and_revocation_takes_effect_within_the_ttl(
    authenticator: Authenticator, store: FakeStore, clock: FakeClock
) -> None:
    token = store.add(Scope.ADMIN)
    for _ in range(3):
        await authenticator.check(SEND, bearer(token))
    assert store.finds == 1
    store.revoke(token)
    clock.now += 29
    assert await authenticator.check(SEND, bearer(token)) is not None, "still cached"
    clock.now += 1.5
    assert await reason_of(authenticator, SEND, bearer(token)) == "API_KEY_REVOKED"
    assert store.finds == 2


async def test_unknown_ids_are_cached_too(authenticator: Authenticator, store: FakeStore) -> None:
    made_up = generate_key().token
    for _ in range(5):
        assert await reason_of(authenticator, SEND, bearer(made_up)) == "API_KEY_INVALID"
    assert store.finds == 1


async def test_last_used_is_written_at_most_once_a_minute(store: FakeStore, clock: FakeClock) -> None:
    authenticator = Authenticator(store, pepper=PEPPER, cache_ttl_s=30, clock=clock)  # no quota
    token = store.add(Scope.ADMIN)
    for _ in range(10):
        await authenticator.check(SEND, bearer(token))
        clock.now += 5
    await asyncio.sleep(0)
    assert len(store.touches) == 1
    clock.now += 10  # 60 s after the first
    await authenticator.check(SEND, bearer(token))
    await authenticator.close()
    assert len(store.touches) == 2


async def test_the_quota_refuses_with_a_retry_delay_and_recovers(
    authenticator: Authenticator, store: FakeStore, clock: FakeClock
) -> None:
    token, other = store.add(Scope.ADMIN), store.add(Scope.ADMIN)
    for _ in range(3):  # the burst
        await authenticator.check(SEND, bearer(token))
    with pytest.raises(ResourceExhausted) as caught:
        await authenticator.check(SEND, bearer(token))
    assert caught.value.reason == "API_KEY_RATE_LIMITED"
    assert caught.value.retry_after_s == pytest.approx(0.5)  # 2 tokens a second
    assert await authenticator.check(SEND, bearer(other)) is not None, "each key has its own bucket"
    clock.now += 0.5
    assert await authenticator.check(SEND, bearer(token)) is not None


async def test_a_service_key_is_a_key_with_its_own_quota_and_revocable(
    authenticator: Authenticator, store: FakeStore, clock: FakeClock
) -> None:
    scopes = sorted(SERVICE_KEY_SCOPES["dispatcher"])
    service = store.add(*scopes, service="dispatcher")
    get_user = "/clarion.v1.UserService/GetUser"
    for _ in range(10):  # its burst, past a client key's 3
        assert await authenticator.check(get_user, bearer(service)) is not None
    assert await reason_of(authenticator, get_user, bearer(service)) == "API_KEY_RATE_LIMITED"
    clock.now += 1
    assert await reason_of(authenticator, CREATE_USER, bearer(service)) == "SCOPE_MISSING"
    assert await reason_of(authenticator, SEND, bearer(service)) == "SCOPE_MISSING"
    assert await reason_of(authenticator, get_user, bearer(service[:-2] + "xx")) == "API_KEY_INVALID"
    store.revoke(service)
    clock.now += 31
    assert await reason_of(authenticator, get_user, bearer(service)) == "API_KEY_REVOKED"


def test_the_token_bucket() -> None:
    clock = FakeClock()
    limiter = KeyedRateLimiter(rate_per_s=10, burst=2, clock=clock)
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") == 0
    assert limiter.acquire("a") == pytest.approx(0.1)
    clock.now += 0.05
    assert limiter.acquire("a") == pytest.approx(0.05)
    clock.now += 0.05
    assert limiter.acquire("a") == 0
    clock.now += 100
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, pytest.approx(0.1)], "never more than the burst"
