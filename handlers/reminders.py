"""A case's number on a reminder list: its card as it is now, privately to whoever pressed."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases import views
from bot.cases.buttons import Action, CaseButton
from bot.context import Ctx
from bot.errors import DomainError
from bot.org.roles import Actor
from bot.telegram.delivery import keyboard
from handlers.common import RouterSpec, button_tx, refuse
from storage.models import Person

router = RouterSpec("reminders")


@router.callback_query(F.data.startswith(f"c1:{Action.OPEN.value}:"))
async def open_case(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        # A list is read later than it was written: the card shows the case as it is now, so
        # an older list's button still works (no rev check).
        text, buttons = await views.case_detail(tx, actor, btn.case_id)
    except DomainError as err:
        await refuse(query, tx, err)
        return
    assert query.bot is not None
    private = query.message is not None and query.message.chat.id == query.from_user.id
    person = await db.get(Person, query.from_user.id)
    if not private and (person is None or person.dm_ok is False):
        # Pressed on a list in a group by someone the bot cannot write to privately: the
        # card is never posted to the group.
        await query.answer(tx.texts.plain("remind_open_start", case_id=btn.case_id),
                           show_alert=True)
        return
    await query.bot.send_message(query.from_user.id, text, reply_markup=keyboard(buttons))
    await query.answer(None if private else tx.texts.plain("remind_open_sent",
                                                           case_id=btn.case_id))
