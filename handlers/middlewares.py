"""Per-update plumbing: one database session, exactly-once handling, the acting person, and
waking the outbox sender.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Chat, TelegramObject, Update, User
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.context import Ctx
from bot.delivery import Delivery
from bot.inbox import MAX_ATTEMPTS
from bot.intake import ensure_person
from bot.org import load_actor
from bot.outbox import release_held
from storage.fsm import current_session
from storage.models import InboxUpdate

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def display_name(user: User) -> str:
    return user.full_name or user.username or str(user.id)


class DbMiddleware(BaseMiddleware):
    """Opens the session the handler and the domain use; the domain commits.

    The update is marked done in that same session before the handler runs, so the domain's
    commit records "this update is handled" together with what handling it changed. An update
    already done (Telegram delivered it again) is dropped here.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ctx: Ctx,
                 delivery: Delivery | None) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.delivery = delivery

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        async with self.sessions() as db:
            if not await self._claim(db, event.update_id):
                return None
            data["db"] = db
            data["ctx"] = self.ctx
            token = current_session.set(db)
            user: User | None = data.get("event_from_user")
            chat: Chat | None = data.get("event_chat")
            if user is not None and not user.is_bot:
                if chat is not None and chat.type == "private":
                    await self._reachable(db, user)
                data["actor"] = await load_actor(db, user.id, display_name(user))
            try:
                result = await handler(event, data)
            except Exception:
                await db.rollback()
                await self._failed(event.update_id)
                raise
            finally:
                current_session.reset(token)
                if self.delivery is not None:
                    self.delivery.wake()
            # The handler may have committed nothing (or rolled back): record it now.
            await db.execute(update(InboxUpdate).where(InboxUpdate.update_id == event.update_id)
                             .values(status="done"))
            await db.commit()
            return result

    async def _claim(self, db: AsyncSession, update_id: int) -> bool:
        row = await db.get(InboxUpdate, update_id)
        if row is None:
            # Fed straight to the Dispatcher (not through the inbox): remember it all the same.
            db.add(InboxUpdate(update_id=update_id, payload=None, status="done", attempts=1,
                               received_at=self.ctx.clock.now()))
            await db.flush()
            return True
        if row.status != "new":
            return False
        row.status = "done"
        row.attempts += 1
        return True

    async def _failed(self, update_id: int) -> None:
        """A handler failed: try the update again later, a few times, then give up on it."""
        async with self.sessions() as db:
            row = await db.get(InboxUpdate, update_id)
            if row is None:
                db.add(InboxUpdate(update_id=update_id, payload=None, status="failed",
                                   attempts=1, received_at=self.ctx.clock.now()))
            else:
                row.attempts += 1
                row.status = "failed" if row.attempts >= MAX_ATTEMPTS else "new"
            await db.commit()

    async def _reachable(self, db: AsyncSession, user: User) -> None:
        """Someone who writes to the bot privately can be written to: release what waited."""
        now = self.ctx.clock.now()
        person = await ensure_person(db, user.id, display_name(user), now)
        if person.dm_ok is not True:
            person.dm_ok = True
            await release_held(db, user.id, now)
