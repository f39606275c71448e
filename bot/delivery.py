"""The outbox sender: delivers owed messages to Telegram, within its limits, retrying faults.

This is the one place that turns outbox rows into Bot API calls. A row is marked sent in its
own transaction right after Telegram accepted it, so a crash can repeat at most that one
message. Rows for a chat go out in order: a row waiting to be retried holds back the later
rows of its chat, and only of its chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
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
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import notify
from bot.context import Ctx, NotConfigured, begin
from bot.outbox import enqueue, follow_migration
from bot.ratelimit import Limits, Pacer
from bot.texts import CAPTION_LIMIT, TEXT_LIMIT
from storage.models import Case, Outbox, Person

log = logging.getLogger(__name__)
DELIVERY_ERRORS = (TelegramRetryAfter, TelegramForbiddenError, TelegramMigrateToChat,
                   TelegramBadRequest, TelegramServerError, TelegramNetworkError,
                   TimeoutError, OSError)
MAX_BACKOFF = timedelta(hours=1)
MEDIA_GROUP = 10
# Waits for the rate limits shorter than this are slept through; longer ones skip the chat.
SHORT_WAIT = 0.2


def backoff(attempts: int, rnd: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with jitter: about 2, 4, 8 … seconds, at most an hour."""
    base = min(2.0 ** attempts, MAX_BACKOFF.total_seconds())
    return timedelta(seconds=base * (0.5 + rnd() / 2))


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Cut a long text at line breaks (else spaces) into pieces Telegram accepts.

    Never inside an HTML entity such as `&amp;`: user text reaches us escaped.
    """
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = text.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
            amp = text.rfind("&", max(0, cut - 10), cut)
            if amp > 0 and ";" not in text[amp:cut]:
                cut = amp
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


class PartlySent(Exception):
    """Call `done` of a row's calls failed with `error`; the calls before it went through."""

    def __init__(self, done: int, error: Exception) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error


def parts_of(row: Outbox) -> int:
    """How many Bot API sends a row takes, for the rate limits."""
    photos = len(row.photos)
    if photos == 1 and len(row.text) <= CAPTION_LIMIT:
        return 1
    return -(-photos // MEDIA_GROUP) + len(split_text(row.text))


class Delivery:
    def __init__(self, bot: Bot, sessions: async_sessionmaker[AsyncSession], ctx: Ctx,
                 limits: Limits | None = None) -> None:
        self.bot = bot
        self.sessions = sessions
        self.ctx = ctx
        self.pacer = Pacer(limits or Limits())
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def flush(self, batch: int = 500) -> int:
        """Send what is due now; returns how many rows moved on (sent, held, failed, moved).

        A row left to retry later, or to wait for a rate limit, does not count, so
        `while await flush()` ends.
        """
        now = self.ctx.clock.now()
        async with self.sessions() as db:
            due = (await db.execute(
                select(Outbox.id, Outbox.chat_id, Outbox.retry_at)
                .where(Outbox.status == "pending", Outbox.not_before <= now)
                .order_by(Outbox.id)
                .limit(batch)
            )).all()
        waiting: set[int] = set()  # chats whose earlier row must go first
        progressed = 0
        for row_id, chat_id, retry_at in due:
            if chat_id in waiting:
                continue
            if retry_at is not None and retry_at > now:
                waiting.add(chat_id)
                continue
            async with self.sessions() as db:
                row = await db.get(Outbox, row_id)
                if row is None or row.status != "pending":
                    continue
                person = await db.get(Person, row.person_id) if row.person_id else None
                if person is not None and person.dm_ok is False:
                    # Known not to have started the bot: no call, straight to the fallback.
                    await self._unreachable(db, row, person)
                    await db.commit()
                    progressed += 1
                    continue
            # The session is closed while Telegram is called: no lock is held over the network.
            pause = self.pacer.wait(row.chat_id, parts_of(row))
            if pause > SHORT_WAIT:
                waiting.add(row.chat_id)
                continue
            if pause > 0:
                await asyncio.sleep(pause)
            outcome: int | Exception
            parts_done = row.parts_done
            try:
                outcome = await self._send(row)
            except PartlySent as partly:
                if not isinstance(partly.error, DELIVERY_ERRORS):
                    raise partly.error from None
                outcome, parts_done = partly.error, partly.done
            async with self.sessions() as db:
                fresh = await db.get(Outbox, row_id)
                if fresh is None:
                    continue
                fresh.parts_done = parts_done
                ok = await self._record(db, fresh, outcome)
                await db.commit()
                if ok or fresh.status != "pending" or fresh.retry_at is None:
                    progressed += 1  # sent, settled, or to be tried again at once
                else:
                    waiting.add(chat_id)
        return progressed

    async def _record(self, db: AsyncSession, row: Outbox, outcome: int | Exception) -> bool:
        """Write down what became of one send: sent, to retry, held, or given up."""
        now = self.ctx.clock.now()
        person = await db.get(Person, row.person_id) if row.person_id else None
        row.attempts += 1
        try:
            if isinstance(outcome, Exception):
                raise outcome
            message_id = outcome
        except TelegramRetryAfter as exc:
            self.pacer.block(row.chat_id, exc.retry_after)
            row.retry_at = now + timedelta(seconds=exc.retry_after)
            row.last_error = f"429 retry after {exc.retry_after}s"
            return False
        except TelegramForbiddenError as exc:
            row.last_error = f"403 {exc.message}"[:500]
            if person is not None:
                await self._unreachable(db, row, person)
            else:
                row.status = "undeliverable"
                log.warning("outbox %s: the group refuses the bot (removed or banned)", row.id)
                await self._lost(db, row)
            return False
        except TelegramMigrateToChat as exc:
            log.info("a group moved to a new chat id")
            await follow_migration(db, row.chat_id, exc.migrate_to_chat_id)
            row.retry_at = None
            return False
        except TelegramBadRequest as exc:
            row.last_error = f"400 {exc.message}"[:500]
            lowered = exc.message.lower()
            if "chat not found" in lowered and person is not None:
                await self._unreachable(db, row, person)
            elif "chat not found" in lowered:
                row.status = "undeliverable"
                await self._lost(db, row)
            elif row.photos:
                # A photo Telegram no longer knows: the text still goes out.
                row.photos = []
                row.retry_at = None
            else:
                row.status = "failed"
                log.error("outbox %s rejected by Telegram: %s", row.id, exc.message)
            return False
        except (TelegramServerError, TelegramNetworkError, TimeoutError, OSError) as exc:
            row.retry_at = now + backoff(row.attempts)
            row.last_error = f"{type(exc).__name__}: {exc}"[:500]
            return False
        row.status = "sent"
        row.sent_at = now
        row.sent_message_id = message_id
        row.retry_at = None
        if person is not None and not person.dm_ok:
            person.dm_ok = True
        return True

    async def _send(self, row: Outbox) -> int:
        """The Bot API calls for one row; returns the id of the message carrying the buttons.

        A row may take several calls (photos, then text in pieces). They are paced like
        separate messages, and a retry resumes after the last call that went through, so a
        fault halfway never repeats the photos already sent.
        """
        markup = keyboard(row.buttons)
        reply = (ReplyParameters(message_id=row.reply_to_message_id,
                                 allow_sending_without_reply=True)
                 if row.reply_to_message_id else None)
        calls: list[Callable[[ReplyParameters | None], Awaitable[int]]] = []
        photos: list[str] = row.photos
        chat = row.chat_id
        if len(photos) == 1 and len(row.text) <= CAPTION_LIMIT:
            async def captioned(rp: ReplyParameters | None) -> int:
                msg = await self.bot.send_photo(chat, photos[0], caption=row.text or None,
                                                reply_markup=markup, reply_parameters=rp)
                return msg.message_id
            calls.append(captioned)
        else:
            for start in range(0, len(photos), MEDIA_GROUP):
                calls.append(self._photos_call(chat, photos[start:start + MEDIA_GROUP]))
            pieces = split_text(row.text)
            for i, piece in enumerate(pieces):
                calls.append(self._text_call(chat, piece, markup if i == len(pieces) - 1
                                             else None))
        message_id = 0
        for index in range(row.parts_done, len(calls)):
            if index > row.parts_done:
                await asyncio.sleep(self.pacer.wait(chat))
            self.pacer.sent(chat)
            try:
                message_id = await calls[index](reply if index == 0 else None)
            except Exception as exc:
                raise PartlySent(index, exc) from exc
        return message_id

    def _photos_call(self, chat: int, chunk: list[str]
                     ) -> Callable[[ReplyParameters | None], Awaitable[int]]:
        async def call(rp: ReplyParameters | None) -> int:
            if len(chunk) == 1:  # a media group needs two to ten items
                return (await self.bot.send_photo(chat, chunk[0], reply_parameters=rp)).message_id
            sent = await self.bot.send_media_group(
                chat, [InputMediaPhoto(media=p) for p in chunk], reply_parameters=rp)
            return sent[-1].message_id
        return call

    def _text_call(self, chat: int, text: str, markup: InlineKeyboardMarkup | None
                   ) -> Callable[[ReplyParameters | None], Awaitable[int]]:
        async def call(rp: ReplyParameters | None) -> int:
            msg = await self.bot.send_message(chat, text, reply_markup=markup,
                                              reply_parameters=rp)
            return msg.message_id
        return call

    async def _unreachable(self, db: AsyncSession, row: Outbox, person: Person) -> None:
        """Hold a private message until the person starts the bot; meanwhile use the fallback."""
        person.dm_ok = False
        row.status = "held"
        if row.fallback_chat_id is None:
            # Kept as held (`gridbot outbox` lists it) until the person starts the bot.
            log.warning("outbox %s held: its person cannot be written to and there is no "
                        "group to fall back on", row.id)
            await self._lost(db, row)
            return
        # The copy goes to a group: phone numbers in it are masked.
        if row.fallback_reply_to is not None:
            text = notify.mask_phones(row.text)
        else:
            text = self.ctx.texts.render(
                "fallback_mention", user_id=person.id, name=person.name,
                link=self.ctx.deep_link("start"),
            ) + "\n\n" + notify.mask_phones(row.text)
        fallback = await enqueue(
            db, f"{row.dedupe_key}:fallback", row.fallback_chat_id, text,
            self.ctx.clock.now(), case_id=row.case_id, photos=row.photos, buttons=row.buttons,
            reply_to=row.fallback_reply_to,
        )
        if fallback is not None and row.kind == "reporter":
            fallback.kind = "reporter_fallback"

    async def _lost(self, db: AsyncSession, row: Outbox) -> None:
        """Nothing reaches the reporter of a case: the grid leader is told, to call them."""
        if row.kind not in ("reporter", "reporter_fallback") or row.case_id is None:
            return
        try:
            tx = await begin(db, self.ctx)
        except NotConfigured:
            return
        case = await db.get(Case, row.case_id)
        if case is not None:
            await notify.reporter_unreachable(tx, case)

    async def run(self, stop: asyncio.Event, tick: float = 1.0,
                  also: Callable[[], object] | None = None) -> None:
        """Deliver until `stop` is set; wakes at once when a handler has written messages."""
        while not stop.is_set():
            try:
                if also is not None:
                    result = also()
                    if asyncio.iscoroutine(result):
                        await result
                while await self.flush() and not stop.is_set():
                    pass
            except Exception:
                log.exception("delivery pass failed; trying again")
            await self.wait(tick)
