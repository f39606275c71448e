"""Small helpers shared by the routers: answering refusals, reading command arguments."""

from __future__ import annotations

from aiogram.types import CallbackQuery, ForceReply, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases import DomainError
from bot.context import Ctx, NotConfigured, Tx, begin


async def open_tx(db: AsyncSession, ctx: Ctx, event: Message | CallbackQuery) -> Tx | None:
    """The domain transaction, or None after telling the person the bot is not set up yet."""
    try:
        return await begin(db, ctx)
    except NotConfigured:
        text = ctx.texts.label("not_configured")
        if isinstance(event, CallbackQuery):
            await event.answer(text, show_alert=True)
        else:
            await event.answer(text)
        return None


def refusal(tx: Tx, err: DomainError) -> str:
    return tx.texts.label(f"err_{err.code}", **err.context)


async def refuse(event: Message | CallbackQuery, tx: Tx, err: DomainError) -> None:
    text = refusal(tx, err)
    if isinstance(event, CallbackQuery):
        await event.answer(text, show_alert=True)
    else:
        await event.reply(text)


def prompt_markup(message: Message) -> ForceReply | None:
    """In a group the answer must be a reply to the bot, or privacy mode hides it from us."""
    if message.chat.type == "private":
        return None
    return ForceReply(selective=True)


def message_text(message: Message) -> str:
    return message.text or message.caption or ""
