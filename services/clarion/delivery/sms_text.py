"""How a text travels as SMS: its encoding, its length in that encoding, and how many segments (billed messages) it
takes.

A text whose every character is in the GSM 03.38 alphabet goes as GSM-7: 160 septets in one message, or 153 per
segment once it needs several (the user data header takes the rest). Anything else turns the whole text into
UCS-2: 70 UTF-16 code units, or 67 per segment. A character never straddles two segments: a GSM extension character
(an escape septet plus its own) and a UTF-16 surrogate pair (an emoji) move whole to the next segment, which can
leave a septet or a unit unused, and carriers count it that way.

One pass over the text per step and no regular expressions, so a large rendered text costs linear time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# Twilio's recommended maximum per message; its API refuses bodies over 1600 characters (error 21617).
MAX_SMS_SEGMENTS = 10

# GSM 03.38's basic table, without the escape (0x1B) that introduces the extension table: 127 characters, one
# septet each. 0x09 is Ç (capital), as in Unicode's mapping of the table.
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: the escape septet, then the character's own, so two septets each.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

# (units in a single message, units per segment of a concatenated one)
_GSM_LIMITS = (160, 153)
_UCS2_LIMITS = (70, 67)
_BMP_LAST = 0xFFFF


@dataclass(frozen=True, slots=True)
class SmsText:
    """What a text costs as SMS."""

    encoding: Encoding
    units: int  # GSM-7 septets, or UTF-16 code units for UCS-2
    segments: int  # 0 for an empty text


def measure(body: str) -> SmsText:
    """The encoding `body` needs, its length in that encoding's units, and the segments it takes."""
    if all(char in GSM_BASIC or char in GSM_EXTENSION for char in body):
        encoding: Encoding = "GSM-7"
        widths = _gsm_widths(body)
        single, per_segment = _GSM_LIMITS
    else:
        encoding = "UCS-2"
        widths = _utf16_widths(body)
        single, per_segment = _UCS2_LIMITS
    units = sum(widths)
    return SmsText(encoding=encoding, units=units, segments=_segments(widths, units, single, per_segment))


def _gsm_widths(body: str) -> list[int]:
    return [2 if char in GSM_EXTENSION else 1 for char in body]


def _utf16_widths(body: str) -> list[int]:
    # Outside the Basic Multilingual Plane a character takes a surrogate pair.
    return [2 if ord(char) > _BMP_LAST else 1 for char in body]


def _segments(widths: list[int], units: int, single: int, per_segment: int) -> int:
    """Segments for characters of these widths, filling each segment greedily and never splitting a character."""
    if units == 0:
        return 0
    if units <= single:
        return 1
    segments, room = 1, per_segment
    for width in widths:
        if width > room:
            segments += 1
            room = per_segment
        room -= width
    return segments
