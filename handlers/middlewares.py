"""Per-update plumbing: one database session, exactly-once handling, the acting person, and
waking the outbox sender.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import Chat, TelegramObject, Update, User
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases.intake import ensure_person
from bot.cases.outbox import release_held
from bot.context import Ctx
from bot.org.roles import load_actor
from bot.telegram.delivery import Delivery
from bot.telegram.inbox import MAX_ATTEMPTS, REDELIVERY_WINDOW, Attempt
from bot.telegram.outage import is_transient
from storage.fsm import current_session
from storage.models import InboxUpdate

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
log = logging.getLogger(__name__)


def display_name(user: User) -> str:
    return user.full_name or user.username or str(user.id)


class DbMiddleware(BaseMiddleware):
    """Opens the session the handler and the domain use; the domain commits.

    The update is marked done in that same session before the handler runs, so the domain's
    commit records "this update is handled" together with what handling it changed. An update
    already done (Telegram delivered it again) is dropped here.

    The inbox processor passes its row as `inbox_id` and an `inbox_attempt` to report back
    on: a database outage is then not the update's fault (no attempt is counted, nobody is
    told anything went wrong) and the update is tried again once the database is back. Fed
    straight to the Dispatcher (tests, the demo), an update is deduplicated by its
    `update_id` among recent ones.

    A handler that fails is counted against its update, which the inbox tries again, up to
    MAX_ATTEMPTS times. The person is told 「抱歉，系统出了点问题」 (the Dispatcher's error
    handler, `bot.app._on_error`) once, when the update is given up on: a failure that will
    be tried again is logged here and ends the update quietly, so the error handler never
    sees it. An update that then succeeds gets its answer and no apology.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ctx: Ctx,
                 delivery: Delivery | None) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.delivery = delivery

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        attempt: Attempt | None = data.get("inbox_attempt")
        try:
            return await self._handle(handler, event, data, attempt)
        except Exception as exc:
            if attempt is not None and is_transient(exc):
                attempt.transient = exc
                return None
            raise

    async def _handle(self, handler: Handler, event: Update, data: dict[str, Any],
                      attempt: Attempt | None) -> Any:
        async with self.sessions() as db:
            row_id = await self._claim(db, event.update_id, data.get("inbox_id"))
            if row_id is None:
                return None
            data["db"] = db
            data["ctx"] = self.ctx
            token = current_session.set(db)
            try:
                user: User | None = data.get("event_from_user")
                chat: Chat | None = data.get("event_chat")
                if user is not None and not user.is_bot:
                    if chat is not None and chat.type == "private":
                        await self._reachable(db, user)
                    data["actor"] = await load_actor(db, user.id, display_name(user))
                result = await handler(event, data)
            except Exception as exc:
                await db.rollback()
                if attempt is None or not is_transient(exc):
                    given_up = await self._failed(row_id, event.update_id, exc)
                    if attempt is not None:
                        attempt.recorded = True
                    if not given_up:
                        # Tried again shortly: no apology yet (at most one per update).
                        log.warning("update %s (inbox row %s) failed (%s); it will be tried "
                                    "again", event.update_id, row_id, type(exc).__name__)
                        log.debug("update %s failed", event.update_id, exc_info=exc)
                        return None
                raise
            finally:
                current_session.reset(token)
                if self.delivery is not None:
                    self.delivery.wake()
            # The handler may have committed nothing (or rolled back): record it now.
            values: dict[str, Any] = {"status": "done"}
            if result is UNHANDLED:
                values["payload"] = None  # nothing acted on it: keep none of what it said
            await db.execute(update(InboxUpdate).where(InboxUpdate.id == row_id)
                             .values(**values))
            await db.commit()
            return result

    async def _claim(self, db: AsyncSession, update_id: int, inbox_id: int | None) -> int | None:
        """The inbox row this handling settles, or None when the update is not to be handled."""
        if inbox_id is not None:
            row = await db.get(InboxUpdate, inbox_id, with_for_update=True)
        else:
            since = self.ctx.clock.now() - REDELIVERY_WINDOW
            row = await db.scalar(
                select(InboxUpdate).where(InboxUpdate.update_id == update_id,
                                          InboxUpdate.received_at >= since)
                .order_by(InboxUpdate.id.desc()).limit(1).with_for_update())
            if row is None:
                # Fed straight to the Dispatcher: remember it all the same.
                row = InboxUpdate(update_id=update_id, payload=None, status="done", attempts=1,
                                  received_at=self.ctx.clock.now())
                db.add(row)
                await db.flush()
                return row.id
        if row is None or row.status != "new":
            return None
        row.status = "done"
        row.attempts += 1
        return row.id

    async def _failed(self, row_id: int, update_id: int, exc: BaseException) -> bool:
        """A handler failed: try the update again later, a few times, then give up on it.
        Returns whether it is given up on (nothing will try it again)."""
        reason = type(exc).__name__
        async with self.sessions() as db:
            row = await db.get(InboxUpdate, row_id)
            if row is None:
                failed = True
                db.add(InboxUpdate(update_id=update_id, payload=None, status="failed",
                                   attempts=1, received_at=self.ctx.clock.now(),
                                   reason=reason))
            else:
                row.attempts += 1
                # Only a stored update is tried again (one fed straight in has no payload).
                failed = row.attempts >= MAX_ATTEMPTS or row.payload is None
                row.status = "failed" if failed else "new"
                row.reason = reason if failed else None
            await db.commit()
        return failed

    async def _reachable(self, db: AsyncSession, user: User) -> None:
        """Someone who writes to the bot privately can be written to: release what waited."""
        now = self.ctx.clock.now()
        person = await ensure_person(db, user.id, display_name(user), now)
        if person.dm_ok is not True:
            person.dm_ok = True
            await release_held(db, user.id, now)
