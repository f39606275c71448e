"""Phone numbers hidden in text posted to a group: the one masking mechanism.

People write numbers every way: `138 1234 5678`, `+86-138…`, `0086…`, full-width digits from a
Chinese input method, landlines with an area code (`(0755) 8888 9999`). A hand-written pattern
misses most of them, so numbers are found with libphonenumber's matcher for mainland China.
Only the digits are replaced, so the text keeps its shape: `138 **** 5678`, `010-****5678`.
"""

from __future__ import annotations

import re

import phonenumbers

REGION = "CN"
MASK = "*"
# Digits kept visible at the end of a number, and at the start of a mobile or service number.
KEEP_END = 4
KEEP_START = 3
# An 11-digit mobile glued to Latin letters (`tel13812345678`) is not taken by the matcher,
# which wants a word boundary; this catches what it leaves, in the mobile ranges.
_MOBILE = re.compile(r"(?<![0-9])(1[3-9][0-9])([0-9]{4})([0-9]{4})(?![0-9])")


def mask_phones(text: str) -> str:
    """`text` with the middle digits of every phone number replaced by `*`."""
    if not text:
        return text
    pieces: list[str] = []
    last = 0
    for match in phonenumbers.PhoneNumberMatcher(text, REGION):
        pieces.append(text[last:match.start])
        pieces.append(_mask_match(match.raw_string, match.number))
        last = match.end
    pieces.append(text[last:])
    return _MOBILE.sub(lambda m: f"{m.group(1)}{MASK * 4}{m.group(3)}", "".join(pieces))


def _mask_match(raw: str, number: phonenumbers.PhoneNumber) -> str:
    """Hide the digits of the national number between what is kept at its two ends."""
    national = str(number.national_number)
    digits = [i for i, ch in enumerate(raw) if ch.isdigit()]
    # The national number is written last; a country code or trunk 0 comes before it.
    positions = digits[-len(national):] if len(digits) >= len(national) else digits
    keep_start = _kept_at_start(number, len(national))
    hidden = set(positions[keep_start:len(positions) - KEEP_END])
    return "".join(MASK if i in hidden else ch for i, ch in enumerate(raw))


def _kept_at_start(number: phonenumbers.PhoneNumber, length: int) -> int:
    """A landline keeps its area code (it says the city, not the person); a mobile or a
    service number keeps its first three digits, as `138****5678` always did."""
    area = phonenumbers.length_of_geographical_area_code(number)
    if area:
        return area
    return KEEP_START if length - KEEP_START > KEEP_END else 0
