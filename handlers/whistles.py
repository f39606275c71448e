"""吹哨 on a case card and the department's 报到 / 已处理 (`w1:<whistle id>:<a|d>`).

吹哨 (`c1:wh:…`) asks for the department (`wd:<code>` buttons), then for what is needed, then
calls it in. A department's buttons are judged by the whistle row, not the case's rev: the
handler accepting or assigning meanwhile does not spoil them. 已处理 asks for a note, and in a
private chat photos too, shown in a preview with 提交 (`wn:ok`) and 取消 (`wn:no`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import take_draft_photos
from bot.cases.buttons import WHISTLE_PREFIX, CaseButton, WhistleAnswer, WhistleButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.directory import directory
from bot.org.roles import Actor
from bot.telegram.delivery import keyboard
from bot.workflow import whistles
from handlers.case_buttons import NOT_COMMAND, ask, text_or_again
from handlers.common import (
    RouterSpec,
    button_tx,
    draft_with_photos,
    refuse,
    submit_draft,
    submit_markup,
    submit_text,
)

router = RouterSpec("whistles")


class WhistleFlow(StatesGroup):
    department = State()
    ask = State()
    note = State()


# --- 吹哨: department, then what is needed ----------------------------------------------------


@router.callback_query(F.data.regexp(r"^c1:wh:"))
async def whistle_button(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        await whistles.check_call(tx, actor, btn.case_id, btn.rev)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    if not isinstance(query.message, Message):
        await query.answer(tx.texts.plain("flow_expired"), show_alert=True)
        return
    departments = (await directory(tx.db)).departments.values()
    rows = [[InlineKeyboardButton(text=d.name, callback_data=f"wd:{d.code}")]
            for d in departments]
    rows.append([InlineKeyboardButton(text=tx.texts.plain("btn_cancel"), callback_data="wd:")])
    await state.set_state(WhistleFlow.department)
    await state.set_data({"case_id": btn.case_id, "rev": btn.rev})
    await query.answer()
    await query.message.answer(tx.texts.label("ask_department", case_id=btn.case_id),
                               reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))


@router.callback_query(WhistleFlow.department, F.data.startswith("wd:"))
async def department_picked(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                            ctx: Ctx) -> None:
    code = (query.data or "")[3:]
    if isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(reply_markup=None)
    if not code:
        await state.clear()
        await query.answer(ctx.texts.plain("cancelled"))
        return
    dept = (await directory(db)).departments.get(code)
    if dept is None or not isinstance(query.message, Message):
        await state.clear()
        await query.answer(ctx.texts.plain("err_no_department"), show_alert=True)
        return
    data = await state.get_data()
    await ask(query, state, WhistleFlow.ask, ctx.texts,
              ctx.texts.label("ask_whistle_ask", name=dept.name),
              case_id=data.get("case_id"), rev=data.get("rev"), department=code)


@router.callback_query(F.data.startswith("wd:"))
async def department_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


@router.message(WhistleFlow.ask, NOT_COMMAND)
async def ask_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                    actor: Actor) -> None:
    text = await text_or_again(message, ctx)
    if text is None:
        return

    async def run(tx: Tx, data: dict[str, Any]) -> dict[str, object]:
        code = str(data.get("department") or "")
        await whistles.call(tx, actor, int(data.get("case_id") or 0), int(data.get("rev") or 0),
                            code, text)
        dept = (await directory(tx.db)).departments.get(code)
        return {"name": dept.name if dept else code}

    await submit_text(message, state, db, ctx, run=run, done="done_whistle")


# --- the department: 报到, 已处理 --------------------------------------------------------------


@router.callback_query(F.data.startswith(f"{WHISTLE_PREFIX}:"))
async def department_answer(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                            ctx: Ctx, actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, WhistleButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        if btn.answer == WhistleAnswer.ACK:
            whistle = await whistles.acknowledge(tx, actor, btn.whistle_id)
            if isinstance(query.message, Message):
                # Acknowledged: 已处理 is what is left on the card.
                with contextlib.suppress(TelegramBadRequest):
                    await query.message.edit_reply_markup(
                        reply_markup=keyboard(whistles.answer_buttons(tx, whistle)))
            await query.answer(tx.texts.plain("done_whistle_ack", case_id=whistle.case_id))
            return
        whistle = await whistles.check_done(tx, actor, btn.whistle_id)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await ask(query, state, WhistleFlow.note, tx.texts,
              tx.texts.label("ask_whistle_note", case_id=whistle.case_id),
              whistle_id=whistle.id, case_id=whistle.case_id)


@router.message(WhistleFlow.note, NOT_COMMAND)
async def note_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    """The note: text, and in a private chat photos too; submitted with a button."""
    await draft_with_photos(message, state, db, ctx, key="note", limit=user_text.REASON_LIMIT,
                            photo_first="photo_now_whistle_note", preview="whistle_note_preview",
                            markup=submit_markup(ctx, "btn_submit_whistle_note", "wn"))

@router.callback_query(WhistleFlow.note, F.data == "wn:ok")
async def note_submit(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                      actor: Actor) -> None:
    async def run(tx: Tx, data: dict[str, Any], photos: list[str]) -> None:
        await whistles.done(tx, actor, int(data.get("whistle_id") or 0), str(data["note"]),
                            photos)

    await submit_draft(query, state, db, ctx, key="note", run=run, done="done_whistle_done")


@router.callback_query(F.data == "wn:no")
async def note_cancel(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                      ctx: Ctx) -> None:
    if await state.get_state() == WhistleFlow.note.state:
        await state.clear()
        if isinstance(query.message, Message) and query.message.chat.type == "private":
            await take_draft_photos(db, query.message.chat.id)
            await db.commit()
    if isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(reply_markup=None)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data == "wn:ok")
async def note_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
