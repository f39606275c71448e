"""First router: updates that do not come from a person we could hold to a report.

- Sent on behalf of a chat (`sender_chat`: an anonymous group admin, whose `from` is
  GroupAnonymousBot, or a channel, whose `from` is Channel_Bot): nobody to attribute a case to
  or to check roles of. A command or a reply to the bot gets a polite request to write as
  themselves; anything else (a channel's automatic forward, chatter) is ignored.
- Sent by another bot: ignored, whatever it is.

Everything after this router may rely on a real person behind the update (the middleware
loads their roles as `actor`).
"""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery, Message

from bot.context import Ctx
from handlers.common import RouterSpec, message_text

router = RouterSpec("guard")


def _not_a_person(message: Message) -> bool:
    return (message.sender_chat is not None or message.from_user is None
            or message.from_user.is_bot)


@router.message(_not_a_person)
async def not_a_person(message: Message, ctx: Ctx) -> None:
    if message.sender_chat is None or message.chat.type == "private":
        return  # another bot, or something that cannot happen: no answer
    addressed = message_text(message).startswith("/") or (
        message.reply_to_message is not None and message.reply_to_message.from_user is not None
        and message.reply_to_message.from_user.id == ctx.bot_id)
    if addressed:
        await message.reply(ctx.texts.label("as_yourself"))


@router.callback_query(F.from_user.is_bot)
async def bot_pressed(query: CallbackQuery) -> None:
    """Bots cannot press buttons; a forged update claiming one did changes nothing."""
