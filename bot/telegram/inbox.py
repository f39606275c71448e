"""Durable intake: updates are stored before Telegram is told they arrived, then handled.

aiogram's own polling confirms a batch (by asking for the next offset) before its handlers
have finished, so a bot killed at that moment loses those updates. Here the poller stores
each batch and commits before it asks for the next one; the processor hands stored updates
to the Dispatcher, whose middleware marks each one done in the transaction of its handler.

The batch is read as raw JSON and each update is validated on its own: one update the
installed client cannot read (a Bot API server of another version) is set aside, kept for
the operator (`gridbot inbox`), and everything around it is handled. Neither a database
outage nor an unreadable answer ends a loop here; only a token the Bot API refuses does.

Several worker processes may share one PostgreSQL (`bot.telegram.claims`): one of them polls at a
time, the others wait for its claim; each chat's stored updates are handled by one worker at
a time, in order, whichever worker stored them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramUnauthorizedError
from aiogram.methods import TelegramMethod
from aiogram.types import Update
from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram.claims import INBOX_CHAT, POLLING, Claim, Claims
from bot.telegram.inbox_scope import acts_on, update_kind
from bot.telegram.outage import Outage, is_transient
from storage.models import InboxUpdate

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ATTEMPTS = 3
POLL_TIMEOUT = 25
CONCURRENT_CHATS = 8
# Telegram keeps an update it could not deliver for at most 24 hours: the same update_id
# within two days is a redelivery; weeks later it is a new update (ids restart after a
# quiet week, from a random and possibly lower number).
REDELIVERY_WINDOW = timedelta(hours=48)
KEEP_DONE = timedelta(days=7)
# Set-aside and failed updates wait longer, for the operator to look at or retry them.
KEEP_STUCK = timedelta(days=30)
PRUNE_BATCH = 1000
# How often a worker waiting to poll asks again whether the poller is gone.
POLL_CLAIM_RETRY = 5.0
HANDLED = ("done", "skipped", "erased")
STUCK = ("set_aside", "failed")


class GetRawUpdates(TelegramMethod[list[Any]]):
    """`getUpdates` whose answer is left as JSON, so one odd update cannot sink the batch.

    Sent through the same session (URL, timeouts, error answers) as every other call.
    """

    __returning__ = list[Any]
    __api_method__ = "getUpdates"

    offset: int | None = None
    limit: int | None = None
    timeout: int | None = None
    allowed_updates: list[str] | None = None


@dataclass
class Attempt:
    """What the middleware learned while handling one stored update."""

    transient: BaseException | None = None  # the database went away: try the update later
    recorded: bool = False  # a failure was already counted against the update


def chat_key(payload: dict[str, Any]) -> int:
    """Updates of one chat are handled in order; different chats may go side by side."""
    for field in ("message", "edited_message", "channel_post", "my_chat_member",
                  "chat_member", "callback_query"):
        body = payload.get(field)
        if not isinstance(body, dict):
            continue
        if field == "callback_query":
            sender = body.get("from") or {}
            return int(sender.get("id", 0))
        chat = body.get("chat") or {}
        return int(chat.get("id", 0))
    return 0


def update_id_of(item: object) -> int | None:
    if not isinstance(item, dict):
        return None
    value = item.get("update_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def unreadable(exc: ValidationError) -> str:
    """Why the client cannot read an update: the error kinds and where, never a value."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "update"
        parts.append(f"{err['type']} at {where}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return ("; ".join(parts) + more)[:200]


def _row(item: object, uid: int | None, now: datetime,
         keep: Callable[[dict[str, Any]], bool] | None) -> InboxUpdate:
    if not isinstance(item, dict) or uid is None:
        payload = item if isinstance(item, dict) else {"item": item}
        return InboxUpdate(update_id=uid, kind=None, payload=payload, status="set_aside",
                           attempts=0, received_at=now, reason="no update_id")
    kind = update_kind(item)
    try:
        Update.model_validate(item)
    except ValidationError as exc:
        return InboxUpdate(update_id=uid, kind=kind, payload=item, status="set_aside",
                           attempts=0, received_at=now, reason=unreadable(exc))
    if keep is not None and not keep(item):
        # Nothing acts on it (chatter seen by a bot made group admin): keep no text.
        return InboxUpdate(update_id=uid, kind=kind, payload=None, status="skipped",
                           attempts=0, received_at=now)
    return InboxUpdate(update_id=uid, kind=kind, payload=item, status="new", attempts=0,
                       received_at=now)


async def store(sessions: async_sessionmaker[AsyncSession], updates: Sequence[object],
                now: datetime, *, keep: Callable[[dict[str, Any]], bool] | None = None) -> int:
    """Keep a batch (raw JSON items or Update objects); a recent redelivery is skipped."""
    if not updates:
        return 0
    items = [u.model_dump(mode="json", exclude_none=True, by_alias=True)
             if isinstance(u, Update) else u for u in updates]
    async with sessions() as db:
        ids = {uid for uid in map(update_id_of, items) if uid is not None}
        known = set((await db.scalars(
            select(InboxUpdate.update_id).where(
                InboxUpdate.update_id.in_(ids),
                InboxUpdate.received_at >= now - REDELIVERY_WINDOW))).all()) if ids else set()
        added = 0
        for item in items:
            uid = update_id_of(item)
            if uid is not None and uid in known:
                continue
            if uid is not None:
                known.add(uid)
            db.add(_row(item, uid, now, keep))
            added += 1
        await db.commit()
    return added


async def next_offset(sessions: async_sessionmaker[AsyncSession]) -> int | None:
    """After the update received last, not the highest id: ids may restart lower."""
    async with sessions() as db:
        last = await db.scalar(select(InboxUpdate.update_id)
                               .where(InboxUpdate.update_id.is_not(None))
                               .order_by(InboxUpdate.id.desc()).limit(1))
    return int(last) + 1 if last is not None else None


async def prune(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Forget handled updates after a week (stuck ones after a month), in short batches.

    Each batch is its own transaction, so SQLite's write lock is never held for long. The
    newest row stays, so the polling offset survives.
    """
    async with sessions() as db:
        newest = await db.scalar(select(func.max(InboxUpdate.id)))
    if newest is None:
        return 0
    total = 0
    ages = [(status, KEEP_DONE) for status in HANDLED] + [(status, KEEP_STUCK)
                                                            for status in STUCK]
    for status, keep in ages:
        while True:  # one status at a time: an index range on (status, received_at)
            batch = (select(InboxUpdate.id)
                     .where(InboxUpdate.status == status, InboxUpdate.received_at < now - keep,
                            InboxUpdate.id != newest)
                     .order_by(InboxUpdate.received_at).limit(PRUNE_BATCH)
                     # Several workers prune at once: each skips the rows another is
                     # deleting instead of waiting on them (or deadlocking).
                     .with_for_update(skip_locked=True))
            async with sessions() as db:
                result = await db.execute(delete(InboxUpdate)
                                          .where(InboxUpdate.id.in_(batch.scalar_subquery())))
                await db.commit()
            gone = int(getattr(result, "rowcount", 0) or 0)
            total += gone
            if gone < PRUNE_BATCH:
                break
    return total


async def _mark(sessions: async_sessionmaker[AsyncSession],
                marks: list[tuple[int, str, str | None]]) -> None:
    async with sessions() as db:
        for row_id, status, reason in marks:
            # Only while still new: another worker may have settled it meanwhile.
            await db.execute(update(InboxUpdate)
                             .where(InboxUpdate.id == row_id, InboxUpdate.status == "new")
                             .values(status=status, reason=reason))
        await db.commit()


class Inbox:
    def __init__(self, bot: Bot, dp: Dispatcher, sessions: async_sessionmaker[AsyncSession],
                 now: Any, concurrency: int = CONCURRENT_CHATS) -> None:
        self.bot, self.dp, self.sessions, self.now = bot, dp, sessions, now
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self.claims = Claims.of(sessions)
        # Told of every batch stored (the worker's metrics count them).
        self.on_received: Callable[[Sequence[Any]], None] | None = None

    def received(self, items: Sequence[Any]) -> None:
        """A batch was stored (polled, or posted to the webhook): the processor looks at once."""
        if self.on_received is not None:
            self.on_received(items)
        self._wake.set()

    def _bot_id(self) -> int:
        ctx = self.dp.workflow_data.get("ctx")
        known = getattr(ctx, "bot_id", 0)
        return int(known) if known else self.bot.id

    async def poll(self, stop: asyncio.Event, allowed: list[str]) -> None:
        """Fetch updates and keep them; Telegram learns they arrived only after the commit.

        Ends when `stop` is set (a long poll in progress is abandoned), or raises
        TelegramUnauthorizedError: a revoked token is for a person to fix.

        Only the worker holding the polling claim polls: Telegram answers a second poller
        with 409 Conflict, and two would fight over the offset. Another worker waits, saying
        so once, and takes over when the poller is gone.
        """
        # One outage for the loop's database: the claim is lost with the database.
        database = Outage(log, "storing received updates")
        waiting = False
        while not stop.is_set():
            try:
                claim = await self.claims.take(POLLING)
                database.ok()
            except Exception as exc:
                await _pause(stop, database, exc)
                continue
            if claim is None:
                if not waiting:
                    log.info("another worker polls getUpdates; this one waits to take over")
                    waiting = True
                await _sleep_or_stop(stop, POLL_CLAIM_RETRY)
                continue
            if waiting:
                log.info("this worker polls getUpdates now")
                waiting = False
            try:
                await self._poll(stop, allowed, claim, database)
            finally:
                await self.claims.release(claim)

    async def _poll(self, stop: asyncio.Event, allowed: list[str], claim: Claim,
                    database: Outage) -> None:
        """Poll while the claim holds; returns when `stop` is set or the claim was lost."""
        network = Outage(log, "getUpdates")
        bot_id = self._bot_id()
        offset: int | None = None
        have_offset = False
        while not stop.is_set():
            if not claim.valid or not await self.claims.check():
                return  # the claim went with its connection: claim polling again
            if not have_offset:
                try:
                    offset = await next_offset(self.sessions)
                    have_offset = True
                    database.ok()
                except Exception as exc:
                    await _pause(stop, database, exc)
                    continue
            request = GetRawUpdates(offset=offset, timeout=POLL_TIMEOUT,
                                    allowed_updates=allowed)
            try:
                got = await _unless_stopped(stop, self.bot(request,
                                                           request_timeout=POLL_TIMEOUT + 10))
            except TelegramUnauthorizedError:
                raise
            except Exception as exc:  # 5xx, 409, an HTML page, a dropped connection
                await _pause(stop, network, exc)
                continue
            if got is None:
                return
            network.ok()
            items: list[Any] = got.value
            if not items:
                continue
            while True:  # stored before the next getUpdates confirms them, or not at all
                if not claim.valid or not await self.claims.check():
                    # Another worker may poll now and store this batch: leave it to it.
                    return
                try:
                    await store(self.sessions, items, self.now(),
                                keep=lambda item: acts_on(item, bot_id, allowed))
                    database.ok()
                    break
                except Exception as exc:
                    await _pause(stop, database, exc)
                    if stop.is_set():
                        return
            ids = [uid for uid in map(update_id_of, items) if uid is not None]
            if ids:
                offset = ids[-1] + 1
            self.received(items)

    async def process(self, stop: asyncio.Event) -> None:
        """Hand stored updates to the Dispatcher, in order within each chat."""
        outage = Outage(log, "handling stored updates")
        while not stop.is_set():
            try:
                handled = await self.process_pending(stop=stop)
                outage.ok()
            except Exception as exc:
                await _pause(stop, outage, exc)
                continue
            if not handled:
                self._wake.clear()
                await _wait(self._wake, stop, 1.0)

    async def process_pending(self, batch: int = 200, stop: asyncio.Event | None = None) -> int:
        """Handle up to `batch` stored updates; raises the database error that stopped it.

        Returns how many were looked at: updates of a chat another worker is handling are
        left to it (its claim keeps the chat's updates in order) and not counted.
        """
        async with self.sessions() as db:
            rows = (await db.execute(
                select(InboxUpdate.id, InboxUpdate.payload)
                .where(InboxUpdate.status == "new").order_by(InboxUpdate.id).limit(batch)
            )).all()
        by_chat: dict[int, list[tuple[int, Update]]] = defaultdict(list)
        marks: list[tuple[int, str, str | None]] = []
        for row_id, payload in rows:
            if payload is None:
                marks.append((row_id, "skipped", None))
                continue
            try:
                by_chat[chat_key(payload)].append(
                    (row_id, Update.model_validate(payload, context={"bot": self.bot})))
            except ValidationError as exc:
                marks.append((row_id, "set_aside", unreadable(exc)))
        if marks:
            await _mark(self.sessions, marks)
            for row_id, status, _reason in marks:
                if status == "set_aside":
                    log.warning("inbox row %s set aside: the client cannot read it", row_id)
        gate = asyncio.Semaphore(self.concurrency)
        outage: list[BaseException] = []
        elsewhere: list[int] = []

        async def run(chat: int, items: list[tuple[int, Update]]) -> None:
            async with gate:
                try:
                    claim = await self.claims.take(INBOX_CHAT, chat)
                except Exception as exc:
                    outage.append(exc)
                    return
                if claim is None:
                    elsewhere.append(len(items))
                    return
                try:
                    await self._handle_chat(items, claim, outage, stop)
                finally:
                    await self.claims.release(claim)

        await asyncio.gather(*(run(chat, p) for chat, p in by_chat.items()))
        if outage:
            raise outage[0]
        return len(rows) - sum(elsewhere)

    async def _handle_chat(self, items: list[tuple[int, Update]], claim: Claim,
                           outage: list[BaseException], stop: asyncio.Event | None) -> None:
        """One chat's updates, in order, while its claim holds."""
        for row_id, upd in items:
            if outage or (stop is not None and stop.is_set()) or not claim.valid:
                return  # the rest of this chat waits, in order, for the next pass
            attempt = Attempt()
            try:
                await self.dp.feed_update(self.bot, upd, inbox_id=row_id,
                                          inbox_attempt=attempt)
            except Exception as exc:
                if is_transient(exc):
                    outage.append(exc)
                    return
                # The exception may quote the update's text: its type only, at INFO+.
                log.error("update %s (inbox row %s) could not be handled: %s",
                          upd.update_id, row_id, type(exc).__name__)
                log.debug("update %s failed", upd.update_id, exc_info=True)
                if not attempt.recorded:
                    await self._count_failure(row_id, exc)
            if attempt.transient is not None:
                outage.append(attempt.transient)
                return

    async def _count_failure(self, row_id: int, exc: BaseException) -> None:
        async with self.sessions() as db:
            row = await db.get(InboxUpdate, row_id)
            if row is not None and row.status in ("new", "done"):
                row.attempts += 1
                failed = row.attempts >= MAX_ATTEMPTS
                row.status = "failed" if failed else "new"
                row.reason = type(exc).__name__ if failed else None
            await db.commit()


@dataclass
class _Got:
    value: Any


async def _unless_stopped(stop: asyncio.Event, call: Awaitable[T]) -> _Got | None:
    """The call's result, or None (the call cancelled) once `stop` is set."""
    work = asyncio.ensure_future(call)
    halt = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, halt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.cancel()
    if work.done():
        return _Got(work.result())
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work  # cancelled on purpose: how it ended no longer matters
    return None


async def _pause(stop: asyncio.Event, outage: Outage, exc: BaseException) -> None:
    if not is_transient(exc):
        log.debug("%s failed", outage.what, exc_info=exc)
    await _sleep_or_stop(stop, outage.failed(exc))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(event.wait()), asyncio.create_task(stop.wait())]
    _done, pending = await asyncio.wait(waiters, timeout=seconds,
                                        return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
