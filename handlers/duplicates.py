"""是同一问题 / 不是，另报 under the question a report may get (`d1:<offer id>:<s|n>`).

Only the reporter may answer; in a group anyone else who presses is told so. The question's
message then says what became of the report, without its buttons.
"""

from __future__ import annotations

import contextlib

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases import duplicates
from bot.cases.buttons import DUPLICATE_PREFIX, DuplicateAnswer, DuplicateButton
from bot.context import Ctx
from bot.errors import DomainError
from bot.org.roles import Actor
from handlers.common import RouterSpec, button_tx, refuse

router = RouterSpec("duplicates")


@router.callback_query(F.data.startswith(f"{DUPLICATE_PREFIX}:"))
async def answered(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, DuplicateButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        got = await duplicates.answer(tx, actor.id, btn.offer_id,
                                      btn.answer == DuplicateAnswer.SAME)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    text = (tx.texts.label("dup_joined", case_id=got.case_id, count=got.affected) if got.joined
            else tx.texts.label("dup_filed", case_id=got.case_id))
    await query.answer(text.unescape())
    if isinstance(query.message, Message):
        # Too old to edit: the answer above and the acknowledgement still tell them.
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_text(text, reply_markup=None)
