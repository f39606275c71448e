"""Voice reports: a voice note or a video note standing for a report's description.

Telegram keeps the file; we keep its file_id on the case (`cases.voice_*`) and send it on to
staff by that id, as a part of their card's outbox row (see `bot.telegram.delivery.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.texts import Texts
from storage.models import Case

KINDS = ("voice", "video_note")
# Telegram takes voice notes of any length; nobody listens to a quarter of an hour on a
# phone between two errands. Longer ones are refused politely, with the length asked for.
MAX_SECONDS = 5 * 60


@dataclass(frozen=True)
class Voice:
    file_id: str
    kind: str  # "voice" or "video_note"
    seconds: int

    def media(self) -> dict[str, str]:
        """Its entry in an outbox row's media (`Outbox.photos`), after the photos."""
        return {self.kind: self.file_id}


def of_case(case: Case) -> Voice | None:
    if not case.voice_file_id or case.voice_kind not in KINDS:
        return None
    return Voice(case.voice_file_id, case.voice_kind, case.voice_seconds or 0)


def problem(voice: Voice) -> str | None:
    """Why a voice cannot stand for a description (an err_* label code), or None.

    Duration 0: Telegram rounds down, so this is a tap on the microphone, nothing said.
    """
    if voice.seconds <= 0:
        return "voice_empty"
    if voice.seconds > MAX_SECONDS:
        return "voice_too_long"
    return None


def from_media(entry: Any) -> tuple[str, str] | None:
    """(kind, file_id) of an outbox media entry that is a voice; None for a photo's file_id."""
    if isinstance(entry, dict):
        for kind in KINDS:
            if isinstance(entry.get(kind), str):
                return kind, entry[kind]
    return None



def line(texts: Texts, voice: Voice) -> str:
    """"🎤 语音 0:42", as plain text (templates escape it with the description it joins)."""
    return texts.label("voice_note", kind=voice.kind, count=voice.seconds).unescape()


def described(texts: Texts, case: Case) -> str:
    """A case's description as staff and its reporter read it: the voice's line first, then
    the text that came with it (if any)."""
    voice = of_case(case)
    if voice is None:
        return case.description
    return "\n".join(p for p in (line(texts, voice), case.description) if p)
