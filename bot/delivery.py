"""The outbox sender: delivers owed messages to Telegram, retrying what failed.

This is the one place that turns outbox rows into Bot API calls. A row is marked sent in its
own transaction right after Telegram accepted it; rows for a chat go out in order, and a chat
that answers "retry later" holds back only its own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyParameters,
)
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.context import Ctx
from bot.outbox import enqueue
from bot.texts import CAPTION_LIMIT, TEXT_LIMIT
from storage.models import Case, Node, Outbox, Person

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=1)


def backoff(attempts: int, rnd: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with jitter: about 2, 4, 8 … seconds, at most an hour."""
    base = min(2.0 ** attempts, MAX_BACKOFF.total_seconds())
    return timedelta(seconds=base * (0.5 + rnd() / 2))


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut a long text at line breaks (else spaces) into pieces Telegram accepts."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = text.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    pieces.append(text)
    return pieces


def keyboard(buttons: list[list[dict[str, str]]]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton.model_validate(b) for b in row] for row in buttons]
    )


class Delivery:
    def __init__(self, bot: Bot, sessions: async_sessionmaker[AsyncSession], ctx: Ctx) -> None:
        self.bot = bot
        self.sessions = sessions
        self.ctx = ctx
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def flush(self, batch: int = 200) -> int:
        """Send what is due now; returns how many rows moved on (sent, held, failed, moved).

        A row left to retry later does not count, so `while await flush()` ends.
        """
        now = self.ctx.clock.now()
        async with self.sessions() as db:
            ids = list((await db.scalars(
                select(Outbox.id)
                .where(Outbox.status == "pending", Outbox.not_before <= now)
                .order_by(Outbox.id)
                .limit(batch)
            )).all())
        held_back: set[int] = set()
        progressed = 0
        for row_id in ids:
            async with self.sessions() as db:
                row = await db.get(Outbox, row_id)
                if row is None or row.status != "pending" or row.chat_id in held_back:
                    continue
                chat_id = row.chat_id
                ok = await self._deliver(db, row)
                await db.commit()
                if ok or row.status != "pending" or row.chat_id != chat_id:
                    progressed += 1
                else:
                    held_back.add(row.chat_id)
        return progressed

    async def _deliver(self, db: AsyncSession, row: Outbox) -> bool:
        now = self.ctx.clock.now()
        person = await db.get(Person, row.person_id) if row.person_id else None
        if person is not None and person.dm_ok is False:
            await self._unreachable(db, row, person)
            return False
        row.attempts += 1
        try:
            message_id = await self._send(row)
        except TelegramRetryAfter as exc:
            row.not_before = now + timedelta(seconds=exc.retry_after)
            row.last_error = f"429 retry after {exc.retry_after}s"
            return False
        except TelegramForbiddenError as exc:
            row.last_error = f"403 {exc.message}"
            if person is not None:
                await self._unreachable(db, row, person)
            else:
                row.status = "undeliverable"
                log.warning("outbox %s: chat %s refuses the bot", row.id, row.chat_id)
            return False
        except TelegramMigrateToChat as exc:
            await self._migrate(db, row.chat_id, exc.migrate_to_chat_id)
            row.not_before = now
            return False
        except TelegramBadRequest as exc:
            row.last_error = f"400 {exc.message}"
            if "chat not found" in exc.message.lower() and person is not None:
                await self._unreachable(db, row, person)
            elif row.photos:
                # A photo Telegram no longer knows: the text still goes out.
                row.photos = []
                row.not_before = now
            else:
                row.status = "failed"
                log.error("outbox %s rejected by Telegram: %s", row.id, exc.message)
            return False
        except (TelegramServerError, TelegramNetworkError, TimeoutError, OSError) as exc:
            row.not_before = now + backoff(row.attempts)
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            return False
        row.status = "sent"
        row.sent_at = now
        row.sent_message_id = message_id
        if person is not None and not person.dm_ok:
            person.dm_ok = True
        return True

    async def _send(self, row: Outbox) -> int:
        markup = keyboard(row.buttons)
        reply = (ReplyParameters(message_id=row.reply_to_message_id,
                                 allow_sending_without_reply=True)
                 if row.reply_to_message_id else None)
        photos: list[str] = row.photos
        if len(photos) == 1 and len(row.text) <= CAPTION_LIMIT:
            msg = await self.bot.send_photo(row.chat_id, photos[0], caption=row.text,
                                            reply_markup=markup, reply_parameters=reply)
            return msg.message_id
        if photos:
            await self.bot.send_media_group(
                row.chat_id, [InputMediaPhoto(media=p) for p in photos[:10]],
                reply_parameters=reply,
            )
            reply = None
        pieces = split_text(row.text)
        message_id = 0
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            msg = await self.bot.send_message(row.chat_id, piece,
                                              reply_markup=markup if last else None,
                                              reply_parameters=reply if i == 0 else None)
            message_id = msg.message_id
        return message_id

    async def _unreachable(self, db: AsyncSession, row: Outbox, person: Person) -> None:
        """Hold a private message until the person starts the bot; meanwhile use the fallback."""
        person.dm_ok = False
        row.status = "held"
        if row.fallback_chat_id is None:
            log.warning("outbox %s held: person %s cannot be written to and has no fallback",
                        row.id, person.id)
            return
        if row.fallback_reply_to is not None:
            text = row.text
        else:
            text = self.ctx.texts.render(
                "fallback_mention", user_id=person.id, name=person.name,
                link=self.ctx.deep_link("start"),
            ) + "\n\n" + row.text
        await enqueue(
            db, f"{row.dedupe_key}:fallback", row.fallback_chat_id, text,
            self.ctx.clock.now(), case_id=row.case_id, photos=row.photos, buttons=row.buttons,
            reply_to=row.fallback_reply_to,
        )

    async def _migrate(self, db: AsyncSession, old: int, new: int) -> None:
        """A group became a supergroup: its id changed everywhere we keep it."""
        log.info("chat %s migrated to %s", old, new)
        await db.execute(update(Node).where(Node.chat_id == old).values(chat_id=new))
        await db.execute(update(Case).where(Case.source_chat_id == old)
                         .values(source_chat_id=new))
        for column in (Outbox.chat_id, Outbox.fallback_chat_id):
            await db.execute(update(Outbox).where(column == old, Outbox.status == "pending")
                             .values({column: new}))

    async def run(self, stop: asyncio.Event, tick: float = 1.0,
                  also: Callable[[], object] | None = None) -> None:
        """Deliver until `stop` is set; wakes at once when a handler has written messages."""
        while not stop.is_set():
            try:
                if also is not None:
                    result = also()
                    if asyncio.iscoroutine(result):
                        await result
                while await self.flush():
                    pass
            except Exception:
                log.exception("delivery pass failed; trying again")
            await self.wait(tick)
