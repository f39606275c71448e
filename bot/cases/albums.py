"""Photos that arrive one message at a time: albums in groups, photos of a private draft.

Telegram sends an album as separate messages sharing a `media_group_id`, with no count and
no end marker. Parts are stored as they come; once an album has been quiet for
`ALBUM_SETTLE`, the parts become one case. Because the parts live in the database, an album
whose parts straddle a restart still makes one case.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases import duplicates
from bot.cases import lifecycle as cases
from bot.cases.intake import place_of_chat, reporter_for
from bot.cases.outbox import enqueue
from bot.context import Ctx, NotConfigured, begin
from bot.errors import DomainError
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
    """Turn every settled group album that asked for a report into one case.

    Runs from one loop (`App.tick`), but is safe with any number: each album is claimed by
    deleting its parts in the transaction that files its case (see `_finish_one`).
    """
    now = ctx.clock.now()
    asked = func.sum(case((PendingPhoto.intent.is_(True), 1), else_=0))
    last = func.max(PendingPhoto.received_at)
    async with sessions() as db:
        settled = (await db.execute(
            select(PendingPhoto.chat_id, PendingPhoto.media_group_id, asked)
            .where(PendingPhoto.chat_id < 0, PendingPhoto.media_group_id.is_not(None))
            .group_by(PendingPhoto.chat_id, PendingPhoto.media_group_id)
            .having(or_(and_(asked > 0, last <= now - ALBUM_SETTLE),
                        last <= now - STALE_PARTS))
        )).all()
    made = 0
    for chat_id, group_id, intents in settled:
        assert group_id is not None
        try:
            async with sessions() as db:
                if intents:
                    made += await _finish_one(db, ctx, chat_id, group_id)
                else:
                    await _drop_stale(db, chat_id, group_id, now)
        except NotConfigured:
            return made
        except Exception:
            log.exception("album %s in chat %s failed; retried on the next tick", group_id, chat_id)
    return made


async def _drop_stale(db: AsyncSession, chat_id: int, group_id: str, now: datetime) -> None:
    """Nobody asked for a report within STALE_PARTS: the parts are let go."""
    await db.execute(delete(PendingPhoto).where(
        PendingPhoto.chat_id == chat_id, PendingPhoto.media_group_id == group_id,
        PendingPhoto.intent.is_(False), PendingPhoto.received_at <= now - STALE_PARTS))
    await db.commit()


async def _claim(db: AsyncSession, chat_id: int, group_id: str) -> list[PendingPhoto]:
    """Take the album's parts out of the holding table: `DELETE … RETURNING`, so of two
    loops or workers finishing the same album only one gets its parts (the other's delete
    waits for the first to commit and then finds nothing)."""
    rows = await db.execute(
        delete(PendingPhoto)
        .where(PendingPhoto.chat_id == chat_id, PendingPhoto.media_group_id == group_id)
        .returning(PendingPhoto.message_id, PendingPhoto.file_id, PendingPhoto.intent,
                   PendingPhoto.user_id, PendingPhoto.user_name, PendingPhoto.caption,
                   PendingPhoto.on_behalf_of_id, PendingPhoto.on_behalf_of_name)
        .execution_options(synchronize_session=False))
    parts = [PendingPhoto(message_id=r.message_id, file_id=r.file_id, intent=r.intent,
                          user_id=r.user_id, user_name=r.user_name, caption=r.caption,
                          on_behalf_of_id=r.on_behalf_of_id,
                          on_behalf_of_name=r.on_behalf_of_name) for r in rows.all()]
    return sorted(parts, key=lambda p: p.message_id)


async def _finish_one(db: AsyncSession, ctx: Ctx, chat_id: int, group_id: str) -> int:
    parts = await _claim(db, chat_id, group_id)
    intent = next((p for p in parts if p.intent), None)
    if intent is None:
        # Another loop filed it first (or its asking part is gone): nothing to do here.
        await db.rollback()
        return 0
    now = ctx.clock.now()
    tx = await begin(db, ctx)
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
        await duplicates.submit(tx, inp)
    except DomainError as err:
        # Refused (too many reports, say): the album is answered and let go, not retried.
        # The rollback gave its parts back: claim them again, unless another loop did.
        await db.rollback()
        if not await _claim(db, chat_id, group_id):
            await db.rollback()
            return 0
        await enqueue(db, f"album:{chat_id}:{group_id}:refused", chat_id,
                      err.explain(tx.texts), now,
                      reply_to=asked_in)
        await db.commit()
        return 0
    return 1
