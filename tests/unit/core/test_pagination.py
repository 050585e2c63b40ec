import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from clarion.core.errors import InvalidArgument
from clarion.core.pagination import (
    MAX_PAGE_SIZE,
    decode_keyset,
    decode_page_token,
    encode_page_token,
    page_size,
    position_int,
    position_text,
    position_time,
    position_uuid,
)


def test_page_size_defaults_coerces_and_refuses_negatives() -> None:
    assert page_size(0) == 50
    assert page_size(7) == 7
    assert page_size(10**6) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_a_token_round_trips_with_the_same_filters() -> None:
    token = encode_page_token(["2026-11-25T12:00:00+00:00", "u1"], {"email": ""})
    assert decode_page_token(token, {"email": ""}) == ["2026-11-25T12:00:00+00:00", "u1"]
    assert decode_page_token("", {"email": ""}) is None


@pytest.mark.parametrize("token", ["garbage", "e30", "%%%", "eyJwIjogMX0"])
def test_a_foreign_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, {})
    assert caught.value.violations[0].field == "page_token"


def test_a_token_from_other_filters_is_invalid_argument() -> None:
    token = encode_page_token(["k"], {"show_deleted": False})
    with pytest.raises(InvalidArgument, match="different filters"):
        decode_page_token(token, {"show_deleted": True})


def test_a_deeply_nested_token_is_refused_before_it_is_decoded() -> None:
    nested = base64.urlsafe_b64encode(b"[" * 200_000).decode()
    with pytest.raises(InvalidArgument):
        decode_page_token(nested, {})


TIME = "2026-11-25T12:00:00+00:00"
UUID = "0b0e9f8e-7a52-4b7e-9f0e-2f1c3a8d9e10"
# Positions PostgreSQL or Python would choke on, each with the parser of the column it stands for.
FORGED_POSITIONS = [
    ([TIME, 123], lambda p: (position_time(p[0]), position_uuid(p[1]))),
    ([TIME, [1]], lambda p: (position_time(p[0]), position_uuid(p[1]))),
    (["0001-01-01T00:00:00+14:00", UUID], lambda p: (position_time(p[0]), position_uuid(p[1]))),
    (["9999-12-31T23:59:59-14:00", UUID], lambda p: (position_time(p[0]), position_uuid(p[1]))),
    (["2026-11-25T12:00:00", UUID], lambda p: (position_time(p[0]), position_uuid(p[1]))),
    ([TIME, "a\x00b"], lambda p: (position_time(p[0]), position_text(p[1]))),
    ([TIME, "\ud800"], lambda p: (position_time(p[0]), position_text(p[1]))),
    (["x" * 300], lambda p: position_text(p[0])),
    ([1e30], lambda p: position_int(p[0])),
    ([10**20], lambda p: position_int(p[0])),
    ([True], lambda p: position_int(p[0])),
    (["123"], lambda p: position_int(p[0])),
    ([], lambda p: position_int(p[0])),
]


@pytest.mark.parametrize(("position", "parse"), FORGED_POSITIONS)
def test_a_forged_position_is_invalid_argument(position: list[Any], parse: Callable[[list[Any]], Any]) -> None:
    token = encode_page_token(position, {})  # what a client can make too: the fingerprint is no signature
    with pytest.raises(InvalidArgument) as caught:
        decode_keyset(token, {}, parse)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_real_positions_parse() -> None:
    token = encode_page_token([TIME, UUID], {})
    parsed = decode_keyset(token, {}, lambda p: (position_time(p[0]), position_uuid(p[1])))
    assert parsed is not None
    assert parsed[1] == uuid.UUID(UUID)
    assert decode_keyset(encode_page_token([7], {}), {}, lambda p: position_int(p[0])) == 7
