"""The buttons and prompt of bot.workflow.checks (核查): 通过 at once; 不通过 asks for a
reason, and in a
private chat takes photos too, then shows a preview to submit (`kf:ok`) or drop (`kf:no`).
"""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import take_draft_photos
from bot.cases.buttons import Action, CaseButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.roles import Actor
from bot.workflow import checks
from handlers.case_buttons import NOT_COMMAND, ask, refresh
from handlers.common import (
    RouterSpec,
    button_tx,
    draft_with_photos,
    refuse,
    submit_draft,
    submit_markup,
)

router = RouterSpec("checks")


class CheckFlow(StatesGroup):
    reason = State()


@router.callback_query(F.data.regexp(r"^c1:(kp|kf):"))
async def check_button(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    cid, rev = btn.case_id, btn.rev
    try:
        if btn.action == Action.CHECK_PASS:
            case = await checks.pass_(tx, actor, cid, rev)
            await refresh(query, tx, actor, case)
            await query.answer(tx.texts.plain("done_check_pass", case_id=cid))
            return
        await checks.check_fail(tx, actor, cid, rev)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await ask(query, state, CheckFlow.reason, tx.texts,
              tx.texts.label("ask_check_fail_reason", case_id=cid), case_id=cid, rev=rev)


@router.message(CheckFlow.reason, NOT_COMMAND)
async def reason_given(message: Message, state: FSMContext, db: AsyncSession,
                       ctx: Ctx) -> None:
    """The reason: text, and in a private chat photos too; submitted with a button."""
    await draft_with_photos(message, state, db, ctx, key="reason",
                            limit=user_text.REASON_LIMIT, photo_first="check_photo_now_reason",
                            preview="check_fail_preview",
                            markup=submit_markup(ctx, "btn_submit_check_fail", "kf"))

@router.callback_query(CheckFlow.reason, F.data == "kf:ok")
async def fail_submit(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                      actor: Actor) -> None:
    async def run(tx: Tx, data: dict[str, Any], photos: list[str]) -> None:
        await checks.fail(tx, actor, int(data.get("case_id", 0)), int(data.get("rev", 0)),
                          data["reason"], photos)

    await submit_draft(query, state, db, ctx, key="reason", run=run, done="done_check_fail")


@router.callback_query(F.data == "kf:no")
async def fail_cancel(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                      ctx: Ctx) -> None:
    if await state.get_state() == CheckFlow.reason.state:
        await state.clear()
    if isinstance(query.message, Message):
        if query.message.chat.type == "private":
            await take_draft_photos(db, query.message.chat.id)
            await db.commit()
        await query.message.edit_reply_markup(reply_markup=None)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data == "kf:ok")
async def fail_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
