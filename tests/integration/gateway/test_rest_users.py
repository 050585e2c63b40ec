"""UserService over REST, through the real Envoy: the seed system's requests unchanged, and every RPC."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.gateway.conftest import RestClient

pytestmark = pytest.mark.integration

# The seed system's request, byte for byte but for the host.
SEED_USER = {
    "email_address": "user@example.com",
    "phone_number": "+1234567890",
    "preferred_language": "en-US",
    "preferences": {
        "email_enabled": True,
        "push_enabled": True,
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "08:00",
    },
}


async def create_user(rest: RestClient, body: dict[str, Any], query: str = "") -> dict[str, Any]:
    response = await rest.post(f"/v1/users{query}", body)
    assert response.status == 200, response.body
    user: dict[str, Any] = response.json()
    return user


async def test_the_seed_create_user_request_works_unchanged_and_answers_in_snake_case(rest: RestClient) -> None:
    response = await rest.post("/v1/users", SEED_USER)

    assert response.status == 200, response.body
    user = response.json()
    assert user["user_id"]
    assert user["name"] == f"users/{user['user_id']}"
    assert user["email_address"] == "user@example.com"
    assert user["phone_number"] == "+1234567890"
    assert user["preferred_language"] == "en-US"
    # The seed's preferences as sent, and the channel switches it knows nothing of, on as a user who says nothing.
    switches = {"sms_enabled": True, "in_app_enabled": True}
    assert user["preferences"] == {**dict(SEED_USER["preferences"]), **switches}
    # Primitive fields are printed even when empty, so clients can rely on every key being there.
    assert user["display_name"] == ""
    assert user["devices"] == []
    assert "userId" not in user

    fetched = await rest.get(f"/v1/users/{user['user_id']}")
    assert fetched.status == 200
    assert fetched.json() == user


async def test_create_with_a_chosen_id_update_with_a_mask_and_delete(rest: RestClient) -> None:
    created = await create_user(rest, {"email_address": "ada@example.com"}, "?user_id=ada")
    assert created["user_id"] == "ada"

    # update_mask as a query parameter, field paths as in the protos; only the masked fields change.
    response = await rest.patch(
        "/v1/users/ada?update_mask=display_name,preferences.push_enabled",
        {"display_name": "Ada", "timezone": "Europe/Lisbon", "preferences": {"push_enabled": False}},
    )
    assert response.status == 200, response.body
    updated = response.json()
    assert updated["display_name"] == "Ada"
    assert updated["timezone"] == "UTC", "a field outside the mask is left alone"
    assert updated["preferences"]["push_enabled"] is False
    assert updated["preferences"]["email_enabled"] is True

    deleted = await rest.delete("/v1/users/ada")
    assert (deleted.status, deleted.json()) == (200, {})
    gone = await rest.get("/v1/users/ada")
    assert gone.status == 404
    assert gone.json()["code"] == 5


async def test_list_users_pages_with_page_size_and_page_token(rest: RestClient) -> None:
    for name in ("list-a", "list-b", "list-c"):
        await create_user(rest, {"email_address": f"{name}@example.com"}, f"?user_id={name}")

    seen: list[str] = []
    token = ""
    for _ in range(5):
        response = await rest.get(f"/v1/users?page_size=2&page_token={token}")
        assert response.status == 200, response.body
        page = response.json()
        assert len(page["users"]) <= 2
        seen += [user["user_id"] for user in page["users"]]
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == ["list-a", "list-b", "list-c"]

    by_email = await rest.get("/v1/users?email_address=list-b@example.com")
    assert [user["user_id"] for user in by_email.json()["users"]] == ["list-b"]


async def test_add_and_remove_a_device(rest: RestClient) -> None:
    await create_user(rest, {"email_address": "dev@example.com"}, "?user_id=dev")

    added = await rest.post("/v1/users/dev/devices", {"token": "fcm-token-1", "platform": "DEVICE_PLATFORM_ANDROID"})
    assert added.status == 200, added.body
    device = added.json()
    assert device["platform"] == "DEVICE_PLATFORM_ANDROID"
    user = (await rest.get("/v1/users/dev")).json()
    assert [d["device_id"] for d in user["devices"]] == [device["device_id"]]

    removed = await rest.delete(f"/v1/users/dev/devices/{device['device_id']}")
    assert removed.status == 200, removed.body
    assert (await rest.get("/v1/users/dev")).json()["devices"] == []
