"""UserService over gRPC: protobuf in and out, validation, transactions and the read-through cache."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import empty_pb2, field_mask_pb2
from grpc.aio import ServicerContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.core.cache import Cache
from clarion.core.errors import InvalidArgument
from clarion.core.logging import get_logger
from clarion.core.pagination import decode_keyset, encode_page_token, page_size, position_text, position_time
from clarion.core.server import ServiceRegistration, service_registration
from clarion.core.validation import Violations, check_single_line, is_valid_id, normalize_language_tag, require_id
from clarion.users import validation
from clarion.users.models import DeviceRow, UserRow
from clarion.users.repository import UserRepository
from clarion.v1 import users_pb2, users_pb2_grpc

log = get_logger(__name__)

# The most ids one BatchGetUsers may ask for.
MAX_BATCH = 1000

Context = ServicerContext[Any, Any]

# Every path UpdateUser accepts, mapped to the column it sets ("preferences" sets them all).
_PREFERENCE_PATHS = {
    "preferences.email_enabled": "email_enabled",
    "preferences.push_enabled": "push_enabled",
    "preferences.sms_enabled": "sms_enabled",
    "preferences.in_app_enabled": "in_app_enabled",
    "preferences.quiet_hours_start": "quiet_hours_start",
    "preferences.quiet_hours_end": "quiet_hours_end",
}
# The preferences that switch a channel on or off; unset means on.
_CHANNEL_SWITCHES = frozenset({"email_enabled", "push_enabled", "sms_enabled", "in_app_enabled"})
_UPDATABLE_PATHS = frozenset(
    {"email_address", "phone_number", "preferred_language", "timezone", "display_name", "preferences"}
    | _PREFERENCE_PATHS.keys()
)


def platform_name(value: int) -> str:
    """The stored (and provider-facing) name of a DevicePlatform: DEVICE_PLATFORM_ANDROID → "android"."""
    return users_pb2.DevicePlatform.Name(value).removeprefix("DEVICE_PLATFORM_").lower()  # type: ignore[arg-type]


# Every platform the contract defines, by value and by stored name; UNSPECIFIED is not a platform.
_PLATFORMS = {value: platform_name(value) for value in users_pb2.DevicePlatform.values() if value}
_PLATFORM_ENUMS = {name: value for value, name in _PLATFORMS.items()}


def platform_value(name: str) -> users_pb2.DevicePlatform.ValueType:
    """The DevicePlatform of a stored name ("android"); UNSPECIFIED for a name the contract does not define."""
    return _PLATFORM_ENUMS.get(name, users_pb2.DEVICE_PLATFORM_UNSPECIFIED)


def _cache_key(user_id: str) -> str:
    return f"user:{user_id}"


def device_to_proto(row: DeviceRow) -> users_pb2.Device:
    """A stored device as the API shows it."""
    device = users_pb2.Device(device_id=str(row.id), token=row.token, platform=_PLATFORM_ENUMS[row.platform])
    device.create_time.FromDatetime(row.created_at)
    return device


def user_to_proto(row: UserRow) -> users_pb2.User:
    """A stored user as the API shows it."""
    user = users_pb2.User(
        name=f"users/{row.id}",
        user_id=row.id,
        email_address=row.email_address,
        phone_number=row.phone_number,
        preferred_language=row.preferred_language,
        timezone=row.timezone,
        display_name=row.display_name,
        preferences=users_pb2.Preferences(
            email_enabled=row.email_enabled,
            push_enabled=row.push_enabled,
            sms_enabled=row.sms_enabled,
            in_app_enabled=row.in_app_enabled,
            quiet_hours_start=row.quiet_hours_start,
            quiet_hours_end=row.quiet_hours_end,
        ),
        devices=[device_to_proto(d) for d in row.devices],
    )
    user.create_time.FromDatetime(row.created_at)
    user.update_time.FromDatetime(row.updated_at)
    return user


def _columns(user: users_pb2.User, paths: set[str], prefix: str, violations: Violations) -> dict[str, Any]:
    """The validated column values for the given field paths of `user` (field names reported under `prefix`)."""
    columns: dict[str, Any] = {}
    if "email_address" in paths:
        value = user.email_address.strip()
        field = f"{prefix}email_address"
        columns["email_address"] = validation.normalize_email(value, field, violations) if value else ""
    if "phone_number" in paths:
        value = user.phone_number.strip()
        field = f"{prefix}phone_number"
        columns["phone_number"] = validation.normalize_phone(value, field, violations) if value else ""
    if "preferred_language" in paths:
        value = user.preferred_language.strip() or "en"
        columns["preferred_language"] = normalize_language_tag(value, f"{prefix}preferred_language", violations)
    if "timezone" in paths:
        columns["timezone"] = user.timezone.strip() or "UTC"
        validation.check_timezone(columns["timezone"], f"{prefix}timezone", violations)
    if "display_name" in paths:
        columns["display_name"] = user.display_name.strip()
        validation.check_display_name(columns["display_name"], f"{prefix}display_name", violations)
    preferences = user.preferences
    if "preferences" in paths:
        paths = paths | _PREFERENCE_PATHS.keys()
    for path, column in _PREFERENCE_PATHS.items():
        if path not in paths:
            continue
        if column in _CHANNEL_SWITCHES:
            # Unset means "yes": a user who said nothing accepts the channel.
            columns[column] = getattr(preferences, column) if preferences.HasField(column) else True  # type: ignore[arg-type]
        else:
            columns[column] = getattr(preferences, column).strip()
    return columns


def _set_paths(user: users_pb2.User) -> set[str]:
    """With no update_mask, AIP-134 updates the fields the client populated."""
    paths = {f.name for f, _ in user.ListFields()} & _UPDATABLE_PATHS
    if user.HasField("preferences"):
        paths.discard("preferences")
        paths |= {f"preferences.{f.name}" for f, _ in user.preferences.ListFields()}
    return paths


def _mask_paths(mask: field_mask_pb2.FieldMask, user: users_pb2.User) -> set[str]:
    if not mask.paths:
        return _set_paths(user)
    unknown = [p for p in mask.paths if p not in _UPDATABLE_PATHS]
    if unknown:
        allowed = ", ".join(sorted(_UPDATABLE_PATHS))
        raise InvalidArgument.for_field(
            "update_mask", f"unknown or read-only path(s) {', '.join(unknown)}; allowed: {allowed}"
        )
    return set(mask.paths)


class UserServicer(users_pb2_grpc.UserServiceServicer):
    """Users, their preferences and their push devices."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], cache: Cache) -> None:
        self._sessions = sessions
        self._cache = cache

    async def CreateUser(self, request: users_pb2.CreateUserRequest, context: Context) -> users_pb2.User:
        """Create a user; ALREADY_EXISTS for a taken id or email address."""
        violations = Violations()
        user_id = request.user_id or request.user.user_id or str(uuid.uuid4())
        violations.check(is_valid_id(user_id), "user_id", "must be 1 to 63 letters, digits, '-' or '_'")
        all_paths = set(_UPDATABLE_PATHS)
        columns = _columns(request.user, all_paths, "user.", violations)
        validation.check_quiet_hours(
            columns["quiet_hours_start"], columns["quiet_hours_end"], "user.preferences", violations
        )
        violations.raise_if_any()
        async with self._sessions.begin() as session:
            row = await UserRepository(session).create(UserRow(id=user_id, **columns, devices=[]))
        await self._cache.invalidate(_cache_key(user_id))
        log.info("user_created", user_id=user_id)
        return user_to_proto(row)

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Context) -> users_pb2.User:
        """One user with their devices, read through the cache."""
        user_id = require_id(request.user_id, "user_id")

        async def load() -> bytes:
            async with self._sessions() as session:
                return user_to_proto(await UserRepository(session).get(user_id)).SerializeToString()

        cached = await self._cache.read_through(_cache_key(user_id), "user", load)
        return users_pb2.User.FromString(cached or b"")

    async def BatchGetUsers(
        self, request: users_pb2.BatchGetUsersRequest, context: Context
    ) -> users_pb2.BatchGetUsersResponse:
        """Several users with their devices, in one query (not through the cache: a batch is one round trip)."""
        violations = Violations()
        violations.check(0 < len(request.user_ids) <= MAX_BATCH, "user_ids", f"give 1 to {MAX_BATCH} user ids")
        for index, user_id in enumerate(request.user_ids[:MAX_BATCH]):
            violations.check(is_valid_id(user_id), f"user_ids[{index}]", "must be 1 to 63 letters, digits, '-' or '_'")
        violations.raise_if_any()
        user_ids = list(dict.fromkeys(request.user_ids))
        async with self._sessions() as session:
            found = await UserRepository(session).get_many(user_ids)
        return users_pb2.BatchGetUsersResponse(
            users=[user_to_proto(found[i]) for i in user_ids if i in found],
            missing_user_ids=[i for i in user_ids if i not in found],
        )

    async def ListUsers(self, request: users_pb2.ListUsersRequest, context: Context) -> users_pb2.ListUsersResponse:
        """Users in creation order, optionally by email address, a page at a time."""
        limit = page_size(request.page_size)
        email = request.email_address.strip()
        violations = Violations()
        check_single_line(violations, "email_address", email, max_length=validation.MAX_EMAIL_LENGTH)
        violations.raise_if_any()
        filters = {"email_address": email.lower()}
        after = decode_keyset(
            request.page_token, filters, lambda position: (position_time(position[0]), position_text(position[1]))
        )
        async with self._sessions() as session:
            rows = await UserRepository(session).list(email_address=email, after=after, limit=limit + 1)
        response = users_pb2.ListUsersResponse(users=[user_to_proto(r) for r in rows[:limit]])
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = encode_page_token([last.created_at.isoformat(), last.id], filters)
        return response

    async def UpdateUser(self, request: users_pb2.UpdateUserRequest, context: Context) -> users_pb2.User:
        """Change the fields named in update_mask (or, with no mask, the fields that are set)."""
        user_id = require_id(request.user.user_id, "user.user_id")
        paths = _mask_paths(request.update_mask, request.user)
        violations = Violations()
        changes = _columns(request.user, paths, "user.", violations)
        violations.raise_if_any()
        async with self._sessions.begin() as session:
            repository = UserRepository(session)
            current = await repository.get(user_id, for_update=True)
            start = changes.get("quiet_hours_start", current.quiet_hours_start)
            end = changes.get("quiet_hours_end", current.quiet_hours_end)
            validation.check_quiet_hours(start, end, "user.preferences", violations)
            violations.raise_if_any()
            row = await repository.update(current, changes)
        await self._cache.invalidate(_cache_key(user_id))
        log.info("user_updated", user_id=user_id, paths=sorted(paths))
        return user_to_proto(row)

    async def DeleteUser(self, request: users_pb2.DeleteUserRequest, context: Context) -> empty_pb2.Empty:
        """Delete a user and their devices."""
        user_id = require_id(request.user_id, "user_id")
        async with self._sessions.begin() as session:
            await UserRepository(session).delete(user_id)
        await self._cache.invalidate(_cache_key(user_id))
        log.info("user_deleted", user_id=user_id)
        return empty_pb2.Empty()

    async def AddDevice(self, request: users_pb2.AddDeviceRequest, context: Context) -> users_pb2.Device:
        """Register a push token; a token the user already has returns the existing device."""
        user_id = require_id(request.user_id, "user_id")
        violations = Violations()
        validation.check_token(request.device.token, "device.token", violations)
        platform = _PLATFORMS.get(request.device.platform)
        violations.check(platform is not None, "device.platform", "must be DEVICE_PLATFORM_ANDROID, _IOS or _WEB")
        violations.raise_if_any()
        assert platform is not None
        async with self._sessions.begin() as session:
            device, previous_owner = await UserRepository(session).add_device(user_id, request.device.token, platform)
        await self._cache.invalidate(_cache_key(user_id))
        if previous_owner and previous_owner != user_id:
            await self._cache.invalidate(_cache_key(previous_owner))
        log.info("device_added", user_id=user_id, device_id=str(device.id), platform=platform)
        return device_to_proto(device)

    async def RemoveDevice(self, request: users_pb2.RemoveDeviceRequest, context: Context) -> empty_pb2.Empty:
        """Remove a push device from a user."""
        user_id = require_id(request.user_id, "user_id")
        try:
            device_id = uuid.UUID(request.device_id)
        except ValueError:
            raise InvalidArgument.for_field("device_id", "must be a device id returned by AddDevice") from None
        async with self._sessions.begin() as session:
            await UserRepository(session).remove_device(user_id, device_id)
        await self._cache.invalidate(_cache_key(user_id))
        log.info("device_removed", user_id=user_id, device_id=str(device_id))
        return empty_pb2.Empty()


def registration(*, sessions: async_sessionmaker[AsyncSession], cache: Cache) -> ServiceRegistration:
    """How to add UserService to a server."""
    return service_registration(
        UserServicer(sessions=sessions, cache=cache),
        users_pb2_grpc.add_UserServiceServicer_to_server,
        users_pb2.DESCRIPTOR.services_by_name["UserService"],
    )
