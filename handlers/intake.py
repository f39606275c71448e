"""Reports in building and unit group chats, under Telegram's privacy mode.

The bot sees commands, replies to its own messages and service messages only, so a report is
`/report <text>`, a photo or album captioned `/report …`, or a reply to the bot's invitation.
A staff member who answers a resident's message with `/report` reports on their behalf.
"""

from __future__ import annotations

from aiogram import F
from aiogram.filters import Command, CommandObject
from aiogram.types import Message, User
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases import duplicates, voice
from bot.cases import lifecycle as cases
from bot.cases.albums import hold_photo
from bot.cases.intake import place_of_chat, reporter_for
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.roles import node_by_chat
from handlers.common import RouterSpec, message_text, open_tx, refuse, voice_of
from handlers.middlewares import display_name
from storage.models import PendingPhoto, ReportPrompt

router = RouterSpec("group_intake")
router.message.filter(F.chat.type.in_({"group", "supergroup"}))


def _command_args(text: str) -> tuple[bool, str]:
    """(is a /report command, what follows it); accepts `/report@BotName` too."""
    stripped = text.strip()
    head = stripped.split(maxsplit=1)[0] if stripped else ""
    if head.split("@", 1)[0].lower() != "/report":
        return False, text
    return True, stripped[len(head):].strip()


def _behalf(message: Message) -> User | None:
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.is_bot:
        return None
    return replied.from_user


async def _not_reportable(message: Message, tx: Tx) -> bool:
    """Answer and return True when this chat is not a residents' chat."""
    if await place_of_chat(tx.db, message.chat.id) is not None:
        return False
    node = await node_by_chat(tx.db, message.chat.id)
    key = "report_in_work_chat" if node is not None else "chat_not_bound"
    await message.reply(tx.texts.label(key))
    return True


@router.message(F.media_group_id, F.photo)
async def album_part(message: Message, db: AsyncSession, ctx: Ctx) -> None:
    """Store each album part; the album becomes one case once it has settled."""
    assert message.photo is not None and message.from_user is not None
    is_report, args = _command_args(message.caption or "")
    behalf = _behalf(message)
    await hold_photo(db, PendingPhoto(
        chat_id=message.chat.id, message_id=message.message_id, user_id=message.from_user.id,
        user_name=display_name(message.from_user), media_group_id=message.media_group_id,
        file_id=message.photo[-1].file_id, caption=args if is_report else None,
        intent=is_report, on_behalf_of_id=behalf.id if behalf else None,
        on_behalf_of_name=display_name(behalf) if behalf else None,
        received_at=ctx.clock.now(),
    ))


@router.message(Command("report"))
async def report_command(message: Message, command: CommandObject, db: AsyncSession,
                         ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None or await _not_reportable(message, tx):
        return
    text = command.args or ""
    photos = [message.photo[-1].file_id] if message.photo else []
    behalf = _behalf(message)
    replied = message.reply_to_message
    if replied is not None and not user_text.visible(text):
        # `/report` in answer to a message reports that message.
        text = message_text(replied)
        if replied.photo and not photos:
            photos = [replied.photo[-1].file_id]
    if not user_text.visible(text) and not photos:
        sent = await message.reply(tx.texts.render("report_prompt"))
        db.add(ReportPrompt(chat_id=sent.chat.id, message_id=sent.message_id))
        await db.commit()
        return
    await _report(message, tx, text, photos, behalf)


@router.message(F.reply_to_message.from_user.is_bot.is_(True))
async def reply_to_prompt(message: Message, db: AsyncSession, ctx: Ctx) -> None:
    """A reply to the bot's invitation to report is a report; other replies are chatter."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != ctx.bot_id:
        return
    prompt = await db.scalar(select(ReportPrompt.id).where(
        ReportPrompt.chat_id == message.chat.id, ReportPrompt.message_id == replied.message_id))
    if prompt is None:
        return
    tx = await open_tx(db, ctx, message)
    if tx is None or await _not_reportable(message, tx):
        return
    text = message_text(message)
    photos = [message.photo[-1].file_id] if message.photo else []
    # A voice or video note in reply stands for the description (cases.report checks its
    # length); the acknowledgement in the group never repeats it, only staff get it.
    spoken = voice_of(message)
    if not user_text.visible(text) and not photos and spoken is None:
        await message.reply(tx.texts.render("report_prompt"))
        return
    await _report(message, tx, text, photos, None, spoken)


async def _report(message: Message, tx: Tx, text: str, photos: list[str],
                  behalf: User | None, spoken: voice.Voice | None = None) -> None:
    assert message.from_user is not None
    place = await place_of_chat(tx.db, message.chat.id)
    assert place is not None
    building, unit = place
    reporter_id, submitted_by = await reporter_for(
        tx.db, tx, message.from_user.id, display_name(message.from_user),
        behalf.id if behalf else None, display_name(behalf) if behalf else None,
        building.id, unit.id if unit else None,
    )
    try:
        # A report that may be an open case's problem asks its reporter first.
        await duplicates.submit(tx, cases.ReportInput(
            building_id=building.id, unit_id=unit.id if unit else None,
            reporter_id=reporter_id, submitted_by_id=submitted_by, description=text,
            photos=photos, source_chat_id=message.chat.id, source_message_id=message.message_id,
            voice=spoken,
        ))
    except DomainError as err:
        await tx.db.rollback()
        await refuse(message, tx, err)
