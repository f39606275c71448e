"""Photos that arrive one message at a time: albums in groups, photos of a private draft.

Telegram sends an album as separate messages sharing a `media_group_id`, with no count and
no end marker. Parts are stored as they come; once an album has been quiet for
`ALBUM_SETTLE`, the parts become one case. Because the parts live in the database, an album
whose parts straddle a restart still makes one case.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import cases
from bot.context import Ctx, NotConfigured, begin
from bot.intake import place_of_chat, reporter_for
from bot.outbox import enqueue
from storage.models import PendingPhoto

log = logging.getLogger(__name__)
ALBUM_SETTLE = timedelta(seconds=3)
# Parts that never joined a case (an album nobody asked to report) are dropped after this.
STALE_PARTS = timedelta(hours=1)


async def hold_photo(db: AsyncSession, part: PendingPhoto) -> None:
    """Store one part; a part seen before (a redelivered update) is ignored."""
    db.add(part)
    try:
        await db.commit()
    except IntegrityError:
        await db.rollback()


async def take_draft_photos(db: AsyncSession, chat_id: int) -> list[str]:
    """The photos a person sent during a private draft, removed from the holding table."""
    rows = (await db.scalars(
        select(PendingPhoto).where(PendingPhoto.chat_id == chat_id).order_by(PendingPhoto.id)
    )).all()
    await db.execute(delete(PendingPhoto).where(PendingPhoto.chat_id == chat_id))
    return [r.file_id for r in rows]


async def count_draft_photos(db: AsyncSession, chat_id: int) -> int:
    count = await db.scalar(
        select(func.count()).select_from(PendingPhoto).where(PendingPhoto.chat_id == chat_id)
    )
    return int(count or 0)


async def finish_albums(sessions: async_sessionmaker[AsyncSession], ctx: Ctx) -> int:
    """Turn every settled group album that asked for a report into one case."""
    now = ctx.clock.now()
    async with sessions() as db:
        settled = (await db.execute(
            select(PendingPhoto.chat_id, PendingPhoto.media_group_id)
            .where(PendingPhoto.chat_id < 0, PendingPhoto.media_group_id.is_not(None))
            .group_by(PendingPhoto.chat_id, PendingPhoto.media_group_id)
            .having(func.max(PendingPhoto.received_at) <= now - ALBUM_SETTLE)
        )).all()
    made = 0
    for chat_id, group_id in settled:
        assert group_id is not None
        try:
            async with sessions() as db:
                made += await _finish_one(db, ctx, chat_id, group_id)
        except NotConfigured:
            return made
        except Exception:
            log.exception("album %s in chat %s failed; retried on the next tick", group_id, chat_id)
    return made


async def _finish_one(db: AsyncSession, ctx: Ctx, chat_id: int, group_id: str) -> int:
    parts = (await db.scalars(
        select(PendingPhoto)
        .where(PendingPhoto.chat_id == chat_id, PendingPhoto.media_group_id == group_id)
        .order_by(PendingPhoto.message_id)
    )).all()
    intent = next((p for p in parts if p.intent), None)
    now = ctx.clock.now()
    if intent is None:
        # Nobody asked for a report (yet): keep the parts a while in case the captioned
        # part is still on its way, then let them go.
        if parts and max(p.received_at for p in parts) <= now - STALE_PARTS:
            await db.execute(delete(PendingPhoto).where(
                PendingPhoto.chat_id == chat_id, PendingPhoto.media_group_id == group_id))
            await db.commit()
        return 0
    tx = await begin(db, ctx)
    await db.execute(delete(PendingPhoto).where(
        PendingPhoto.chat_id == chat_id, PendingPhoto.media_group_id == group_id))
    place = await place_of_chat(db, chat_id)
    if place is None:
        await enqueue(db, f"album:{chat_id}:{group_id}:unbound", chat_id,
                      tx.texts.label("chat_not_bound"), now, reply_to=intent.message_id)
        await db.commit()
        return 0
    building, unit = place
    reporter_id, submitted_by = await reporter_for(
        db, tx, intent.user_id, intent.user_name, intent.on_behalf_of_id,
        intent.on_behalf_of_name, building.id, unit.id if unit else None,
    )
    inp = cases.ReportInput(
        building_id=building.id, unit_id=unit.id if unit else None, reporter_id=reporter_id,
        submitted_by_id=submitted_by, description=intent.caption or "",
        photos=[p.file_id for p in parts], source_chat_id=chat_id,
        source_message_id=intent.message_id,
    )
    asked_in = intent.message_id
    try:
        await cases.report(tx, inp)
    except cases.DomainError as err:
        # Refused (too many reports, say): the album is answered and let go, not retried.
        await db.rollback()
        await db.execute(delete(PendingPhoto).where(
            PendingPhoto.chat_id == chat_id, PendingPhoto.media_group_id == group_id))
        await enqueue(db, f"album:{chat_id}:{group_id}:refused", chat_id,
                      err.explain(tx.texts), now,
                      reply_to=asked_in)
        await db.commit()
        return 0
    return 1
