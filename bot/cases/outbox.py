"""Writing owed messages into the outbox, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases.buttons import CaseButton
from bot.cases.voice import Voice
from bot.org.geo import Venue
from storage.models import Case, Node, Outbox

# Rows that may still go out: a chat id that changes must change in them too.
UNSENT = ("pending", "held", "failed")
# Rows done with: kept for the retention period (each holds names and texts), then deleted.
# "dropped": a reminder list whose cases had all moved on when its turn came.
DONE = ("sent", "superseded", "dropped")
PRUNE_BATCH = 1000
UPLOAD_KINDS = ("photo", "document")


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
    markup: dict[str, Any] | None = None,
    upload: bytes | None = None,
    upload_name: str | None = None,
    upload_kind: str | None = None,
    voice: Voice | None = None,
    venue: Venue | None = None,
) -> int | None:
    """Add a message unless one with the same dedupe key exists; return the new row's id or
    None.

    `upload` is a file we made (a chart: `upload_kind` 'photo'; an export: 'document'), sent
    as a multipart upload named `upload_name` with `text` as its caption. The sender drops
    the bytes once the row is sent.

    `voice` (a voice report's note) is re-sent by its file_id right after the text: it is
    kept in `photos` as the one entry that is not a photo's file_id, `{"voice": id}` or
    `{"video_note": id}`, always after the photos. `venue` (a case's place, asked for with
    📍) goes the same way, as a venue message after the text.

    One statement: the unique dedupe key decides at the insert, so a second worker racing on
    the same key gets None instead of an error that would roll its whole update back.
    """
    values = dict(
        dedupe_key=key,
        chat_id=chat_id,
        person_id=person_id,
        case_id=case_id,
        text=text,
        photos=[*photos, *([voice.media()] if voice else []),
                *([venue.media()] if venue else [])],
        buttons=[list(r) for r in buttons],
        markup=markup,
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
    if upload is not None:
        if upload_kind not in UPLOAD_KINDS:
            raise ValueError(f"upload_kind must be one of {UPLOAD_KINDS}, not {upload_kind!r}")
        values.update(upload=upload, upload_name=upload_name or "file",
                      upload_kind=upload_kind)
    stmt = insert_of(db)(Outbox).values(**values).on_conflict_do_nothing(
        index_elements=[Outbox.dedupe_key]).returning(Outbox.id)
    row_id: int | None = await db.scalar(stmt)
    return row_id


def insert_of(db: AsyncSession) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT DO NOTHING (both databases do)."""
    return pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert


async def release_held(db: AsyncSession, person_id: int, now: datetime) -> int:
    """A person who started the bot gets privately what was held for them.

    Except cards whose buttons the case has moved past (they rated, or someone else acted,
    on the copy in the group meanwhile): those would only say "this button is stale".
    """
    rows = (await db.scalars(
        select(Outbox).where(Outbox.person_id == person_id, Outbox.status == "held")
        .order_by(Outbox.id)
    )).all()
    released = 0
    for row in rows:
        rev = _button_rev(row)
        case = await db.get(Case, row.case_id) if rev is not None and row.case_id else None
        if case is not None and case.rev != rev:
            row.status = "superseded"
            continue
        row.status = "pending"
        row.not_before = now
        row.retry_at = None
        released += 1
    return released


def _button_rev(row: Outbox) -> int | None:
    """The case rev the row's case buttons were made for, if it has any."""
    for line in row.buttons:
        for b in line:
            parsed = CaseButton.unpack(str(b.get("callback_data", "")))
            if parsed is not None:
                return parsed.rev
    return None


async def follow_migration(db: AsyncSession, old: int, new: int) -> None:
    """A group became a supergroup: its new id replaces the old one wherever we keep it."""
    await db.execute(update(Node).where(Node.chat_id == old).values(chat_id=new))
    await db.execute(update(Case).where(Case.source_chat_id == old).values(source_chat_id=new))
    for column in (Outbox.chat_id, Outbox.fallback_chat_id):
        await db.execute(update(Outbox).where(column == old, Outbox.status.in_(UNSENT))
                         .values({column: new}))


async def prune_sent(sessions: async_sessionmaker[AsyncSession], now: datetime,
                     retention_days: float, batch: int = PRUNE_BATCH) -> int:
    """Delete sent and superseded rows created more than `retention_days` ago; returns how
    many. In batches, each its own short transaction, so the sender is never held up long.

    Rows not sent (held, failed, undeliverable) stay: `gridbot outbox` shows them until an
    operator acts, and a person who starts the bot still gets what was held for them.
    """
    cutoff = now - timedelta(days=retention_days)
    total = 0
    while True:
        async with sessions() as db:
            ids = select(Outbox.id).where(Outbox.status.in_(DONE), Outbox.created_at < cutoff) \
                .order_by(Outbox.created_at).limit(batch) \
                .with_for_update(skip_locked=True).scalar_subquery()  # as in inbox.prune
            result = await db.execute(delete(Outbox).where(Outbox.id.in_(ids)))
            await db.commit()
        count = int(getattr(result, "rowcount", 0) or 0)
        total += count
        if count < batch:
            return total
