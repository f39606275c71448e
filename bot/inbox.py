"""Durable intake: updates are stored before Telegram is told they arrived, then handled.

aiogram's own polling confirms a batch (by asking for the next offset) before its handlers
have finished, so a bot killed at that moment loses those updates. Here the poller stores
each batch and commits before it asks for the next one; the processor hands stored updates
to the Dispatcher, whose middleware marks each one done in the transaction of its handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError
from aiogram.types import Update
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import InboxUpdate

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
KEEP_DONE = timedelta(days=7)
POLL_TIMEOUT = 25
CONCURRENT_CHATS = 8


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


async def store(sessions: async_sessionmaker[AsyncSession], updates: list[Update],
                now: datetime) -> int:
    """Keep a batch of updates; ones already kept (a redelivery) are skipped."""
    if not updates:
        return 0
    async with sessions() as db:
        ids = [u.update_id for u in updates]
        known = set((await db.scalars(
            select(InboxUpdate.update_id).where(InboxUpdate.update_id.in_(ids)))).all())
        added = 0
        for u in updates:
            if u.update_id in known:
                continue
            known.add(u.update_id)
            payload = u.model_dump(mode="json", exclude_none=True, by_alias=True)
            db.add(InboxUpdate(update_id=u.update_id, payload=payload, status="new",
                               attempts=0, received_at=now))
            added += 1
        await db.commit()
    return added


async def next_offset(sessions: async_sessionmaker[AsyncSession]) -> int | None:
    async with sessions() as db:
        last = await db.scalar(select(func.max(InboxUpdate.update_id)))
    return int(last) + 1 if last is not None else None


async def prune(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """Forget handled updates after a week, keeping the newest so the offset survives."""
    async with sessions() as db:
        newest = await db.scalar(select(func.max(InboxUpdate.update_id)))
        await db.execute(delete(InboxUpdate).where(
            InboxUpdate.status != "new", InboxUpdate.received_at < now - KEEP_DONE,
            InboxUpdate.update_id != newest))
        await db.commit()


class Inbox:
    def __init__(self, bot: Bot, dp: Dispatcher, sessions: async_sessionmaker[AsyncSession],
                 now: Any, concurrency: int = CONCURRENT_CHATS) -> None:
        self.bot, self.dp, self.sessions, self.now = bot, dp, sessions, now
        self.concurrency = concurrency
        self._wake = asyncio.Event()

    async def poll(self, stop: asyncio.Event, allowed: list[str]) -> None:
        """Fetch updates and keep them; Telegram learns they arrived only after the commit."""
        offset = await next_offset(self.sessions)
        failures = 0
        while not stop.is_set():
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=POLL_TIMEOUT, allowed_updates=allowed,
                    request_timeout=POLL_TIMEOUT + 10)
                failures = 0
            except (TelegramNetworkError, TelegramAPIError, OSError, TimeoutError) as exc:
                failures += 1
                delay = min(2 ** failures, 60)
                log.warning("getUpdates failed (%s); retrying in %ss", type(exc).__name__, delay)
                await _sleep_or_stop(stop, delay)
                continue
            if updates:
                await store(self.sessions, updates, self.now())
                offset = updates[-1].update_id + 1
                self._wake.set()

    async def process(self, stop: asyncio.Event) -> None:
        """Hand stored updates to the Dispatcher, in order within each chat."""
        while not stop.is_set():
            handled = await self.process_pending()
            if not handled:
                self._wake.clear()
                await _wait(self._wake, stop, 1.0)

    async def process_pending(self, batch: int = 200) -> int:
        async with self.sessions() as db:
            rows = (await db.execute(
                select(InboxUpdate.update_id, InboxUpdate.payload)
                .where(InboxUpdate.status == "new").order_by(InboxUpdate.update_id).limit(batch)
            )).all()
        by_chat: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for _update_id, payload in rows:
            if payload is not None:
                by_chat[chat_key(payload)].append(payload)
        gate = asyncio.Semaphore(self.concurrency)

        async def run(payloads: list[dict[str, Any]]) -> None:
            async with gate:
                for payload in payloads:
                    try:
                        await self.dp.feed_raw_update(self.bot, payload)
                    except Exception as exc:
                        # The exception may quote the update's text: its type only, at INFO+.
                        log.error("update %s could not be handled: %s",
                                  payload.get("update_id"), type(exc).__name__)
                        log.debug("update %s failed", payload.get("update_id"), exc_info=True)

        await asyncio.gather(*(run(p) for p in by_chat.values()))
        return len(rows)


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
