"""Writing owed messages into the outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Outbox


async def enqueue(
    db: AsyncSession,
    key: str,
    chat_id: int,
    text: str,
    now: datetime,
    *,
    person_id: int | None = None,
    case_id: int | None = None,
    photos: Sequence[str] = (),
    buttons: Sequence[Sequence[dict[str, Any]]] = (),
    reply_to: int | None = None,
    fallback_chat_id: int | None = None,
    fallback_reply_to: int | None = None,
    not_before: datetime | None = None,
    kind: str = "",
) -> Outbox | None:
    """Add a message unless one with the same dedupe key exists; return the new row or None."""
    pending = [o for o in db.new if isinstance(o, Outbox) and o.dedupe_key == key]
    if pending or await db.scalar(select(Outbox.id).where(Outbox.dedupe_key == key)):
        return None
    row = Outbox(
        dedupe_key=key,
        chat_id=chat_id,
        person_id=person_id,
        case_id=case_id,
        text=text,
        photos=list(photos),
        buttons=[list(r) for r in buttons],
        reply_to_message_id=reply_to,
        fallback_chat_id=fallback_chat_id,
        fallback_reply_to=fallback_reply_to,
        kind=kind,
        status="pending",
        not_before=not_before or now,
        attempts=0,
        parts_done=0,
        created_at=now,
    )
    db.add(row)
    return row


async def release_held(db: AsyncSession, person_id: int, now: datetime) -> int:
    """A person who started the bot gets privately what was held for them."""
    result = await db.execute(
        update(Outbox)
        .where(Outbox.person_id == person_id, Outbox.status == "held")
        .values(status="pending", not_before=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
