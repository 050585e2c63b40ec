import pytest

from clarion.core.errors import InvalidArgument
from clarion.core.pagination import MAX_PAGE_SIZE, decode_page_token, encode_page_token, page_size


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
