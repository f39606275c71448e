"""What people write, made safe to keep and to show: harmful characters removed, invisible
text recognised, lengths measured as Telegram counts them once escaped for HTML.
"""

from __future__ import annotations

import re
import unicodedata

# Limits on what people write, measured as the text is sent: a markup character travels as
# its HTML entity (`<` as `&lt;`) and counts as long as that, a character outside the BMP
# counts twice (Telegram counts UTF-16 units). A card holding a description, two names and a
# note then always fits Telegram's 4096, however much markup people type.
TEXT_LIMIT = 2000
REASON_LIMIT = 500
NAME_LIMIT = 128
CODE_LIMIT = 64


# Letters that draw nothing: Hangul fillers and the blank Braille pattern.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Removed from what people write: bidirectional embeddings, overrides and isolates (they turn
# the rest of a card's line around), control characters but line breaks and tabs, and lone
# surrogates (which cannot even be stored).
_UNWANTED = re.compile("[\u202a-\u202e\u2066-\u2069\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
_ENTITY_LENGTH = {"&": 5, "<": 4, ">": 4, '"': 5, "'": 5}


def visible(text: str) -> bool:
    """False for text made only of invisible characters (spaces, zero-width marks, controls,
    lone combining marks, blank letters)."""
    return any(not unicodedata.category(ch).startswith(("Z", "C", "M"))
               and ch not in _BLANK_LETTERS for ch in text)


def sanitize(text: str | None) -> str:
    """User text without the characters that only do harm (see `_UNWANTED`)."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    return _UNWANTED.sub("", text)


def _sent_length(ch: str) -> int:
    return _ENTITY_LENGTH.get(ch) or (2 if ord(ch) > 0xFFFF else 1)


def sent_length(text: str) -> int:
    """How long `text` is once escaped for Telegram's HTML, in UTF-16 units."""
    return sum(_sent_length(ch) for ch in text)


def clip(text: str, limit: int) -> str:
    """`text` cut so that its `sent_length` is at most `limit`, marked with … when cut."""
    if sent_length(text) <= limit:
        return text
    total = 0
    for i, ch in enumerate(text):
        total += _sent_length(ch)
        if total > limit - 1:
            return text[:i].rstrip() + "…"
    return text  # pragma: no cover - the loop always cuts


def clean_text(text: str | None, limit: int = TEXT_LIMIT) -> str:
    """User text with harmful characters and surrounding blank space removed, cut to fit
    `limit` (see `clip`)."""
    return clip(sanitize(text).strip(), limit)


def clean_name(name: str | None) -> str:
    """A person's display name as we keep and show it."""
    name = clean_text(name, NAME_LIMIT)
    return name if visible(name) else ""


# Full-width digits, as Chinese input methods type them, read as the ASCII ones.
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def ascii_digits(text: str) -> str:
    """`text` with full-width digits (０-９) written as ASCII ones; nothing else changed."""
    return text.translate(_FULL_WIDTH_DIGITS)


def typed_number(text: str | None, *, digits: int = 9, prefix: int = 0) -> int | None:
    """The whole number a person typed, or None for anything else.

    ASCII digits, full-width ones (１２) read as ASCII; blank space around it and one # (＃)
    before it are ignored; with `prefix`, up to that many other characters before it that are
    no digit of any kind (诉求12). None for other scripts' digits and superscripts
    (`str.isdigit()` takes "²" and "١٢"; `int()` refuses the one and reads the other), signs,
    decimals, and numbers longer than `digits` (9 digits fit a database id).
    """
    text = ascii_digits(sanitize(text)).strip()
    head = text.rstrip("0123456789")
    number = text[len(head):]
    if not number or len(number) > digits:
        return None
    head = head.rstrip()
    if head[-1:] in ("#", "＃"):
        head = head[:-1].rstrip()
    if len(head) > prefix or any(unicodedata.category(ch).startswith("N") for ch in head):
        return None
    return int(number)
