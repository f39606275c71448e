"""The outbox sender: delivers owed messages to Telegram, within its limits, retrying faults.

This is the one place that turns outbox rows into Bot API calls. A row is marked sent in its
own transaction right after Telegram accepted it, so a crash can repeat at most that one
message. Chats are served side by side, each by one worker at a time, so every chat gets its
rows strictly in order while no chat waits for another: a row waiting to be retried, or a
chat waiting for its rate limit, holds back the later rows of its chat and only of its chat.
Whatever Telegram (or a proxy before it) answers, the outcome belongs to one row.

Several worker processes may share one PostgreSQL: a chat is served by the worker holding
its claim (`bot.telegram.claims`, an advisory lock kept outside any transaction), so no two workers
send a chat's rows, and the chat's rows stay in order. A chat another worker is serving is
left alone for a moment and looked at again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import heapq
import html
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    BufferedInputFile,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
)
from sqlalchemy import case as sql_case
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases import notify, reminders
from bot.cases.outbox import enqueue, follow_migration
from bot.cases.voice import from_media
from bot.context import Ctx, NotConfigured, begin
from bot.org.geo import Venue, venue_of
from bot.telegram.claims import OUTBOX_CHAT, Claim, Claims
from bot.telegram.outage import Outage, is_transient
from bot.telegram.ratelimit import Limits, Pacer
from bot.telegram.session import (
    DIRECT_KIND,
    OUTBOX_CALL,
    accepted,
    accepted_result,
    describe,
    message_id_of,
    reply_markup_of,
)
from bot.texts import CAPTION_LIMIT, TEXT_LIMIT
from storage.models import Case, Outbox, Person, ReportPrompt

log = logging.getLogger(__name__)
MAX_BACKOFF = timedelta(hours=1)
MEDIA_GROUP = 10
# In `flush`, waits for the rate limits shorter than this are slept through; longer ones
# leave the chat for a later pass.
SHORT_WAIT = 0.2
# In `run`, a chat's worker sleeps through waits up to this long (one message a second to a
# private chat); longer ones end its turn, and the chat is picked up again when it is free.
# Sleeping through the second keeps the chat's place among CONCURRENT_CHATS; ending the turn
# instead, or more places, cost two to three times the CPU for a morning of reminders, for
# 3-4% less time (bench.delivery, docs/benchmarks.md).
RUN_WAIT = 1.5
# Between the calls of one row (photos, then text): how long to wait for a slot before the
# rest of the row is left for its next turn.
PART_WAIT = 5.0
# Chats served at once, and rows one chat sends before the others get their turn.
CONCURRENT_CHATS = 32
ROWS_PER_TURN = 20
# Answers nobody can explain (an HTML page, 404, an unknown exception): this many tries of a
# row in all, then it ends `failed` with the reason. 5xx and lost connections are Telegram
# being away and are retried for as long as it takes.
MAX_UNEXPECTED = 8
# Tries to write down what Telegram answered before the row is left pending (to be resent).
RECORD_TRIES = 6
# How long a chat found served by another worker is not looked at again (seconds).
ELSEWHERE = 1.0
# How far back a worker taking a chat over looks for what was sent there (the group limit
# counts a minute).
RECALL = timedelta(seconds=60)
TAG = re.compile(r"<[^>]*>")
TRANSIENT = (TelegramServerError, TelegramNetworkError, TimeoutError, OSError)
# A reminder list none of whose cases is still in the state it spoke of when its turn came.
DROPPED = "dropped"
# A sent row keeps no file: the table is no store of charts and exports.
_DROP_UPLOAD: dict[str, Any] = {"upload": None}


# A chat's answers to what its person asked (queued by bot.telegram.session) go before its
# background messages (reminders, digests, notices), each kind in the order written.
ANSWERS_FIRST = sql_case((Outbox.kind == DIRECT_KIND, 0), else_=1)


class Step(enum.Enum):
    """What became of one turn of one row, for the chat's worker."""

    SENT = "sent"
    SETTLED = "settled"  # held, failed, undeliverable: it will not hold the chat back
    AGAIN = "again"  # changed (moved to a new chat id, a part dropped): try again at once
    LATER = "later"  # to be retried after a while: the chat waits
    PAUSED = "paused"  # the rate limit says not now: the chat waits
    GONE = "gone"  # no longer pending (sent or erased meanwhile)


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


def without_formatting(text: str) -> str:
    """The text with its HTML tags taken out, still valid for the HTML parse mode."""
    return html.escape(html.unescape(TAG.sub("", text)), quote=False)


@dataclass(frozen=True)
class Part:
    """One Bot API call of a row: a photo with the text as caption, photos, a file we made
    (an upload, maybe with the text as caption), a text piece, or a voice report's note
    (re-sent by its file_id, in `photos`; `media` says "voice" or "video_note")."""

    kind: str  # "captioned", "photos", "upload", "text", "voice" or "venue"
    photos: tuple[str, ...] = ()
    text: str = ""
    markup: bool = False  # the row's buttons go on this call
    media: str = ""
    venue: Venue | None = None


def plan(row: Outbox) -> list[Part]:
    """The calls a row takes. Stable while the row is resumed: `parts_done` counts into it."""
    # Voice and venue entries sit after the photos in `row.photos` (bot.cases.outbox.enqueue).
    photos = [p for p in row.photos if isinstance(p, str)]
    voices = [v for v in map(from_media, row.photos) if v is not None]
    venues = [v for v in map(venue_of, row.photos) if v is not None]
    text = row.text
    if row.upload_kind:
        return _plan_upload(row)
    # A single photo carries a short text as its caption; not once the row is partly sent
    # (its photos went out alone, and a photo dropped since must not shift the text), nor
    # with a voice after it (a resumed row could not tell which of the two went out).
    if (len(photos) == 1 and len(text) <= CAPTION_LIMIT and row.parts_done == 0
            and not voices and not venues):
        return [Part("captioned", (photos[0],), text, markup=True)]
    parts = [Part("photos", tuple(photos[i:i + MEDIA_GROUP]))
             for i in range(0, len(photos), MEDIA_GROUP)]
    pieces = split_text(text) if text.strip() or not (photos or venues) else []
    parts += [Part("text", text=p, markup=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    # The voice right after the card it belongs to: the card says what it is (语音 0:42).
    parts += [Part("voice", (file_id,), media=kind) for kind, file_id in voices]
    parts += [Part("venue", venue=v) for v in venues]
    return parts


def _plan_upload(row: Outbox) -> list[Part]:
    """A file we made, then the text: as its caption when it fits (Telegram takes 1024
    characters), else in pieces after it. Once the file went out its caption cannot grow,
    so a resumed row keeps the text as pieces after it."""
    text = row.text
    if len(text) <= CAPTION_LIMIT and row.parts_done == 0:
        return [Part("upload", text=text, markup=True)]
    pieces = split_text(text) if text.strip() else []
    return [Part("upload", markup=not pieces)] + [
        Part("text", text=p, markup=i == len(pieces) - 1) for i, p in enumerate(pieces)]


def parts_of(row: Outbox) -> int:
    """How many Bot API sends are left of a row, for the rate limits."""
    return max(1, len(plan(row)) - row.parts_done)


class PartlySent(Exception):
    """Call `done` of a row's calls failed with `error`; the calls before it went through
    (`sent_id`: the card's message among them, kept for when the rest goes later)."""

    def __init__(self, done: int, error: Exception, part: Part | None = None,
                 sent_id: int | None = None) -> None:
        super().__init__(str(error))
        self.done = done
        self.error = error
        self.part = part
        self.sent_id = sent_id


class NoSlot(Exception):
    """The rate limit of the chat leaves no slot for the rest of a row for `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"rate limit: {seconds:.1f}s")
        self.seconds = seconds


@dataclass(frozen=True)
class Due:
    """A chat's first row to send, with what the sender needs to know of its person."""

    row: Outbox
    person: bool  # the row names a person we know
    dm_ok: bool | None  # theirs: whether the bot can write to them (None: not known yet)


class Delivery:
    def __init__(self, bot: Bot, sessions: async_sessionmaker[AsyncSession], ctx: Ctx,
                 limits: Limits | None = None, concurrency: int = CONCURRENT_CHATS) -> None:
        self.bot = bot
        self.sessions = sessions
        self.ctx = ctx
        self.pacer = Pacer(limits or Limits())
        self.concurrency = concurrency
        self.outage = Outage(log, "outbox delivery")
        self._wake = asyncio.Event()
        # When each chat last had a turn: chats not served for longest go first.
        self._served: dict[int, float] = {}
        self.claims = Claims.of(sessions)
        # Chats another worker process was serving, and until when they are left to it.
        self._elsewhere: dict[int, float] = {}
        # When the rows this worker left to retry later are due again (monotonic, a heap).
        self._retries: list[float] = []
        # Chats whose last turn ended with nothing more due in them.
        self._drained: set[int] = set()
        # Whether the last pass found more chats than free places.
        self._crowded = False
        # Counts `wake` calls: a worker ending need not wake the loop unless one came meanwhile.
        self._wakes = 0

    def wake(self) -> None:
        self._wakes += 1
        self._wake.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    # --- choosing chats --------------------------------------------------------------------

    async def due_chats(self, now: datetime, exclude: Iterable[int] = (),
                        limit: int = 1000) -> list[int]:
        """Chats with a row to send now whose rows are not waiting for a retry.

        Chats, not rows: however many rows one chat has queued, the others are seen.
        """
        in_backoff = func.max(sql_case((Outbox.retry_at > now, 1), else_=0))
        query = (select(Outbox.chat_id, func.min(Outbox.id))
                 .where(Outbox.status == "pending", Outbox.not_before <= now)
                 .group_by(Outbox.chat_id).having(in_backoff == 0)
                 .order_by(func.min(Outbox.id)).limit(limit))
        skip = list(exclude)
        if skip:
            query = query.where(Outbox.chat_id.not_in(skip))
        async with self.sessions() as db:
            found = (await db.execute(query)).all()
        clock = time.monotonic()
        self._elsewhere = {c: t for c, t in self._elsewhere.items() if t > clock}
        chats = [int(chat) for chat, _ in found if int(chat) not in self._elsewhere]
        # Never served first, then those served longest ago; the oldest row breaks ties.
        order = {chat: i for i, chat in enumerate(chats)}
        return sorted(chats, key=lambda c: (self._served.get(c, 0.0), order[c]))

    async def flush(self, batch: int = 500) -> int:
        """One pass over what is due now, chats side by side; returns how many rows moved on
        (sent, held, failed, moved). Rows left to retry later, or to wait for a rate limit,
        do not count, so `while await flush()` ends."""
        chats = await self.due_chats(self.ctx.clock.now(), limit=batch)
        gate = asyncio.Semaphore(self.concurrency)

        async def turn(chat: int) -> int:
            async with gate:
                return await self.serve(chat, SHORT_WAIT)

        results = await asyncio.gather(*(turn(c) for c in chats), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def serve(self, chat_id: int, max_pause: float,
                    stop: asyncio.Event | None = None) -> int:
        """One turn of one chat: its due rows in order, until one must wait, the turn is
        over or `stop` is set. Returns how many rows moved on.

        Nothing is sent without the chat's claim; a chat another worker holds is skipped.
        """
        self._drained.discard(chat_id)
        claim = await self.claims.take(OUTBOX_CHAT, chat_id)
        if claim is None:
            self._elsewhere[chat_id] = time.monotonic() + ELSEWHERE
            return 0
        try:
            if self.claims.shared:
                await self._recall(chat_id)
            return await self._turn(chat_id, max_pause, stop, claim)
        finally:
            await self.claims.release(claim)

    async def _recall(self, chat_id: int) -> None:
        """Another worker may have served this chat a moment ago: pace it by what the
        database says was sent there in the last minute, not only by what this one sent."""
        now = self.ctx.clock.now()
        async with self.sessions() as db:
            recent = (await db.execute(
                select(Outbox.sent_at, Outbox.parts_done)
                .where(Outbox.chat_id == chat_id, Outbox.sent_at >= now - RECALL))).all()
        self.pacer.seed(chat_id, [((now - at).total_seconds(), max(1, parts))
                                  for at, parts in recent if at is not None])

    async def _turn(self, chat_id: int, max_pause: float, stop: asyncio.Event | None,
                    claim: Claim) -> int:
        self._served[chat_id] = time.monotonic()
        moved = 0
        # The chat's next due row, once read in the transaction that wrote down the one before
        # it: a row costs one transaction, not two.
        ahead: Due | None = None
        known = False
        for turn in range(ROWS_PER_TURN):
            if stop is not None and stop.is_set():
                break
            if not claim.valid:
                break  # the claim went with its connection: another worker may have the chat
            if not known or self.pacer.take_answer_queued(chat_id):
                # (An answer queued meanwhile goes before the row read ahead.)
                ahead = await self._first_due(chat_id)
            if ahead is None:
                self._drained.add(chat_id)
                break  # nothing due in this chat now
            step, ahead, known = await self._deliver(ahead, max_pause,
                                                     more=turn + 1 < ROWS_PER_TURN)
            self.outage.ok()
            if step in (Step.SENT, Step.SETTLED, Step.AGAIN):
                moved += 1
            if step in (Step.LATER, Step.PAUSED):
                break
        return moved

    # --- one row ---------------------------------------------------------------------------

    async def _next_due(self, db: AsyncSession, chat_id: int) -> Due | None:
        """The chat's first row to send, with its person (if any) and whether they can be
        written to, in one statement."""
        now = self.ctx.clock.now()
        found = (await db.execute(
            select(Outbox, Person.id, Person.dm_ok)
            .outerjoin(Person, Person.id == Outbox.person_id)
            .where(Outbox.chat_id == chat_id, Outbox.status == "pending",
                   Outbox.not_before <= now)
            .order_by(ANSWERS_FIRST, Outbox.id).limit(1))).first()
        if found is None:
            return None
        row, person_id, dm_ok = found
        if row.retry_at is not None and row.retry_at > now:
            return None  # the chat's rows wait behind it
        return Due(row, person_id is not None, dm_ok)

    async def _first_due(self, chat_id: int) -> Due | None:
        async with self.sessions() as db:
            return await self._next_due(db, chat_id)

    async def _deliver(self, due: Due, max_pause: float,
                       more: bool) -> tuple[Step, Due | None, bool]:
        """Send (or settle) the chat's first due row, read after the chat was claimed.

        Returns the step, and when `more` rows may follow in this turn and the row moved on,
        the chat's next due row read in the transaction that wrote this one down (with True;
        False when it was not looked for).
        """
        row = due.row
        if row.kind == reminders.LIST_KIND and row.parts_done == 0:
            current = await self._freshen(row)
            if current is None:
                async with self.sessions() as db:
                    ahead = await self._next_due(db, row.chat_id) if more else None
                return Step.SETTLED, ahead, more
            due = Due(current, due.person, due.dm_ok)
            row = current
        if due.person and due.dm_ok is False:
            # Known not to have started the bot: no call, straight to the fallback.
            async with self.sessions() as db:
                fresh = await db.get(Outbox, row.id)
                person = await db.get(Person, row.person_id)
                step = Step.GONE
                if fresh is not None and fresh.status == "pending" and person is not None:
                    await self._unreachable(db, fresh, person)
                    step = Step.SETTLED
                ahead = await self._next_due(db, row.chat_id) if more else None
                await db.commit()
            self.wake()  # the fallback goes to another chat
            return step, ahead, more
        # No session is open while Telegram is called: no lock is held over the network.
        if not await self.pacer.acquire(row.chat_id, parts_of(row), max_pause):
            return Step.PAUSED, None, False
        if row.kind != DIRECT_KIND and self.pacer.take_answer_queued(row.chat_id):
            # While this row waited for its slot, a person's answer was queued: it takes the
            # slot, and this row goes after it.
            first = await self._first_due(row.chat_id)
            if (first is not None and first.row.kind == DIRECT_KIND
                    and not (first.person and first.dm_ok is False)):
                due, row = first, first.row
        parts_done = row.parts_done
        outcome: int | Exception | None
        part: Part | None = None
        sent_id: int | None = None
        token = OUTBOX_CALL.set(True)
        try:
            outcome = await self._send(row)
        except PartlySent as partly:
            outcome, parts_done, part = partly.error, partly.done, partly.part
            sent_id = partly.sent_id
        finally:
            OUTBOX_CALL.reset(token)
        # Telegram has answered: a short database outage now must not make us send again.
        for _ in range(RECORD_TRIES - 1):
            try:
                return await self._write(due, parts_done, outcome, part, more, sent_id)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(self.outage.failed(exc))
        return await self._write(due, parts_done, outcome, part, more, sent_id)

    async def _freshen(self, row: Outbox) -> Outbox | None:
        """A reminder list whose turn has come, checked against its cases now: rewritten
        without the cases that moved on since it was written, or dropped (None) with the
        reason in its row when none is left (`gridbot outbox` lists it)."""
        async with self.sessions() as db:
            fresh = await db.get(Outbox, row.id, with_for_update=True)
            if fresh is None or fresh.status != "pending":
                return None
            try:
                reason = await reminders.freshen(await begin(db, self.ctx), fresh)
            except NotConfigured:
                return fresh
            if reason is not None:
                fresh.status = DROPPED
                fresh.last_error = reason
                log.info("outbox %s dropped: %s", fresh.id, reason)
            await db.commit()
        return None if reason is not None else fresh

    async def _write(self, due: Due, parts_done: int, outcome: int | Exception | None,
                     part: Part | None, more: bool, sent_id: int | None = None
                     ) -> tuple[Step, Due | None, bool]:
        """Write down what became of one row, and read the chat's next due row in the same
        transaction when the turn goes on."""
        row = due.row
        retry_in: float | None = None
        async with self.sessions() as db:
            if isinstance(outcome, Exception):
                fresh = await db.get(Outbox, row.id)
                if fresh is None:
                    step = Step.GONE  # erased while it was being sent
                else:
                    fresh.parts_done = parts_done
                    if sent_id is not None:  # the card went out; its voice failed after it
                        fresh.sent_message_id = sent_id
                    step = await self._record(db, fresh, outcome, part)
                    if fresh.status == "pending" and fresh.retry_at is not None:
                        retry_in = (fresh.retry_at - self.ctx.clock.now()).total_seconds()
            else:
                step = await self._sent(db, due, parts_done, outcome)
            look = more and step in (Step.SENT, Step.SETTLED, Step.AGAIN, Step.GONE)
            ahead = await self._next_due(db, row.chat_id) if look else None
            await db.commit()
        if isinstance(outcome, Exception):
            # A fallback or a notice may have been queued for another chat, or the chat moved
            # to a new id: the loop looks for due chats again.
            self.wake()
        if retry_in is not None:
            self._retry_soon(retry_in)
        return step, ahead, look

    def _retry_soon(self, seconds: float) -> None:
        """A row waits to be tried again in `seconds`: the loop looks again then, not a tick
        later."""
        heapq.heappush(self._retries, time.monotonic() + max(0.0, seconds))

    async def _sent(self, db: AsyncSession, due: Due, parts_done: int,
                    message_id: int | None) -> Step:
        """Mark a row sent with one UPDATE: the row is not read again, what it needs is held."""
        row = due.row
        result = await db.execute(
            update(Outbox).where(Outbox.id == row.id)
            .values(status="sent", sent_at=self.ctx.clock.now(),
                    # None when the card went out on an earlier try (only its voice now).
                    **{"sent_message_id": message_id} if message_id is not None else {},
                    retry_at=None, attempts=Outbox.attempts + 1, parts_done=parts_done,
                    **_DROP_UPLOAD if row.upload_kind else {})
            .execution_options(synchronize_session=False))
        if not getattr(result, "rowcount", 1):
            return Step.GONE  # erased while it was being sent
        if due.person and due.dm_ok is not True:
            # Written only when it changes: the person can be written to after all.
            await db.execute(update(Person).where(Person.id == row.person_id)
                             .values(dm_ok=True).execution_options(synchronize_session=False))
        if row.kind == DIRECT_KIND and message_id is not None:
            # A handler that queued this answer kept its stand-in id (e.g. a report prompt
            # a reply to which is a report): it now names the real message.
            await db.execute(update(ReportPrompt).where(
                ReportPrompt.chat_id == row.chat_id, ReportPrompt.message_id == -row.id)
                .values(message_id=message_id))
        return Step.SENT

    async def _record(self, db: AsyncSession, row: Outbox, exc: Exception,
                      part: Part | None) -> Step:
        """Write down what became of a send that failed: to retry, held, or given up."""
        now = self.ctx.clock.now()
        person = await db.get(Person, row.person_id) if row.person_id else None
        if isinstance(exc, NoSlot):
            row.retry_at = now + timedelta(seconds=exc.seconds)
            return Step.PAUSED
        row.attempts += 1
        if isinstance(exc, TelegramRetryAfter):
            self.pacer.block(row.chat_id, exc.retry_after)
            row.retry_at = now + timedelta(seconds=exc.retry_after)
            row.last_error = f"429 retry after {exc.retry_after}s"
            return Step.LATER
        if isinstance(exc, TelegramForbiddenError):
            row.last_error = f"403 {exc.message}"[:500]
            if person is not None:
                await self._unreachable(db, row, person)
            else:
                row.status = "undeliverable"
                log.warning("outbox %s: the chat refuses the bot (removed or banned)", row.id)
                await self._lost(db, row)
            return Step.SETTLED
        if isinstance(exc, TelegramMigrateToChat):
            log.info("a group moved to a new chat id")
            await follow_migration(db, row.chat_id, exc.migrate_to_chat_id)
            row.retry_at = None
            return Step.AGAIN
        if isinstance(exc, TelegramEntityTooLarge):
            return self._give_up(row, f"413 {exc.message}")
        if isinstance(exc, TelegramBadRequest):
            return await self._bad_request(db, row, exc, part, person)
        if isinstance(exc, TRANSIENT):
            row.retry_at = now + backoff(row.attempts)
            row.last_error = describe(exc)[:500]
            return Step.LATER
        # Nobody can say what this answer means: a failed try of this row alone.
        reason = describe(exc)
        if row.attempts >= MAX_UNEXPECTED:
            return self._give_up(row, reason)
        row.retry_at = now + backoff(row.attempts)
        row.last_error = reason[:500]
        log.warning("outbox %s: unexpected answer (%s); try %d, retrying later", row.id,
                    reason, row.attempts)
        return Step.LATER

    def _give_up(self, row: Outbox, reason: str) -> Step:
        row.status = "failed"
        row.retry_at = None
        row.last_error = reason[:500]
        log.error("outbox %s failed for good: %s", row.id, reason)
        return Step.SETTLED

    async def _bad_request(self, db: AsyncSession, row: Outbox, exc: TelegramBadRequest,
                           part: Part | None, person: Person | None) -> Step:
        """A 400: drop what Telegram refuses, one thing at a time, and send the rest.

        A photo it no longer knows is dropped, then the buttons, then (if it cannot parse
        it) the formatting; the text itself is never dropped, so a row whose photos went out
        is never marked sent without its text: it goes without the failing part, or fails.
        """
        reason = f"400 {exc.message}"
        row.last_error = reason[:500]
        lowered = exc.message.lower()
        if "chat not found" in lowered:
            if person is not None:
                await self._unreachable(db, row, person)
            else:
                row.status = "undeliverable"
                await self._lost(db, row)
            return Step.SETTLED
        row.retry_at = None
        if part is not None and part.kind == "photos":
            dropped = list(part.photos)
            # Only this call's photos: earlier calls went through, later ones keep their place.
            start = row.parts_done * MEDIA_GROUP
            row.photos = row.photos[:start] + row.photos[start + len(dropped):]
            log.warning("outbox %s: %d photo(s) refused (%s), sending without them", row.id,
                        len(dropped), reason)
            return Step.AGAIN
        if part is not None and part.kind == "voice":
            # A voice Telegram will not send (an unknown file_id, or a person whose privacy
            # settings refuse voice messages): the card went out before it and says 语音.
            row.photos = [p for p in row.photos if from_media(p) is None]
            log.warning("outbox %s: its %s was refused (%s), the card went without it",
                        row.id, part.media, reason)
            return Step.AGAIN
        if part is not None and part.kind == "venue" and row.parts_done > 0:
            # A venue Telegram will not take: the text before it went out and has the link.
            row.photos = [p for p in row.photos if venue_of(p) is None]
            log.warning("outbox %s: its venue was refused (%s), sent without it", row.id,
                        reason)
            return Step.AGAIN
        if part is not None and part.kind == "upload" and row.parts_done == 0:
            # A file Telegram will not take (a chart it cannot process): the text still goes.
            row.upload, row.upload_kind = None, None
            log.warning("outbox %s: its %s was refused (%s), sending the text alone",
                        row.id, row.upload_name or "file", reason)
            return Step.AGAIN
        if part is not None and part.kind == "captioned":
            row.photos = []
            log.warning("outbox %s: its photo was refused (%s), sending the text alone",
                        row.id, reason)
            return Step.AGAIN
        if row.buttons or row.markup:
            row.buttons, row.markup = [], None
            log.warning("outbox %s: refused with its buttons (%s), sending without them",
                        row.id, reason)
            return Step.AGAIN
        plain = without_formatting(row.text)
        if plain != row.text and ("entit" in lowered or "tag" in lowered):
            row.text = plain
            log.warning("outbox %s: refused with its formatting (%s), sending it plain",
                        row.id, reason)
            return Step.AGAIN
        return self._give_up(row, reason)

    async def _send(self, row: Outbox) -> int | None:
        """The Bot API calls for one row; returns the id of the message carrying the buttons.

        A row may take several calls (photos, then text in pieces). They are paced like
        separate messages, and a retry resumes after the last call that went through, so a
        fault halfway never repeats the photos already sent.
        """
        markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | ForceReply \
            | None = keyboard(row.buttons) or reply_markup_of(row.markup)
        reply = (ReplyParameters(message_id=row.reply_to_message_id,
                                 allow_sending_without_reply=True)
                 if row.reply_to_message_id else None)
        parts = plan(row)
        chat = row.chat_id
        message_id: int | None = None
        for index in range(row.parts_done, len(parts)):
            part = parts[index]
            if index > row.parts_done and not await self.pacer.acquire(chat,
                                                                       max_pause=PART_WAIT):
                raise PartlySent(index, NoSlot(self.pacer.wait(chat)), part, message_id)
            self.pacer.sent(chat)
            try:
                result = await self._call(chat, part, markup if part.markup else None,
                                          reply if index == 0 else None, row)
            except ClientDecodeError as exc:
                # Read by the session middleware already, unless the bot was built without it.
                if not accepted(exc):
                    raise PartlySent(index, exc, part, message_id) from exc
                result = accepted_result(None, exc)
            except Exception as exc:
                raise PartlySent(index, exc, part, message_id) from exc
            finally:
                self.pacer.finished(chat)
            # The id kept is the card's, not its voice's or venue's (unless the venue is all
            # the row holds); a resumed row whose card went out earlier keeps that card's id.
            if part.kind not in ("voice", "venue") or len(parts) == 1:
                message_id = message_id_of(result) or message_id
        return message_id

    async def _call(self, chat: int, part: Part, markup: Any,
                    reply: ReplyParameters | None, row: Outbox) -> Any:
        if part.kind == "upload":
            return await self._upload(chat, part, markup, reply, row)
        if part.kind == "captioned":
            return await self.bot.send_photo(chat, part.photos[0], caption=part.text or None,
                                             reply_markup=markup, reply_parameters=reply)
        if part.kind == "voice":
            if part.media == "video_note":
                return await self.bot.send_video_note(chat, part.photos[0],
                                                      reply_parameters=reply)
            return await self.bot.send_voice(chat, part.photos[0], reply_parameters=reply)
        if part.kind == "venue" and part.venue is not None:
            v = part.venue
            return await self.bot.send_venue(chat, v.latitude, v.longitude, v.title,
                                             v.address, reply_parameters=reply)
        if part.kind == "photos":
            if len(part.photos) == 1:  # a media group needs two to ten items
                return await self.bot.send_photo(chat, part.photos[0], reply_parameters=reply)
            return await self.bot.send_media_group(
                chat, [InputMediaPhoto(media=p) for p in part.photos], reply_parameters=reply)
        return await self.bot.send_message(chat, part.text, reply_markup=markup,
                                           reply_parameters=reply)

    async def _upload(self, chat: int, part: Part, markup: Any,
                      reply: ReplyParameters | None, row: Outbox) -> Any:
        """sendPhoto or sendDocument as a multipart upload of the row's bytes."""
        if row.upload is None:
            raise ValueError(f"outbox {row.id}: its upload is gone")  # never sent: retried
        file = BufferedInputFile(row.upload, filename=row.upload_name or "file")
        caption = part.text or None
        if row.upload_kind == "photo":
            return await self.bot.send_photo(chat, file, caption=caption, reply_markup=markup,
                                             reply_parameters=reply)
        return await self.bot.send_document(chat, file, caption=caption, reply_markup=markup,
                                            reply_parameters=reply)

    # --- nobody to reach -------------------------------------------------------------------

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
        await enqueue(
            db, f"{row.dedupe_key}:fallback", row.fallback_chat_id, text,
            self.ctx.clock.now(), case_id=row.case_id, photos=row.photos, buttons=row.buttons,
            reply_to=row.fallback_reply_to,
            kind="reporter_fallback" if row.kind == "reporter" else "",
        )

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

    # --- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, tick: float = 1.0,
                  also: Callable[[], object] | None = None) -> None:
        """Deliver until `stop` is set: a worker per chat with due rows, up to `concurrency`
        at once; wakes at once when a handler has written messages.

        A database outage ends no worker's chat and not the loop: every try backs off, and
        the outage is logged when it starts and when it is over.
        """
        workers: dict[int, asyncio.Task[int]] = {}
        try:
            while not stop.is_set():
                pause = tick
                try:
                    if also is not None:
                        result = also()
                        if isinstance(result, Awaitable):
                            await result
                    looked = time.monotonic()
                    self._start_workers(workers, stop, await self.due_chats(
                        self.ctx.clock.now(), exclude=list(workers)))
                    # A row left to retry (a 429) is looked at again when it may go, not a
                    # whole tick later.
                    while self._retries and self._retries[0] <= looked:
                        heapq.heappop(self._retries)  # due when we looked: seen
                    if self._retries:
                        pause = min(pause, max(0.01, self._retries[0] - time.monotonic()))
                    self.outage.ok()
                except Exception as exc:
                    if not is_transient(exc):
                        log.exception("delivery pass failed; trying again")
                    else:
                        pause = self.outage.failed(exc)
                if self.outage.active:
                    # Workers ending would wake us at once: back off for the outage instead.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=pause)
                else:
                    await self.wait(pause)
        finally:
            # Each worker ends after the row it is sending; one stuck longer is cancelled.
            if workers:
                _, late = await asyncio.wait(list(workers.values()), timeout=PART_WAIT)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    def _start_workers(self, workers: dict[int, asyncio.Task[int]], stop: asyncio.Event,
                       chats: list[int]) -> None:
        self._crowded = False
        for chat in chats:
            if len(workers) >= self.concurrency:
                self._crowded = True
                return
            if self.pacer.wait(chat) > RUN_WAIT:
                continue  # its limit is far off; picked up again once it is free
            task = asyncio.create_task(self.serve(chat, RUN_WAIT, stop))
            workers[chat] = task
            task.add_done_callback(
                functools.partial(self._worker_done, workers, chat, self._wakes))

    def _worker_done(self, workers: dict[int, asyncio.Task[int]], chat: int, wakes: int,
                     task: asyncio.Task[int]) -> None:
        workers.pop(chat, None)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            if is_transient(exc):
                self.outage.failed(exc)
            else:
                log.error("delivery to one chat failed; trying again", exc_info=exc)
        # The loop looks for due chats again only when that may find something: a chat was
        # left waiting for this place, this chat may have more (its turn ended before it ran
        # out), or something was woken for while this chat was excluded. A worker that sent
        # a chat's last row adds nothing to know, and costs no query.
        drained = chat in self._drained
        self._drained.discard(chat)
        if exc is not None or not drained or self._crowded or self._wakes != wakes:
            self.wake()

