"""measure(): the encoding, the units and the segments of a text, at every boundary carriers bill by."""

from __future__ import annotations

import time

import pytest

from clarion.delivery.sms_text import GSM_BASIC, GSM_EXTENSION, MAX_SMS_SEGMENTS, SmsText, measure

# Every character of GSM 03.38's basic table but the escape, in table order.
BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION_TABLE = "\f^{}\\[~]|€"
EMOJI = "😀"  # U+1F600: a surrogate pair in UTF-16


def test_empty_text_takes_no_segment() -> None:
    assert measure("") == SmsText(encoding="GSM-7", units=0, segments=0)


def test_the_whole_basic_table_is_gsm_7_one_septet_each() -> None:
    assert len(BASIC_TABLE) == 127
    assert set(BASIC_TABLE) == GSM_BASIC

    assert measure(BASIC_TABLE) == SmsText(encoding="GSM-7", units=127, segments=1)


@pytest.mark.parametrize("char", list(BASIC_TABLE))
def test_each_basic_character_is_one_septet(char: str) -> None:
    assert measure(char) == SmsText(encoding="GSM-7", units=1, segments=1)


@pytest.mark.parametrize("char", list(EXTENSION_TABLE))
def test_each_extension_character_is_two_septets(char: str) -> None:
    assert char in GSM_EXTENSION
    assert measure(char) == SmsText(encoding="GSM-7", units=2, segments=1)


@pytest.mark.parametrize(
    "char",
    [
        "\x1b",  # the escape itself is no character of the text
        "\t",
        "`",
        "ç",  # only the capital Ç is in the table
        "á",
        "ê",
        "Ж",
        "中",
        "\u00a0",  # no-break space
        "\u2019",  # a typographic apostrophe, as word processors type it
        "\u201c",  # a typographic opening quote
    ],
)
def test_a_character_outside_the_alphabet_makes_the_text_ucs_2(char: str) -> None:
    assert measure("Hello " + char) == SmsText(encoding="UCS-2", units=7, segments=1)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (153, 1), (159, 1), (160, 1), (161, 2), (305, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm_7_boundaries(length: int, segments: int) -> None:
    assert measure("a" * length) == SmsText(encoding="GSM-7", units=length, segments=segments)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (67, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs_2_boundaries(length: int, segments: int) -> None:
    assert measure("ж" * length) == SmsText(encoding="UCS-2", units=length, segments=segments)


def test_extension_characters_count_two_towards_the_single_message_limit() -> None:
    assert measure("€" * 80) == SmsText(encoding="GSM-7", units=160, segments=1)
    assert measure("a" * 159 + "€") == SmsText(encoding="GSM-7", units=161, segments=2)


def test_an_extension_character_is_never_split_across_segments() -> None:
    # 152 septets, then a two-septet character: it does not fit in the first segment's last septet.
    text = measure("a" * 152 + "€" + "a" * 153)
    assert text.units == 307
    assert text.segments == 3  # 152 (one septet unused) + 153 ("€" and 151 "a") + 2

    # The same septet count with the "€" wholly inside the first segment fits in two.
    assert measure("a" * 151 + "€" + "a" * 153) == SmsText(encoding="GSM-7", units=306, segments=2)


def test_extension_characters_only_fill_segments_evenly() -> None:
    # 76 of them fill 152 of a segment's 153 septets; the 77th starts the next.
    assert measure("€" * 153) == SmsText(encoding="GSM-7", units=306, segments=3)
    assert measure("€" * 152) == SmsText(encoding="GSM-7", units=304, segments=2)


def test_an_emoji_is_two_units_and_makes_the_text_ucs_2() -> None:
    assert measure(EMOJI) == SmsText(encoding="UCS-2", units=2, segments=1)
    assert measure("Shipped " + EMOJI) == SmsText(encoding="UCS-2", units=10, segments=1)
    assert measure(EMOJI * 35) == SmsText(encoding="UCS-2", units=70, segments=1)
    assert measure(EMOJI * 35 + "a") == SmsText(encoding="UCS-2", units=71, segments=2)


def test_an_emoji_is_never_split_across_segments() -> None:
    # 66 units, then a surrogate pair that does not fit in the first segment's last unit.
    assert measure("ж" * 66 + EMOJI + "ж" * 67) == SmsText(encoding="UCS-2", units=135, segments=3)
    assert measure("ж" * 65 + EMOJI + "ж" * 67) == SmsText(encoding="UCS-2", units=134, segments=2)


def test_one_character_outside_the_alphabet_turns_the_whole_text_to_ucs_2() -> None:
    text = measure("a" * 100 + "ж")

    assert text == SmsText(encoding="UCS-2", units=101, segments=2)  # 1 segment as GSM-7, 2 as UCS-2


def test_extension_characters_are_one_unit_each_in_ucs_2() -> None:
    assert measure("€ж") == SmsText(encoding="UCS-2", units=2, segments=1)


def test_the_largest_text_twilio_recommends() -> None:
    assert measure("a" * 153 * MAX_SMS_SEGMENTS).segments == MAX_SMS_SEGMENTS
    assert measure("a" * (153 * MAX_SMS_SEGMENTS + 1)).segments == MAX_SMS_SEGMENTS + 1


@pytest.mark.parametrize(
    "body",
    ["a" * 1_000_000, "€" * 1_000_000, "ж" * 1_000_000, EMOJI * 500_000, ("a" * 152 + "€") * 6_500],
)
def test_a_megabyte_of_text_is_measured_in_linear_time(body: str) -> None:
    started = time.thread_time()

    measure(body)

    assert time.thread_time() - started < 1.0
