"""挂账 and 恢复办理: the buttons of bot.workflow.suspension and the two prompts 挂账 opens.

挂账 (`c1:su:<case>:<rev>`) asks for the reason, then for the review date: a button
(`sv:30d` …) or a typed date; the request then goes to the supervisors above. 恢复办理
(`c1:sr:<case>:<rev>`) resumes at once. The `sv:` buttons only work while their prompt is open.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.buttons import Action, CaseButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.roles import Actor
from bot.workflow import suspension
from handlers.case_buttons import NOT_COMMAND, ask, refresh, text_or_again
from handlers.common import RouterSpec, button_tx, message_text, open_tx, prompt_markup, refuse

router = RouterSpec("suspension")

REVIEW_PREFIX = "sv"


class SuspendFlow(StatesGroup):
    reason = State()
    review = State()


def _review_markup(ctx: Ctx) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text=ctx.texts.plain(f"btn_review_{choice}"),
                             callback_data=f"{REVIEW_PREFIX}:{choice}")
        for choice in suspension.REVIEW_CHOICES
    ]])


@router.callback_query(F.data.regexp(r"^c1:(su|sr):"))
async def suspend_button(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        if btn.action == Action.RESUME:
            case = await suspension.resume(tx, actor, btn.case_id, btn.rev)
            await refresh(query, tx, actor, case)
            await query.answer(tx.texts.plain("done_resume", case_id=case.id))
            return
        await suspension.check_request(tx, actor, btn.case_id, btn.rev)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await ask(query, state, SuspendFlow.reason, tx.texts,
              tx.texts.label("ask_suspend_reason", case_id=btn.case_id),
              case_id=btn.case_id, rev=btn.rev)


@router.message(SuspendFlow.reason, NOT_COMMAND)
async def suspend_reason(message: Message, state: FSMContext, ctx: Ctx) -> None:
    text = await text_or_again(message, ctx)
    if text is None:
        return
    await state.update_data(reason=text)
    await state.set_state(SuspendFlow.review)
    await message.reply(ctx.texts.label("ask_review_date"), reply_markup=_review_markup(ctx))


@router.message(SuspendFlow.review, NOT_COMMAND)
async def review_typed(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    try:
        review_at = suspension.parse_review(message_text(message), tx.now, tx.policy.timezone)
    except ValueError:
        await message.reply(tx.texts.label("err_bad_review_date"),
                            reply_markup=prompt_markup(message) or _review_markup(ctx))
        return
    await _finish(message, state, tx, actor, review_at)


@router.callback_query(SuspendFlow.review, F.data.startswith(f"{REVIEW_PREFIX}:"))
async def review_picked(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                        actor: Actor) -> None:
    choice = (query.data or "").removeprefix(f"{REVIEW_PREFIX}:")
    if choice not in suspension.REVIEW_CHOICES or not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    review_at = suspension.review_in(int(choice.removesuffix("d")), tx.now, tx.policy.timezone)
    await query.answer()
    with contextlib.suppress(TelegramBadRequest):
        await query.message.edit_reply_markup(reply_markup=None)
    await _finish(query.message, state, tx, actor, review_at)


@router.callback_query(F.data.startswith(f"{REVIEW_PREFIX}:"))
async def review_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


async def _finish(message: Message, state: FSMContext, tx: Tx, actor: Actor,
                  review_at: datetime) -> None:
    data = await state.get_data()
    # Cleared first: a second answer given meanwhile finds no prompt.
    await state.clear()
    cid, rev = int(data.get("case_id", 0)), int(data.get("rev", 0))
    try:
        req = await suspension.request(tx, actor, cid, rev, str(data.get("reason", "")),
                                       review_at)
    except DomainError as err:
        await tx.db.rollback()
        await refuse(message, tx, err)
        return
    # The review date as the request has it: moved to a working day, if it fell on a day off.
    day = tx.texts.local_time(req.review_at, "%Y-%m-%d")
    text = tx.texts.label("done_suspension_request", case_id=cid, text=day)
    if req.review_at != review_at:
        text = Markup("{}\n{}").format(text, tx.texts.label(
            "review_moved", text=tx.texts.local_time(review_at, "%Y-%m-%d")))
    await message.reply(text)
