"""/visit (走访): a grid's staff record a visit to a household of its care roster, privately.

`/visit` (private chat; grid leaders and members) shows the buildings of their grids that
have a roster (`cv:b:<building id>`), then the households of the one chosen (`cv:h:<id>`,
paged with `cv:p:<building id>:<page>`, back with `cv:l`), marked 🔴 overdue / 🟡 due soon.
A household's line on a reminder list opens it with the same `cv:h:<id>`. The household's
card asks for the visit: text (the note), photos, a location; each time there is text a
preview with 提交 (`cv:ok`), 发现困难 (`cv:n`, a toggle) and 取消 (`cv:no`).

Nothing of the roster is ever shown in a group: /visit there only points to the private
chat, and every `cv:` button pressed outside a private chat is refused without a word of it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import count_draft_photos, take_draft_photos
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.directory import directory
from bot.org.roles import Actor
from bot.rounds import care
from handlers.common import (
    RouterSpec,
    drop_buttons,
    hold_draft_photo,
    message_text,
    open_tx,
    refuse,
)

router = RouterSpec("care")
PAGE = 12


class VisitFlow(StatesGroup):
    note = State()


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data)


async def _show(query_or_message: CallbackQuery | Message, text: str,
                markup: InlineKeyboardMarkup | None, *, edit: bool = True) -> None:
    """A step's message: the pressed message redrawn, or a new one."""
    if isinstance(query_or_message, CallbackQuery):
        await query_or_message.answer()
        message = query_or_message.message
        if not isinstance(message, Message):
            return
        if edit:
            with contextlib.suppress(TelegramBadRequest):
                await message.edit_text(text, reply_markup=markup)
                return
        await message.answer(text, reply_markup=markup)
        return
    await query_or_message.answer(text, reply_markup=markup)


@router.message(Command("visit"), F.chat.type != "private")
async def in_group(message: Message, ctx: Ctx) -> None:
    await message.reply(ctx.texts.label("care_in_private", link=ctx.deep_link("start")))


@router.callback_query(F.data.startswith("cv:"), F.message.chat.type != "private")
async def pressed_in_group(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("care_in_private", link=ctx.deep_link("start")),
                       show_alert=True)


async def _buildings(event: CallbackQuery | Message, tx: Tx, actor: Actor) -> None:
    if not care.staff_grids(await directory(tx.db), actor):
        await refuse(event, tx, DomainError("care_not_staff"))
        return
    found = await care.buildings_for(tx, actor)
    if not found:
        await _show(event, tx.texts.label("care_no_households"), None)
        return
    rows = [[_button(tx.texts.plain("btn_care_building", name=b.building.name,
                                    count=b.households, n=b.overdue),
                     f"cv:b:{b.building.id}")] for b in found]
    rows.append([_button(tx.texts.plain("btn_cancel"), "cv:no")])
    await _show(event, tx.texts.label("ask_care_building"),
                InlineKeyboardMarkup(inline_keyboard=rows))


@router.message(Command("visit"))
async def start(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                actor: Actor) -> None:
    if (tx := await open_tx(db, ctx, message)) is None:
        return
    if await state.get_state() == VisitFlow.note.state:
        await state.clear()
        await take_draft_photos(db, message.chat.id)  # a visit left unfinished
        await db.commit()
    await _buildings(message, tx, actor)


@router.callback_query(F.data == "cv:l")
async def back_to_buildings(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                            actor: Actor) -> None:
    if (tx := await open_tx(db, ctx, query)) is not None:
        await _buildings(query, tx, actor)


async def _households(query: CallbackQuery, tx: Tx, actor: Actor, building_id: int,
                      page: int) -> None:
    try:
        found = await care.households_of(tx, actor, building_id)
    except DomainError as err:
        await refuse(query, tx, err)
        return
    d = await directory(tx.db)
    building = d.place(building_id)
    kinds = await care.kinds(tx.db)
    pages = max(1, (len(found) + PAGE - 1) // PAGE)
    page = min(max(page, 0), pages - 1)
    rows = []
    for h in found[page * PAGE:(page + 1) * PAGE]:
        kind = kinds.get(h.kind)
        mark = care.mark(h, tx.now)
        rows.append([_button(tx.texts.plain(
            "btn_care_household", place=f"{mark} {care.door_of(h)}".strip(), name=h.names,
            kind=kind.name(tx.texts.locale) if kind else h.kind), f"cv:h:{h.id}")])
    nav = []
    if page > 0:
        nav.append(_button("◀", f"cv:p:{building_id}:{page - 1}"))
    if page < pages - 1:
        nav.append(_button("▶", f"cv:p:{building_id}:{page + 1}"))
    if nav:
        rows.append(nav)
    rows.append([_button(tx.texts.plain("btn_care_buildings"), "cv:l"),
                 _button(tx.texts.plain("btn_cancel"), "cv:no")])
    await _show(query, tx.texts.label(
        "ask_care_household", place=building.name if building else str(building_id),
        page=page + 1, pages=pages), InlineKeyboardMarkup(inline_keyboard=rows))


@router.callback_query(F.data.regexp(r"^cv:b:\d{1,10}$"))
async def building_picked(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                          actor: Actor) -> None:
    if (tx := await open_tx(db, ctx, query)) is not None:
        await _households(query, tx, actor, int((query.data or "")[5:]), 0)


@router.callback_query(F.data.regexp(r"^cv:p:\d{1,10}:\d{1,4}$"))
async def page_turned(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    _, _, building_id, page = (query.data or "").split(":")
    if (tx := await open_tx(db, ctx, query)) is not None:
        await _households(query, tx, actor, int(building_id), int(page))


@router.callback_query(F.data.regexp(r"^cv:h:\d{1,10}$"))
async def household_picked(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                           ctx: Ctx, actor: Actor) -> None:
    if (tx := await open_tx(db, ctx, query)) is None:
        return
    try:
        h = await care.household_for(tx, actor, int((query.data or "")[5:]))
    except DomainError as err:
        await refuse(query, tx, err)
        return
    if isinstance(query.message, Message):
        await take_draft_photos(db, query.message.chat.id)  # a visit left unfinished
        await db.commit()
    kind = (await care.kinds(tx.db)).get(h.kind)
    place = await care.place_of(tx, h)
    await state.set_state(VisitFlow.note)
    await state.set_data({"household_id": h.id, "place": place, "need": False})
    text = tx.texts.label(
        "care_household", place=place, name=h.names,
        kind=kind.name(tx.texts.locale) if kind else h.kind,
        how=tx.texts.plain(f"care_every_{h.interval[-1]}", count=int(h.interval[:-1])),
        code=care.masked_phone(h) or "", text=h.notes or "",
        after=tx.texts.local_time(h.last_visit_at, "%Y-%m-%d"),
        before=tx.texts.local_time(h.next_due_at, "%Y-%m-%d"), limit=care.MAX_PHOTOS)
    # From the building's list the list stays; from a reminder list too: a new message.
    await _show(query, text, None, edit=False)


def _preview_markup(ctx: Ctx, need: bool) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[
        [_button(ctx.texts.plain("btn_care_need", on=need), "cv:n")],
        [_button(ctx.texts.plain("btn_care_submit"), "cv:ok"),
         _button(ctx.texts.plain("btn_cancel"), "cv:no")]])


async def _preview(message: Message, db: AsyncSession, ctx: Ctx, data: dict[str, Any]) -> str:
    photos = min(await count_draft_photos(db, message.chat.id), care.MAX_PHOTOS)
    return ctx.texts.label("care_preview", place=data.get("place", ""), text=data["note"],
                           photos=photos, any=data.get("lat") is not None,
                           on=bool(data.get("need")))


@router.message(VisitFlow.note, F.chat.type == "private", ~F.text.startswith("/"))
async def note_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    """The note, photos (albums too) and a location; each time there is text, the preview."""
    if message.location is not None:
        await state.update_data(lat=message.location.latitude, lon=message.location.longitude)
        await message.answer(ctx.texts.label("care_location_kept"))
        return
    if message.photo and message.from_user is not None:
        if await count_draft_photos(db, message.chat.id) >= care.MAX_PHOTOS:
            if message.media_group_id is None or message.caption:
                await message.reply(ctx.texts.label("care_photos_full",
                                                    limit=care.MAX_PHOTOS))
        else:
            await hold_draft_photo(db, message, ctx)
    raw = message_text(message)
    data = await state.get_data()
    if user_text.visible(raw):
        try:
            data = await state.update_data(note=care.clean_note(raw))
        except DomainError as err:
            if (tx := await open_tx(db, ctx, message)) is not None:
                await refuse(message, tx, err)
            return
    if not data.get("note"):
        if message.photo:
            if message.media_group_id is None:
                await message.answer(ctx.texts.label("care_photo_first"))
            return
        await message.reply(ctx.texts.label("ask_text_again"))
        return
    if message.media_group_id is not None and not user_text.visible(raw):
        return  # further parts of an album: the preview came with the captioned part
    await message.answer(await _preview(message, db, ctx, data),
                         reply_markup=_preview_markup(ctx, bool(data.get("need"))))


@router.callback_query(VisitFlow.note, F.data == "cv:n")
async def need_toggled(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                       ctx: Ctx) -> None:
    data = await state.get_data()
    if not data.get("note") or not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("err_care_note_empty"), show_alert=True)
        return
    data = await state.update_data(need=not data.get("need"))
    await query.answer()
    with contextlib.suppress(TelegramBadRequest):
        await query.message.edit_text(await _preview(query.message, db, ctx, data),
                                      reply_markup=_preview_markup(ctx, bool(data["need"])))


@router.callback_query(VisitFlow.note, F.data == "cv:ok")
async def submit(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                 actor: Actor) -> None:
    data = await state.get_data()
    message = query.message
    if not data.get("note") or not isinstance(message, Message):
        await query.answer(ctx.texts.plain("err_care_note_empty"), show_alert=True)
        return
    await state.clear()  # a second 提交 finds no flow
    photos = await take_draft_photos(db, message.chat.id)
    await drop_buttons(query)
    if (tx := await open_tx(db, ctx, query)) is None:
        return
    try:
        done = await care.record_visit(
            tx, actor, int(data["household_id"]), str(data["note"]), photos,
            lat=data.get("lat"), lon=data.get("lon"), need_found=bool(data.get("need")))
    except DomainError as err:
        await db.rollback()
        await take_draft_photos(db, message.chat.id)
        await db.commit()
        await refuse(query, tx, err)
        return
    await query.answer()
    await message.answer(tx.texts.label(
        "done_care", place=data.get("place", ""), case_id=done.case_id or 0,
        before=tx.texts.local_time(done.household.next_due_at, "%Y-%m-%d")))


@router.callback_query(F.data == "cv:no")
async def cancel(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    if await state.get_state() == VisitFlow.note.state:
        await state.clear()
        if isinstance(query.message, Message):
            await take_draft_photos(db, query.message.chat.id)
            await db.commit()
    await drop_buttons(query)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data.startswith("cv:"))
async def stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
