"""Hypothesis strategies for any request message of the contracts, built from its descriptor: every field may be
set or not, to a value that is valid, plausible, or hostile (empty, huge, unicode, control characters, NUL, unknown
enum numbers, timestamps at and past the edges of time, nested data). Known-good values (the seeded user, template,
notification) are mixed in so that requests get past validation into the code behind it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf import duration_pb2, field_mask_pb2, message_factory, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

# Text protobuf can carry: any code point but lone surrogates (not encodable as UTF-8).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
HOSTILE = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\r\nBcc: x@example.com",
        "{{ 7 * 7 }}",
        "{% for x in range(10**9) %}{% endfor %}",
        "{app_name",
        "'; DROP TABLE users; --",
        "..",
        "users/../../etc",
        "é" * 70,
        "x" * 300,
        "9" * 40,
        "-1",
        "null",
        "\u202e",
        "🙂" * 20,
    ]
)
LONG = st.integers(min_value=1, max_value=20_000).map(lambda n: "y" * n)


def plausible(known: Sequence[str]) -> st.SearchStrategy[str]:
    """Known-good values most often, then plausible ones, hostile ones and random text."""
    seeded = st.sampled_from(list(known)) if known else st.nothing()
    return st.one_of(
        # Twice: a request whose every id is wrong stops at validation, and the code behind it goes unfuzzed.
        seeded,
        seeded,
        st.sampled_from(
            [
                "en",
                "pt-BR",
                "zz-ZZ",
                "Europe/Lisbon",
                "Mars/Olympus",
                "22:00",
                "08:00",
                "24:61",
                "ada@example.com",
                "not-an-email",
                "+14155550123",
                "+1234567890",
                "DEVICE_PLATFORM_ANDROID",
                "sendgrid",
                "WEEKLY_DIGEST",
                str(uuid.uuid4()),
                "users/ada",
            ]
        ),
        HOSTILE,
        TEXT,
        LONG,
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), TEXT, st.integers(-(2**53), 2**53)
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(plausible(["app_name", "n", "name"]), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


_TIMESTAMP_SECONDS = st.one_of(
    st.integers(-62135596800, 253402300799),  # the range protobuf allows, year 1 to 9999
    st.sampled_from([0, -1, 2**62, -(2**62), 253402300800]),
    st.integers(1_600_000_000, 2_100_000_000),  # around now
)


def _timestamp() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=_TIMESTAMP_SECONDS,
        nanos=st.one_of(st.integers(0, 999_999_999), st.sampled_from([-1, 10**9])),
    )


def _well_known(descriptor: Descriptor, field_names: list[str]) -> st.SearchStrategy[Message] | None:
    name = descriptor.full_name
    if name == "google.protobuf.Timestamp":
        return _timestamp()
    if name == "google.protobuf.Duration":
        return st.builds(duration_pb2.Duration, seconds=st.integers(-(10**12), 10**12), nanos=st.integers(0, 10**9))
    if name == "google.protobuf.Struct":
        return st.dictionaries(plausible(["app_name", "new_updates", "digest_link", "n"]), json_values()).map(_struct)
    if name == "google.protobuf.FieldMask":
        paths = st.lists(plausible(field_names), max_size=5)
        return paths.map(lambda p: field_mask_pb2.FieldMask(paths=p))
    return None


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _scalar(field: FieldDescriptor, known: Sequence[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return plausible(known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-5, 1000))
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32)
    bits = (
        64 if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64) else 32
    )
    unsigned = kind in (
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
    )
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.one_of(st.integers(-2, 1100).filter(lambda n: low <= n <= high), st.integers(low, high))


def _field_names(descriptor: Descriptor, prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted paths of a message's fields (what an update mask names)."""
    names = []
    for field in descriptor.fields:
        names.append(prefix + field.name)
        if field.message_type is not None and depth < 2 and not field.message_type.full_name.startswith("google."):
            names += _field_names(field.message_type, prefix + field.name + ".", depth + 1)
    return names


def messages(descriptor: Descriptor, known: Sequence[str], depth: int = 0) -> st.SearchStrategy[Any]:
    """Instances of the message `descriptor` describes, with any subset of its fields set."""
    siblings = _field_names(descriptor)
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
            values = messages(value.message_type, known, depth + 1) if value.message_type else _scalar(value, known)
            parts[field.name] = st.dictionaries(_scalar(key, known), values, max_size=4)
            continue
        if sub is not None:
            element = _well_known(sub, siblings)
            if element is None:
                if depth >= 3:
                    continue
                element = messages(sub, known, depth + 1)
        else:
            element = _scalar(field, known)
        is_repeated = field.is_repeated
        parts[field.name] = st.lists(element, max_size=4) if is_repeated else element
    cls = message_factory.GetMessageClass(descriptor)
    return st.fixed_dictionaries({}, optional=parts).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    target[key].CopyFrom(item)
            else:
                target.update(value)
        elif field.is_repeated:
            if field.message_type is not None:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message
