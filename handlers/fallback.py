"""Last router: whatever nobody else took. Private chats get help; groups stay quiet."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery, Message

from bot.context import Ctx
from bot.org.roles import Actor
from handlers.common import RouterSpec

router = RouterSpec("fallback")


@router.message(F.chat.type == "private")
async def private_other(message: Message, ctx: Ctx, actor: Actor) -> None:
    template = "welcome_staff" if actor.is_staff else "help_private"
    await message.answer(ctx.texts.render(template, name=actor.name))


@router.callback_query()
async def unknown_button(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("err_bad_button"), show_alert=True)
