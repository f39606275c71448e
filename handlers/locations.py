"""📍 on a staff card: the case's place, sent privately as a venue (bot/cases/locations.py)."""

from __future__ import annotations

from aiogram import F
from aiogram.types import CallbackQuery
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases import locations
from bot.cases.buttons import Action, CaseButton
from bot.context import Ctx
from bot.errors import DomainError
from bot.org.roles import Actor
from handlers.common import RouterSpec, button_tx, refuse

router = RouterSpec("locations")


@router.callback_query(F.data.startswith(f"c1:{Action.LOCATION.value}:"))
async def location(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        # The place does not change with the case: a button from an older card still works.
        await locations.send_location(tx, actor, btn.case_id, query.id)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await db.commit()
    await query.answer(tx.texts.plain("location_on_way"))
