"""Per-update plumbing: one database session, the acting person, waking the outbox sender."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Chat, TelegramObject, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.context import Ctx
from bot.delivery import Delivery
from bot.intake import ensure_person
from bot.org import load_actor
from bot.outbox import release_held

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def display_name(user: User) -> str:
    return user.full_name or user.username or str(user.id)


class DbMiddleware(BaseMiddleware):
    """Opens the session the handler and the domain use; the domain commits."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ctx: Ctx,
                 delivery: Delivery | None) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.delivery = delivery

    async def __call__(self, handler: Handler, event: TelegramObject,
                       data: dict[str, Any]) -> Any:
        async with self.sessions() as db:
            data["db"] = db
            data["ctx"] = self.ctx
            user: User | None = data.get("event_from_user")
            chat: Chat | None = data.get("event_chat")
            if user is not None and not user.is_bot:
                if chat is not None and chat.type == "private":
                    await self._reachable(db, user)
                data["actor"] = await load_actor(db, user.id, display_name(user))
            try:
                return await handler(event, data)
            finally:
                if self.delivery is not None:
                    self.delivery.wake()

    async def _reachable(self, db: AsyncSession, user: User) -> None:
        """Someone who writes to the bot privately can be written to: release what waited."""
        now = self.ctx.clock.now()
        person = await ensure_person(db, user.id, display_name(user), now)
        if person.dm_ok is not True:
            person.dm_ok = True
            await release_held(db, user.id, now)
        await db.commit()
