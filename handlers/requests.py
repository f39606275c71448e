"""同意 / 不同意 on an extension or suspension request (`q1:<request id>:<y|n>`).

The request row decides whether a button is stale, not the case's rev: the handler accepting
or assigning the case meanwhile leaves the approval standing. 不同意 asks for a reason first.
同意 on a request that no longer applies (bot.workflow.approvals) is refused with the reason,
as an alert and in the chat, and the card loses its buttons.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.buttons import REQUEST_PREFIX, RequestAnswer, RequestButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.roles import Actor
from bot.workflow import approvals, case_requests
from handlers.case_buttons import NOT_COMMAND, ask, text_or_again
from handlers.common import RouterSpec, button_tx, refuse, submit_text

router = RouterSpec("requests")


class RequestFlow(StatesGroup):
    reason = State()


@router.callback_query(F.data.startswith(f"{REQUEST_PREFIX}:"))
async def request_answer(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, RequestButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        if btn.answer == RequestAnswer.APPROVE:
            req = await approvals.answer(tx, actor, btn.request_id, True)
            if isinstance(query.message, Message):
                # Answered: the card keeps its text and loses its buttons.
                with contextlib.suppress(TelegramBadRequest):
                    await query.message.edit_reply_markup(reply_markup=None)
            await query.answer(tx.texts.plain("done_approve", case_id=req.case_id))
            return
        req = await case_requests.check_answer(tx, actor, btn.request_id)
    except DomainError as err:
        await db.rollback()
        if err.code == "request_refused" and isinstance(query.message, Message):
            # Answered as refused (a rule of the request no longer held): the card loses its
            # buttons, and the reason stays in the chat, not only in the alert.
            with contextlib.suppress(TelegramBadRequest):
                await query.message.edit_reply_markup(reply_markup=None)
            await query.message.answer(err.explain(tx.texts))
        await refuse(query, tx, err)
        return
    await ask(query, state, RequestFlow.reason, tx.texts,
              tx.texts.label("ask_decline_reason", case_id=req.case_id),
              request_id=req.id, case_id=req.case_id)


@router.message(RequestFlow.reason, NOT_COMMAND)
async def decline_reason(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    text = await text_or_again(message, ctx)
    if text is None:
        return

    async def run(tx: Tx, data: dict[str, Any]) -> None:
        await approvals.answer(tx, actor, int(data.get("request_id", 0)), False, text)

    await submit_text(message, state, db, ctx, run=run, done="done_decline")
