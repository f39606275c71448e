"""/notice, /notices and the notice buttons.

`/notice` (private; grid leaders, community and street supervisors) asks for the scope
(`nf:s:<node id>`, or 选择楼栋: `nf:t:<building id>` toggles, `nf:p:<page>`, `nf:d` done),
then the text and up to ten photos, then shows the notice as the groups will read it with
the number of chats, 发送 (`nf:ok`) / 取消 (`nf:no`). The draft is a `notices` row, the step
the FSM state. In the groups, 已阅 is `n1:<copy id>:r`; the sender's summary has 刷新 and
提醒未确认 (`n2:<notice id>:f|m`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import count_draft_photos, take_draft_photos
from bot.cases.buttons import NoticeAnswer, NoticeButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.notices import service as notices
from bot.org.directory import directory
from bot.org.roles import Actor
from bot.telegram.delivery import keyboard
from handlers.common import (
    RouterSpec,
    button_tx,
    drop_buttons,
    hold_draft_photo,
    message_text,
    open_tx,
    refuse,
)
from storage.models import Notice

router = RouterSpec("notices")
PAGE = 8


class NoticeFlow(StatesGroup):
    scope = State()
    buildings = State()
    text = State()


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data)


@router.message(Command("notice", "notices"), F.chat.type != "private")
async def in_group(message: Message, ctx: Ctx) -> None:
    await message.reply(ctx.texts.label("notice_in_private", link=ctx.deep_link("start")))


async def _sender_tx(message: Message, db: AsyncSession, ctx: Ctx, actor: Actor) -> Tx | None:
    """The operation of a /notice or /notices, or None once a non-sender has been told."""
    tx = await open_tx(db, ctx, message)
    if tx is not None and not notices.may_send(actor):
        await message.reply(tx.texts.label("err_notice_not_sender"))
        return None
    return tx


@router.message(Command("notice"))
async def start(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                actor: Actor) -> None:
    if (tx := await _sender_tx(message, db, ctx, actor)) is None:
        return
    await take_draft_photos(db, message.chat.id)  # a draft abandoned earlier
    d = await directory(db)
    rows = [[_button(p.name, f"nf:s:{p.id}")] for p in notices.scopes(d, actor)]
    rows.append([_button(tx.texts.plain("btn_notice_buildings"), "nf:b")])
    rows.append([_button(tx.texts.plain("btn_cancel"), "nf:no")])
    await state.set_state(NoticeFlow.scope)
    await state.set_data({})
    await message.answer(tx.texts.label("ask_notice_scope"),
                         reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))


async def _drafted(query: CallbackQuery, state: FSMContext, tx: Tx, actor: Actor, kind: str,
                   codes: list[str]) -> None:
    try:
        notice = await notices.create(tx, actor, kind, codes)
    except DomainError as err:
        await tx.db.rollback()
        await refuse(query, tx, err)
        return
    chats = len(await notices.reach(tx, notice))
    await state.set_state(NoticeFlow.text)
    await state.set_data({"notice_id": notice.id})
    await drop_buttons(query)
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.answer(tx.texts.label(
            "ask_notice_text", chats=chats, limit=notices.TEXT_LIMIT,
            photos=notices.MAX_PHOTOS))


@router.callback_query(NoticeFlow.scope, F.data.regexp(r"^nf:s:\d{1,10}$"))
async def scope_picked(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    place = (await directory(db)).place(int((query.data or "")[5:]))
    if place is None:
        await query.answer(tx.texts.plain("err_notice_out_of_scope"), show_alert=True)
        return
    await _drafted(query, state, tx, actor, place.kind, [place.code])


@router.callback_query(NoticeFlow.scope, F.data == "nf:b")
async def choose_buildings(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                           actor: Actor) -> None:
    await state.set_state(NoticeFlow.buildings)
    await state.set_data({"chosen": [], "page": 0})
    await _show_buildings(query, db, ctx, actor, [], 0)


async def _show_buildings(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor,
                          chosen: list[int], page: int) -> None:
    d = await directory(db)
    found = notices.buildings_of(d, actor)
    pages = max(1, (len(found) + PAGE - 1) // PAGE)
    page = min(max(page, 0), pages - 1)
    t = ctx.texts
    rows = [[_button(t.plain("btn_notice_building", name=b.name, on=b.id in chosen),
                     f"nf:t:{b.id}")] for b in found[page * PAGE:(page + 1) * PAGE]]
    nav = []
    if page > 0:
        nav.append(_button("◀", f"nf:p:{page - 1}"))
    if page < pages - 1:
        nav.append(_button("▶", f"nf:p:{page + 1}"))
    if nav:
        rows.append(nav)
    rows.append([_button(t.plain("btn_notice_chosen", count=len(chosen)), "nf:d"),
                 _button(t.plain("btn_cancel"), "nf:no")])
    markup = InlineKeyboardMarkup(inline_keyboard=rows)
    await query.answer()
    if isinstance(query.message, Message):
        text = t.label("ask_notice_buildings", page=page + 1, pages=pages)
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_text(text, reply_markup=markup)


@router.callback_query(NoticeFlow.buildings, F.data.regexp(r"^nf:[tp]:\d{1,10}$"))
async def building_toggled(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                           actor: Actor) -> None:
    data = await state.get_data()
    chosen = [int(i) for i in data.get("chosen") or []]
    page = int(data.get("page") or 0)
    value = int((query.data or "")[5:])
    if (query.data or "").startswith("nf:t:"):
        chosen = sorted(set(chosen) ^ {value})
    else:
        page = value
    await state.update_data(chosen=chosen, page=page)
    await _show_buildings(query, db, ctx, actor, chosen, page)


@router.callback_query(NoticeFlow.buildings, F.data == "nf:d")
async def buildings_done(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    data = await state.get_data()
    d = await directory(db)
    codes = [p.code for i in data.get("chosen") or [] if (p := d.place(int(i))) is not None]
    if not codes:
        await query.answer(tx.texts.plain("err_notice_no_buildings"), show_alert=True)
        return
    await _drafted(query, state, tx, actor, "buildings", codes)


@router.message(NoticeFlow.text, ~F.text.startswith("/"))
async def text_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    """The text, and photos (albums too); each time there is text, the preview."""
    if message.photo and message.from_user is not None:
        if await count_draft_photos(db, message.chat.id) >= notices.MAX_PHOTOS:
            if message.media_group_id is None or message.caption:
                await message.reply(ctx.texts.label("err_notice_photos",
                                                    limit=notices.MAX_PHOTOS))
            return
        await hold_draft_photo(db, message, ctx)
    raw = message_text(message)
    data = await state.get_data()
    if user_text.visible(raw):
        try:
            data = await state.update_data(text=notices.clean(raw))
        except DomainError as err:
            tx = await open_tx(db, ctx, message)
            if tx is not None:
                await refuse(message, tx, err)
            return
    if not data.get("text"):
        if message.photo:
            if message.media_group_id is None:
                await message.answer(ctx.texts.label("notice_photo_first"))
            return
        await message.reply(ctx.texts.label("ask_text_again"))
        return
    if message.media_group_id is not None and not user_text.visible(raw):
        return  # further parts of an album: the preview came with the captioned part
    await _preview(message, db, ctx, data)


async def _preview(message: Message, db: AsyncSession, ctx: Ctx, data: dict[str, Any]) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    draft = await db.get(Notice, int(data.get("notice_id") or 0))
    if draft is None:
        await message.reply(tx.texts.label("flow_expired"))
        return
    # What 发送 would send, not written to the draft: the text stays in the flow until then.
    shown = Notice(sender_id=draft.sender_id, scope_kind=draft.scope_kind, scope=draft.scope,
                   text=str(data.get("text") or ""))
    body = Markup(notices.message(tx, shown, await notices.sender_line(tx, shown)))
    photos = min(await count_draft_photos(db, message.chat.id), notices.MAX_PHOTOS)
    places = await notices.reach(tx, shown)
    d = await directory(db)
    nobody, more = notices.named(d, notices.nobody_to_confirm(d, places))
    await message.answer(
        tx.texts.render("notice_preview", body=body, photos=photos, chats=len(places),
                        nobody=nobody, nobody_more=more),
        reply_markup=InlineKeyboardMarkup(inline_keyboard=[[
            _button(tx.texts.plain("btn_notice_send"), "nf:ok"),
            _button(tx.texts.plain("btn_cancel"), "nf:no")]]))


@router.callback_query(NoticeFlow.text, F.data == "nf:ok")
async def send(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
               actor: Actor) -> None:
    data = await state.get_data()
    if not data.get("text") or not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.clear()  # a second 发送 finds no flow
    photos = await take_draft_photos(db, query.message.chat.id)
    await drop_buttons(query)
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    try:
        notice, chats = await notices.send(tx, actor, int(data.get("notice_id") or 0),
                                           str(data["text"]), photos)
    except DomainError as err:
        await db.rollback()
        await take_draft_photos(db, query.message.chat.id)
        await db.commit()
        await refuse(query, tx, err)
        return
    await query.answer(tx.texts.plain("done_notice", chats=chats))
    text, buttons = await notices.summary(tx, notice)
    await query.message.answer(text, reply_markup=keyboard(buttons))


@router.callback_query(F.data == "nf:no")
async def cancel(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                 actor: Actor) -> None:
    if await state.get_state() not in NoticeFlow.__all_states_names__:
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    data = await state.get_data()
    await state.clear()
    if isinstance(query.message, Message):
        await take_draft_photos(db, query.message.chat.id)
    tx = await open_tx(db, ctx, query)
    if tx is not None and data.get("notice_id"):
        await notices.cancel(tx, actor, int(data["notice_id"]))
    await db.commit()
    await drop_buttons(query)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data.startswith("nf:"))
async def stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


# --- 已阅, 刷新, 提醒未确认 ---------------------------------------------------------------------


@router.callback_query(F.data.regexp(r"^n[12]:"))
async def notice_button(query: CallbackQuery, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, NoticeButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        if btn.answer == NoticeAnswer.READ:
            done = await notices.confirm(tx, actor, btn.row_id)
            await query.answer(tx.texts.plain("done_notice_read", confirmed=done.confirmed,
                                              total=done.total))
            if isinstance(query.message, Message):
                mark = [[{"text": tx.texts.plain("btn_notice_read_by", name=actor.name),
                          "callback_data": btn.pack()}]]
                with contextlib.suppress(TelegramBadRequest):
                    await query.message.edit_reply_markup(reply_markup=keyboard(mark))
            return
        notice = await notices.get_sent(tx, actor, btn.row_id)
        if btn.answer == NoticeAnswer.REMIND:
            reminded = await notices.remind(tx, actor, notice.id)
            await query.answer(reminded.answer(tx.texts), show_alert=True)
        else:
            await query.answer(tx.texts.plain("done_notice_refresh"))
        text, buttons = await notices.summary(tx, notice)
        if isinstance(query.message, Message):
            with contextlib.suppress(TelegramBadRequest):  # unchanged since the last look
                await query.message.edit_text(text, reply_markup=keyboard(buttons))
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)


@router.message(Command("notices"))
async def listed(message: Message, command: CommandObject, db: AsyncSession, ctx: Ctx,
                 actor: Actor) -> None:
    if (tx := await _sender_tx(message, db, ctx, actor)) is None:
        return
    if not user_text.visible(command.args or ""):
        await message.answer(await notices.recent(tx, actor))
        return
    notice_id = user_text.typed_number(command.args)
    if notice_id is None:  # "²", "١", "abc": no number
        await message.reply(tx.texts.label("usage_notices"))
        return
    try:
        notice = await notices.get_sent(tx, actor, notice_id)
    except DomainError as err:
        await refuse(message, tx, err)
        return
    text, buttons = await notices.summary(tx, notice)
    await message.answer(text, reply_markup=keyboard(buttons))
