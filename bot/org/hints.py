"""Category hints: which categories a report's text suggests, from the registry's keywords.

Pure and small: no database, no clock. Chinese is written without spaces, so a keyword
matches as a substring of the text. Where keywords of different categories overlap in the
text, the longer one wins the overlap (楼道灯 is a light, not the 楼道 of a blocked stairway);
a category scores the length of each of its keywords found, so 消防通道 weighs more than 堵.
Ties go to the registry's order; "other" is the fallback and never a suggestion.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from bot.org.directory import CategoryInfo

FALLBACK = "other"


def _fold(text: str) -> str:
    # NFKC makes full-width letters and digits (ＷＩＦＩ, ３单元) the ASCII a keyword is written
    # in; casefold makes Wifi match wifi.
    return unicodedata.normalize("NFKC", text).casefold()


def scores(text: str, categories: Iterable[CategoryInfo]) -> dict[str, int]:
    """Each category's score for `text` (only those above 0), by code."""
    folded = _fold(text)
    if not folded:
        return {}
    # Every occurrence of every keyword: (start, end, category code).
    found: list[tuple[int, int, str]] = []
    for cat in categories:
        if cat.code == FALLBACK or not cat.active:
            continue
        for word in {_fold(w) for w in cat.keywords}:
            if not word:
                continue
            at = folded.find(word)
            while at >= 0:
                found.append((at, at + len(word), cat.code))
                at = folded.find(word, at + 1)
    # Longest first: an occurrence inside a longer one already taken (of another category, or
    # of the same, like 漏水 inside 楼上漏水) adds nothing.
    found.sort(key=lambda f: (f[0] - f[1], f[0]))
    taken: list[tuple[int, int]] = []
    result: dict[str, int] = {}
    for start, end, code in found:
        if any(s <= start and end <= e for s, e in taken):
            continue
        taken.append((start, end))
        result[code] = result.get(code, 0) + (end - start)
    return result


def suggest(text: str, categories: Iterable[CategoryInfo]) -> list[CategoryInfo]:
    """The categories `text` suggests, best first; ties in the order given (the registry's).

    Empty when no keyword matches: the caller then files the report as "other"."""
    cats = list(categories)
    score = scores(text, cats)
    ranked = [(i, c) for i, c in enumerate(cats) if score.get(c.code)]
    ranked.sort(key=lambda ic: (-score[ic[1].code], ic[0]))
    return [c for _, c in ranked]


def best_code(text: str, categories: Iterable[CategoryInfo]) -> str | None:
    """The code of the best suggestion for `text`, or None (the caller's fallback)."""
    best = suggest(text, categories)
    return best[0].code if best else None


def matching_first(text: str | None, categories: list[CategoryInfo]) -> list[CategoryInfo]:
    """`categories` with those `text` suggests first (best first), the rest in their order;
    without a text, as given."""
    if not text:
        return list(categories)
    first = suggest(text, categories)
    codes = {c.code for c in first}
    return first + [c for c in categories if c.code not in codes]
