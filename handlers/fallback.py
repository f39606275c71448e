"""Last router: whatever nobody else took. Private chats get help; groups stay quiet."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Ctx
from bot.org.roles import Actor
from handlers import menus
from handlers.common import RouterSpec

router = RouterSpec("fallback")


@router.message(F.chat.type == "private")
async def private_other(message: Message, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    """Staff get what they may do, by role (as /help); a resident how to report."""
    if actor.is_staff:
        await message.answer(await menus.help_for(db, ctx.texts, actor))
        return
    await message.answer(ctx.texts.render("help_private", name=actor.name))


@router.callback_query()
async def unknown_button(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("err_bad_button"), show_alert=True)
