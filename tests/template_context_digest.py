"""The variables the digest templates use, in one realistic context (tests/test_templates.py
renders every template with it; EVIL text must come out escaped)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.texts import Texts


def digest_context(texts: Texts, *, now: datetime, evil: str) -> dict[str, Any]:
    return {}
