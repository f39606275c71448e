"""/task, /tasks and the task buttons (专项任务, bot/rounds/campaigns.py).

`/task` (private; community and street supervisors) asks for the title, then what to do
(text and photos), then the grids (`tf:g:<grid id>` toggles a grid, `tf:c:<community id>` a
whole community, `tf:a` the whole street, `tf:d` done), the deadline (`tf:t:<preset>`, or
typed as 12-10 18:00), whether a location is required (`tf:l:1|0`), and shows the task as
the grids will read it with 发布 (`tf:ok`) / 取消 (`tf:no`). The draft is the FSM data
(kept in the database); the photos are held as drafts until 发布.

On a grid's card: 完成 `tk:d:<part id>` (photos, a note, a location where asked, then 提交
`td:ok` / 取消 `td:no`), 无法完成 `tk:x:<part id>` (a reason); a reminder list's line
opens the card again (`tk:o:<part id>`). The sender's summary: 刷新 and 提醒未完成
(`ts:f|m:<campaign id>`), edited in place, and refreshed in place when a grid reports.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiogram import Bot, F
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import count_draft_photos, take_draft_photos
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.directory import directory
from bot.org.roles import Actor
from bot.rounds import campaigns
from bot.telegram.delivery import keyboard
from handlers.common import (
    RouterSpec,
    cancel_draft,
    drop_buttons,
    hold_draft_photo,
    message_text,
    open_tx,
    refuse,
)
from storage.models import Campaign, CampaignGrid

router = RouterSpec("campaigns")


class TaskFlow(StatesGroup):
    title = State()
    body = State()
    grids = State()
    deadline = State()
    location = State()
    preview = State()


class TaskReport(StatesGroup):
    evidence = State()
    reason = State()


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data)


def _markup(rows: list[list[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=rows)


@router.message(Command("task", "tasks"), F.chat.type != "private")
async def in_group(message: Message, ctx: Ctx) -> None:
    await message.reply(ctx.texts.label("task_in_private", link=ctx.deep_link("start")))


# --- /task: the sender's flow ---------------------------------------------------------------


@router.message(Command("task"))
async def start(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    if not campaigns.may_send(actor):
        await message.reply(tx.texts.label("err_task_not_sender"))
        return
    if not campaigns.grids_in(await directory(db), actor):
        await message.reply(tx.texts.label("err_task_no_grids"))
        return
    await take_draft_photos(db, message.chat.id)  # a draft abandoned earlier
    await db.commit()
    await state.set_state(TaskFlow.title)
    await state.set_data({})
    await message.answer(tx.texts.label("ask_task_title", limit=campaigns.TITLE_LIMIT))


@router.message(TaskFlow.title, ~F.text.startswith("/"))
async def title_given(message: Message, state: FSMContext, db: AsyncSession,
                      ctx: Ctx) -> None:
    try:
        title = campaigns.clean_title(message.text or "")
    except DomainError as err:
        await message.reply(err.explain(ctx.texts))
        return
    if not title:
        await message.reply(ctx.texts.label("ask_text_again"))
        return
    await state.update_data(title=title)
    await state.set_state(TaskFlow.body)
    await message.answer(ctx.texts.label("ask_task_body", limit=campaigns.BODY_LIMIT,
                                         photos=campaigns.MAX_PHOTOS))


async def _hold(message: Message, db: AsyncSession, ctx: Ctx) -> None:
    if await count_draft_photos(db, message.chat.id) >= campaigns.MAX_PHOTOS:
        if message.media_group_id is None or message.caption:
            await message.reply(ctx.texts.label("err_task_photos", limit=campaigns.MAX_PHOTOS))
        return
    await hold_draft_photo(db, message, ctx)
    await db.commit()


@router.message(TaskFlow.body, ~F.text.startswith("/"))
async def body_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                     actor: Actor) -> None:
    if message.photo and message.from_user is not None:
        await _hold(message, db, ctx)
    raw = message_text(message)
    if not user_text.visible(raw):
        if message.photo:
            if message.media_group_id is None:
                await message.answer(ctx.texts.label("task_photo_first"))
            return
        await message.reply(ctx.texts.label("ask_text_again"))
        return
    try:
        body = campaigns.clean_body(raw)
    except DomainError as err:
        await message.reply(err.explain(ctx.texts))
        return
    await state.update_data(body=body, grids=[])
    await state.set_state(TaskFlow.grids)
    text, markup = await _grids_view(db, ctx, actor, [])
    await message.answer(text, reply_markup=markup)


@router.message(StateFilter(TaskFlow.grids, TaskFlow.deadline, TaskFlow.location,
                            TaskFlow.preview), F.photo, F.media_group_id)
async def album_tail(message: Message, db: AsyncSession, ctx: Ctx) -> None:
    """The rest of an album whose captioned part moved the flow on."""
    await _hold(message, db, ctx)


async def _grids_view(db: AsyncSession, ctx: Ctx, actor: Actor,
                      chosen: list[int]) -> tuple[str, InlineKeyboardMarkup]:
    d = await directory(db)
    t = ctx.texts
    on = set(chosen)
    rows: list[list[InlineKeyboardButton]] = []
    if campaigns.streets(d, actor):
        every = {g.id for g in campaigns.grids_in(d, actor)}
        rows.append([_button(t.plain("btn_task_street", on=bool(every) and every <= on),
                             "tf:a")])
    for community, grids in campaigns.communities(d, actor):
        ids = {g.id for g in grids}
        rows.append([_button(t.plain("btn_task_community", place=community.name,
                                     on=bool(ids) and ids <= on), f"tf:c:{community.id}")])
        line = [_button(t.plain("btn_task_grid", place=g.name, on=g.id in on), f"tf:g:{g.id}")
                for g in grids]
        rows += [line[i:i + 2] for i in range(0, len(line), 2)]
    rows.append([_button(t.plain("btn_task_chosen", count=len(on)), "tf:d"),
                 _button(t.plain("btn_cancel"), "tf:no")])
    return str(t.label("ask_task_grids")), _markup(rows)


@router.callback_query(TaskFlow.grids, F.data.regexp(r"^tf:(a|[cg]:\d{1,10})$"))
async def grid_toggled(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    data = await state.get_data()
    chosen = {int(i) for i in data.get("grids") or []}
    d = await directory(db)
    value = query.data or ""
    if value == "tf:a":
        group = {g.id for g in campaigns.grids_in(d, actor)}
    elif value.startswith("tf:c:"):
        community = int(value[5:])
        group = {g.id for c, grids in campaigns.communities(d, actor) if c.id == community
                 for g in grids}
    else:
        group = {int(value[5:])} & {g.id for g in campaigns.grids_in(d, actor)}
    if not group:
        await query.answer(ctx.texts.plain("err_task_out_of_scope"), show_alert=True)
        return
    chosen = chosen - group if group <= chosen else chosen | group
    await state.update_data(grids=sorted(chosen))
    await query.answer()
    if isinstance(query.message, Message):
        text, markup = await _grids_view(db, ctx, actor, sorted(chosen))
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_text(text, reply_markup=markup)


@router.callback_query(TaskFlow.grids, F.data == "tf:d")
async def grids_done(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                     ctx: Ctx) -> None:
    data = await state.get_data()
    if not data.get("grids"):
        await query.answer(ctx.texts.plain("err_task_no_grids"), show_alert=True)
        return
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    await state.set_state(TaskFlow.deadline)
    await drop_buttons(query)
    await query.answer()
    t = tx.texts
    buttons = [_button(t.plain(f"btn_task_deadline_{c}"), f"tf:t:{c}")
               for c in campaigns.presets(tx.now, tx.policy.timezone)]
    if isinstance(query.message, Message):
        await query.message.answer(
            t.label("ask_task_deadline", count=len(data["grids"])),
            reply_markup=_markup([buttons[i:i + 2] for i in range(0, len(buttons), 2)]
                                 + [[_button(t.plain("btn_cancel"), "tf:no")]]))


async def _deadline_set(message: Message, state: FSMContext, ctx: Ctx, tx: Tx,
                        deadline_iso: str) -> None:
    await state.update_data(deadline=deadline_iso)
    await state.set_state(TaskFlow.location)
    t = tx.texts
    await message.answer(t.label("ask_task_location"), reply_markup=_markup([[
        _button(t.plain("btn_task_location_yes"), "tf:l:1"),
        _button(t.plain("btn_task_location_no"), "tf:l:0")]]))


@router.callback_query(TaskFlow.deadline, F.data.regexp(r"^tf:t:[tm37]$"))
async def deadline_picked(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message):
        return
    at = campaigns.preset_deadline((query.data or "")[5:], tx.now, tx.policy.timezone)
    if at <= tx.now:
        await query.answer(tx.texts.plain("err_task_deadline_past"), show_alert=True)
        return
    await drop_buttons(query)
    await query.answer()
    await _deadline_set(query.message, state, ctx, tx, at.isoformat())


@router.message(TaskFlow.deadline, ~F.text.startswith("/"))
async def deadline_typed(message: Message, state: FSMContext, db: AsyncSession,
                         ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    try:
        at = campaigns.parse_deadline(message_text(message), tx.now, tx.policy.timezone)
    except DomainError as err:
        await refuse(message, tx, err)
        return
    await _deadline_set(message, state, ctx, tx, at.isoformat())


def _draft(data: dict[str, Any]) -> campaigns.Draft | None:
    from datetime import datetime

    try:
        return campaigns.Draft(
            title=str(data["title"]), body=str(data["body"]),
            grid_ids=tuple(int(i) for i in data["grids"]),
            deadline_at=datetime.fromisoformat(str(data["deadline"])),
            needs_location=bool(data.get("location")))
    except (KeyError, TypeError, ValueError):
        return None


@router.callback_query(TaskFlow.location, F.data.regexp(r"^tf:l:[01]$"))
async def location_chosen(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    data = await state.update_data(location=(query.data or "").endswith("1"))
    draft = _draft(data)
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message):
        return
    if draft is None:
        await query.answer(tx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.set_state(TaskFlow.preview)
    await drop_buttons(query)
    await query.answer()
    d = await directory(db)
    shown = Campaign(id=0, title=draft.title, body=draft.body, photos=[],
                     sender_id=query.from_user.id, scope_node_id=0,
                     deadline_at=draft.deadline_at, needs_location=draft.needs_location)
    grids = [p.name for g in draft.grid_ids if (p := d.place(g)) is not None]
    t = tx.texts
    await query.message.answer(
        t.render("task_preview", task=campaigns.view(shown), task_grids=grids,
                 task_photos=await count_draft_photos(db, query.message.chat.id)),
        reply_markup=_markup([[_button(t.plain("btn_task_publish"), "tf:ok"),
                               _button(t.plain("btn_cancel"), "tf:no")]]))


@router.callback_query(TaskFlow.preview, F.data == "tf:ok")
async def publish(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                  actor: Actor) -> None:
    draft = _draft(await state.get_data())
    if draft is None or not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.clear()  # a second 发布 finds no flow
    photos = await take_draft_photos(db, query.message.chat.id)
    await drop_buttons(query)
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    try:
        campaign = await campaigns.publish(tx, actor, draft, photos)
    except DomainError as err:
        await db.rollback()
        await take_draft_photos(db, query.message.chat.id)
        await db.commit()
        await refuse(query, tx, err)
        return
    await query.answer(tx.texts.plain("done_task_published", count=len(draft.grid_ids)))
    text, buttons = await campaigns.summary(tx, campaign)
    sent = await query.message.answer(text, reply_markup=keyboard(buttons))
    await campaigns.set_summary(tx, campaign.id, sent.chat.id, sent.message_id)


@router.callback_query(F.data == "tf:no")
async def cancel(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                 ctx: Ctx) -> None:
    await cancel_draft(query, state, db, ctx, TaskFlow.__all_states_names__)


@router.callback_query(F.data.startswith("tf:"))
async def stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


# --- a grid's card: 完成, 无法完成 -------------------------------------------------------------


async def _refresh_summary(bot: Bot | None, tx: Tx, campaign: Campaign) -> None:
    """The sender's summary, edited in place (unchanged or gone: left as it is)."""
    if bot is None or campaign.summary_chat_id is None or campaign.summary_message_id is None:
        return
    text, buttons = await campaigns.summary(tx, campaign)
    with contextlib.suppress(TelegramAPIError):
        await bot.edit_message_text(text=text, chat_id=campaign.summary_chat_id,
                                    message_id=campaign.summary_message_id,
                                    reply_markup=keyboard(buttons))


def _part_id(query: CallbackQuery) -> int:
    return int((query.data or "")[5:])


@router.callback_query(F.data.regexp(r"^tk:[dxo]:\d{1,10}$"))
async def card_button(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                      actor: Actor) -> None:
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message):
        return
    try:
        campaign, part = await campaigns.part_of(tx, actor, _part_id(query))
    except DomainError as err:
        await refuse(query, tx, err)
        return
    action = (query.data or "")[3]
    t = tx.texts
    if action == "o" or query.message.chat.type != "private":
        # The card again, privately: a group is no place for photos and a note.
        text, buttons = await campaigns.card(tx, campaign, part, "new")
        if query.message.chat.type != "private":
            await query.answer(t.plain("task_open_private"), show_alert=True)
            if query.bot is not None:
                with contextlib.suppress(TelegramAPIError):
                    await query.bot.send_message(actor.id, text, reply_markup=keyboard(buttons))
            return
        await query.answer()
        await query.message.answer(text, reply_markup=keyboard(buttons))
        return
    await query.answer()
    if action == "x":
        await state.set_state(TaskReport.reason)
        await state.set_data({"part": part.id})
        await query.message.answer(t.label("ask_task_reason", id=campaign.id))
        return
    await take_draft_photos(db, query.message.chat.id)
    await db.commit()
    await state.set_state(TaskReport.evidence)
    await state.set_data({"part": part.id})
    markup = None
    if campaign.needs_location:
        markup = ReplyKeyboardMarkup(keyboard=[[KeyboardButton(
            text=t.plain("btn_send_location"), request_location=True)]],
            resize_keyboard=True, one_time_keyboard=True)
    await query.message.answer(
        t.label("ask_task_evidence", id=campaign.id, n=int(campaign.needs_location)),
        reply_markup=markup)


@router.message(TaskReport.evidence, ~F.text.startswith("/"))
async def evidence_given(message: Message, state: FSMContext, db: AsyncSession,
                         ctx: Ctx) -> None:
    """Photos, a note and a location, in any order; once all are in, the preview."""
    t = ctx.texts
    if message.photo and message.from_user is not None:
        await _hold(message, db, ctx)
    if message.location is not None:
        await state.update_data(lat=message.location.latitude, lon=message.location.longitude)
        await message.answer(t.label("location_received"), reply_markup=ReplyKeyboardRemove())
    raw = message_text(message)
    if user_text.visible(raw):
        try:
            await state.update_data(note=campaigns.clean_body(raw, campaigns.NOTE_LIMIT))
        except DomainError as err:
            await message.reply(err.explain(t))
            return
    elif message.media_group_id is not None:
        return  # further parts of an album
    data = await state.get_data()
    part = await db.get(CampaignGrid, int(data.get("part") or 0))
    campaign = await db.get(Campaign, part.campaign_id) if part is not None else None
    if campaign is None:
        await state.clear()
        await message.reply(t.label("flow_expired"))
        return
    photos = await count_draft_photos(db, message.chat.id)
    missing_location = campaign.needs_location and data.get("lat") is None
    if not photos or not data.get("note") or missing_location:
        await message.answer(t.label("task_evidence_missing", photos=photos,
                                     text=data.get("note") or "",
                                     n=int(missing_location)))
        return
    await message.answer(
        t.label("task_evidence_preview", id=campaign.id, photos=photos,
                text=str(data["note"]), n=int(campaign.needs_location)),
        reply_markup=_markup([[_button(t.plain("btn_submit"), "td:ok"),
                               _button(t.plain("btn_cancel"), "td:no")]]))


@router.callback_query(TaskReport.evidence, F.data == "td:ok")
async def evidence_submitted(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                             ctx: Ctx, actor: Actor) -> None:
    data = await state.get_data()
    if not isinstance(query.message, Message) or not data.get("part"):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.clear()  # a second 提交 finds no flow
    photos = await take_draft_photos(db, query.message.chat.id)
    await drop_buttons(query)
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    location = ((float(data["lat"]), float(data["lon"]))
                if data.get("lat") is not None else None)
    try:
        campaign = await campaigns.complete(tx, actor, int(data["part"]),
                                            str(data.get("note") or ""), photos, location)
    except DomainError as err:
        await db.rollback()  # the photos are drafts again
        if err.code.startswith("task_need_"):  # something missing: the flow goes on
            await state.set_state(TaskReport.evidence)
            await state.set_data(data)
        else:
            await take_draft_photos(db, query.message.chat.id)
            await db.commit()
        await refuse(query, tx, err)
        return
    await query.answer()
    await query.message.answer(tx.texts.label("done_task_completed", id=campaign.id))
    await _refresh_summary(query.bot, tx, campaign)


@router.message(TaskReport.reason, ~F.text.startswith("/"))
async def reason_given(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    data = await state.get_data()
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    if not user_text.visible(message_text(message)):
        await message.reply(tx.texts.label("ask_text_again"))
        return
    await state.clear()
    try:
        campaign = await campaigns.cannot(tx, actor, int(data.get("part") or 0),
                                          message_text(message))
    except DomainError as err:
        await db.rollback()
        await refuse(message, tx, err)
        return
    await message.reply(tx.texts.label("done_task_cannot", id=campaign.id))
    await _refresh_summary(message.bot, tx, campaign)


@router.callback_query(F.data == "td:no")
async def report_cancelled(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                           ctx: Ctx) -> None:
    await cancel_draft(query, state, db, ctx, TaskReport.__all_states_names__)


@router.callback_query(F.data.startswith("td:"))
async def report_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


# --- the sender's summary: 刷新, 提醒未完成 ---------------------------------------------------


@router.callback_query(F.data.regexp(r"^ts:p:\d{1,10}$"))
async def evidence_button(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                          actor: Actor) -> None:
    """📷 on the summary: that grid's photos and note, privately to the sender."""
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    try:
        await campaigns.send_evidence(tx, actor, int((query.data or "")[5:]))
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await query.answer()


@router.callback_query(F.data.regexp(r"^ts:[fm]:\d{1,10}$"))
async def summary_button(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    campaign_id = int((query.data or "")[5:])
    try:
        campaign = await campaigns.get_sent(tx, actor, campaign_id)
        if (query.data or "")[3] == "m":
            grids = await campaigns.remind(tx, actor, campaign.id)
            await query.answer(tx.texts.plain("done_task_reminded", count=grids),
                               show_alert=True)
        else:
            await query.answer(tx.texts.plain("done_task_refresh"))
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    text, buttons = await campaigns.summary(tx, campaign)
    if isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):  # unchanged since the last look
            await query.message.edit_text(text, reply_markup=keyboard(buttons))


@router.callback_query(F.data.regexp(r"^(tk|ts):"))
async def bad_button(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("err_bad_button"), show_alert=True)


# --- /tasks ---------------------------------------------------------------------------------


@router.message(Command("tasks"))
async def listed(message: Message, db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    if not campaigns.may_send(actor) and not actor.node_ids(*campaigns.STAFF_ROLES):
        await message.reply(tx.texts.label("err_task_not_staff_list"))
        return
    text, buttons = await campaigns.recent(tx, actor)
    await message.answer(text, reply_markup=keyboard(buttons))
