"""申请延期 on the handler's card (`c1:xr:<case>:<rev>`) and the two questions it opens:
how long (buttons `xl:1d` / `xl:3d` / `xl:7d`, or typed like `2d` or `12h`), then why.

Every press is checked by the domain first (bot.workflow.extensions.check_request), so a handler who
may not ask is told why before any question; the request itself checks it all again.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.buttons import Action, CaseButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.roles import Actor
from bot.workflow import extensions
from handlers.case_buttons import NOT_COMMAND, text_or_again
from handlers.common import (
    RouterSpec,
    button_tx,
    message_text,
    prompt_markup,
    refuse,
    submit_text,
)

router = RouterSpec("extensions")

LENGTH_PREFIX = "xl"


class ExtensionFlow(StatesGroup):
    length = State()
    reason = State()


def _length_markup(ctx: Ctx) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text=ctx.texts.plain(f"btn_len_{code}"),
                             callback_data=f"{LENGTH_PREFIX}:{code}")
        for code in extensions.LENGTHS
    ]])


@router.callback_query(F.data.regexp(rf"^c1:{Action.EXTEND.value}:"))
async def extend_pressed(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        await extensions.check_request(tx, actor, btn.case_id, btn.rev)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    # Nothing was written: end the read transaction before the conversation goes on.
    await db.rollback()
    if not isinstance(query.message, Message):
        # No message to answer under: a question nobody sees would take their next words.
        await query.answer(tx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.set_state(ExtensionFlow.length)
    await state.set_data({"case_id": btn.case_id, "rev": btn.rev})
    await query.answer()
    text = tx.texts.label("ask_extension_length", case_id=btn.case_id)
    if query.message.chat.type != "private":
        # Say whose question it is; a typed length must be a reply to it in a group.
        name = user_text.clean_name(query.from_user.full_name) or str(query.from_user.id)
        text = Markup("{} {}").format(name, text)
    await query.message.answer(text, reply_markup=_length_markup(ctx))


def length_text(ctx: Ctx, seconds: int) -> Markup:
    """"申请延期 2 天。": the length as chosen, said back before the reason is asked."""
    if seconds % 86400 == 0:
        return ctx.texts.label("extension_days", count=seconds // 86400)
    return ctx.texts.label("extension_hours", count=seconds // 3600)


async def _ask_reason(message: Message, state: FSMContext, ctx: Ctx, seconds: int) -> None:
    data = await state.update_data(seconds=seconds)
    await state.set_state(ExtensionFlow.reason)
    question = ctx.texts.label("ask_extension_reason", case_id=data.get("case_id"))
    await message.answer(Markup("{}\n{}").format(length_text(ctx, seconds), question),
                         reply_markup=prompt_markup(message))


@router.callback_query(ExtensionFlow.length, F.data.startswith(f"{LENGTH_PREFIX}:"))
async def length_chosen(query: CallbackQuery, state: FSMContext, ctx: Ctx) -> None:
    seconds = extensions.LENGTHS.get((query.data or "").removeprefix(f"{LENGTH_PREFIX}:"))
    if seconds is None or not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("err_bad_button"), show_alert=True)
        return
    await query.answer()
    with contextlib.suppress(TelegramBadRequest):
        await query.message.edit_reply_markup(reply_markup=None)
    await _ask_reason(query.message, state, ctx, seconds)


@router.callback_query(F.data.startswith(f"{LENGTH_PREFIX}:"))
async def length_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


@router.message(ExtensionFlow.length, NOT_COMMAND)
async def length_typed(message: Message, state: FSMContext, ctx: Ctx) -> None:
    try:
        seconds = extensions.parse_length(message_text(message))
    except DomainError:
        await message.reply(ctx.texts.label("ask_extension_length_again"),
                            reply_markup=_length_markup(ctx))
        return
    await _ask_reason(message, state, ctx, seconds)


@router.message(ExtensionFlow.reason, NOT_COMMAND)
async def reason_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    text = await text_or_again(message, ctx)
    if text is None:
        return

    async def run(tx: Tx, data: dict[str, Any]) -> None:
        await extensions.request(tx, actor, int(data.get("case_id", 0)),
                                 int(data.get("rev", 0)), int(data.get("seconds", 0)), text)

    await submit_text(message, state, db, ctx, run=run, done="done_extension_request")
