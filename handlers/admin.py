"""Commands around the loop: /bind, /whoami, /cases, /case, /my, /help; joining a group."""

from __future__ import annotations

from aiogram import Bot, F
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import (
    IS_MEMBER,
    IS_NOT_MEMBER,
    ChatMemberUpdatedFilter,
    Command,
    CommandObject,
)
from aiogram.types import CallbackQuery, ChatMemberUpdated, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases import views
from bot.cases.buttons import BIND_PREFIX, BindAnswer, BindButton, bind_button
from bot.cases.intake import place_of_chat
from bot.cases.outbox import follow_migration
from bot.context import Ctx
from bot.errors import DomainError
from bot.org import binding
from bot.org.roles import Actor
from bot.telegram.delivery import keyboard
from handlers import menus
from handlers.common import RouterSpec, open_tx, refuse
from storage.models import ReportPrompt

router = RouterSpec("admin")
PRIVATE_ONLY = {"cases", "case", "my"}
# `/case 12`, `/case #12`, `/case １２`: read by user_text.typed_number (ASCII digits, or
# full-width ones; "²" and "١٢" are no number).
PAGE_DIGITS = 6


@router.message(Command(*PRIVATE_ONLY), F.chat.type != "private")
async def private_only(message: Message, ctx: Ctx) -> None:
    """Case lists never go to a group: what is in them is for the person asking."""
    await message.reply(ctx.texts.label("use_private", link=ctx.deep_link("start")))


@router.message(Command("cases"))
async def list_cases(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
                     actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    arg = (command.args or "").strip()
    page = user_text.typed_number(arg, digits=PAGE_DIGITS) if arg else 1
    if not page:
        await message.reply(tx.texts.label("usage_cases"))
        return
    try:
        await message.answer(await views.staff_cases(tx, actor, page))
    except DomainError as err:
        await refuse(message, tx, err)


@router.message(Command("case"))
async def show_case(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
                    actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    case_id = user_text.typed_number(command.args)
    if case_id is None:
        await message.reply(tx.texts.label("usage_case"))
        return
    try:
        text, buttons = await views.case_detail(tx, actor, case_id)
    except DomainError as err:
        await refuse(message, tx, err)
        return
    await message.answer(text, reply_markup=keyboard(buttons))


@router.message(Command("my"))
async def my_cases(message: Message, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    await message.answer(await views.my_cases(tx, actor))


@router.message(Command("whoami"))
async def whoami(message: Message, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    await message.reply(await views.whoami(tx, actor))


@router.message(Command("bind"))
async def bind(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
               actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    if message.chat.type == "private":
        await message.reply(tx.texts.label("bind_in_group"))
        return
    args = (command.args or "").split()
    if len(args) != 1:
        await message.reply(tx.texts.label("usage_bind"))
        return
    try:
        outcome = await binding.request_bind(tx, actor, message.chat.id, args[0])
    except DomainError as err:
        await refuse(message, tx, err)
        return
    if isinstance(outcome, binding.Bound):
        await message.reply(views.bound_text(tx.texts, outcome))
        return
    t = tx.texts
    text = views.bind_question(t, outcome)
    buttons = [[bind_button(t.plain("btn_bind_confirm"), outcome.request_id, BindAnswer.CONFIRM),
                bind_button(t.plain("btn_bind_cancel"), outcome.request_id, BindAnswer.CANCEL)]]
    await message.reply(text, reply_markup=keyboard(buttons))


@router.callback_query(F.data.startswith(f"{BIND_PREFIX}:"))
async def bind_answer(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    """The answer to a bind question: only its author, in its chat, while it still holds."""
    btn = BindButton.unpack(query.data or "")
    if btn is None or not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("err_bad_button"), show_alert=True)
        return
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    try:
        outcome = await binding.answer_bind(tx, actor, query.message.chat.id, btn.request_id,
                                            btn.answer == BindAnswer.CONFIRM)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    text = (views.bound_text(tx.texts, outcome) if outcome
            else tx.texts.label("bind_cancelled"))
    await query.answer()
    # The question becomes its answer; too old to edit, the answer goes below it instead.
    try:
        await query.message.edit_text(text, reply_markup=None)
    except TelegramBadRequest:
        await query.message.answer(text)


@router.message(Command("help"))
async def help_command(message: Message, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    if message.chat.type == "private":
        # What this person may do, by role (handlers/menus.py, like their command menu).
        await message.answer(await menus.help_for(db, ctx.texts, actor))
        return
    await _group_help(message.chat.id, db, ctx, message.bot)


@router.my_chat_member(ChatMemberUpdatedFilter(IS_NOT_MEMBER >> IS_MEMBER))
async def added_to_group(event: ChatMemberUpdated, db: AsyncSession, ctx: Ctx) -> None:
    if event.chat.type in ("group", "supergroup"):
        await _group_help(event.chat.id, db, ctx, event.bot)


async def _group_help(chat_id: int, db: AsyncSession, ctx: Ctx, bot: Bot | None) -> None:
    """How to report here, and for staff how to bind; a reply to it is a report."""
    assert bot is not None
    place = await place_of_chat(db, chat_id)
    link = ctx.deep_link(f"b{place[0].id}") if place else ctx.deep_link("start")
    text = ctx.texts.render("group_help", bound=place is not None, link=link,
                            place=place[0].name if place else None)
    sent = await bot.send_message(chat_id, text)
    db.add(ReportPrompt(chat_id=chat_id, message_id=sent.message_id))
    await db.commit()


@router.message(F.migrate_to_chat_id)
async def migrated(message: Message, db: AsyncSession) -> None:
    """The group became a supergroup: follow it to its new id."""
    assert message.migrate_to_chat_id is not None
    await follow_migration(db, message.chat.id, message.migrate_to_chat_id)
    await db.commit()
