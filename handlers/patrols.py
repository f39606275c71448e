"""巡查 in a private chat: /patrol (开始巡查, 发现问题, 结束巡查) and /patrols.

While a person has a patrol under way, what they send privately outside any other
conversation belongs to it: locations (a live location's updates arrive as edited messages),
photos and notes. 发现问题 opens a draft (text, photos before and after it, 提交 / 取消) that
files a case found on patrol in the building they are at, or one they choose. Anyone without
a patrol under way passes through this router untouched.
"""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import count_draft_photos, take_draft_photos
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.directory import directory
from bot.rounds import patrols
from handlers.common import (
    RouterSpec,
    _Observer,
    drop_buttons,
    hold_draft_photo,
    message_text,
    open_tx,
    refuse,
    submit_markup,
)
from storage.models import Patrol


class _Spec(RouterSpec):
    """This router also takes edited messages: a live location's updates."""

    EVENTS = (*RouterSpec.EVENTS, "edited_message")  # type: ignore[assignment]

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.edited_message = _Observer()


router = _Spec("patrols")
# Messages are taken in private chats only, but for /patrol and /patrols in a group, which get a
# pointer to the private chat.
PRIVATE = F.chat.type == "private"
router.edited_message.filter(PRIVATE)
router.callback_query.filter(F.message.chat.type == "private")

NOT_COMMAND = ~F.text.startswith("/")
NOTE_LIMIT = 1000
MAX_BUILDINGS = 30


class PatrolFlow(StatesGroup):
    found = State()  # 发现问题: the draft (text under `description`, photos held)
    building = State()  # the draft is complete; which building it is in


def _ikb(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=text, callback_data=data) for text, data in row]
        for row in rows
    ])


def _number(raw: str) -> int | None:
    return user_text.typed_number(raw)


async def _patrolling(event: Message, db: AsyncSession) -> dict[str, Any] | bool:
    """A filter: the sender's patrol under way, passed to the handler as `patrol`."""
    if event.from_user is None:
        return False
    patrol = await db.scalar(
        select(Patrol).where(Patrol.person_id == event.from_user.id, Patrol.ended_at.is_(None))
        .order_by(Patrol.started_at.desc(), Patrol.id.desc()).limit(1))
    return {"patrol": patrol} if patrol is not None else False


def _under_way_markup(tx: Tx, patrol: Patrol) -> InlineKeyboardMarkup:
    return _ikb([[(tx.texts.plain("btn_patrol_found"), f"pt:f:{patrol.id}"),
                  (tx.texts.plain("btn_patrol_end"), f"pt:e:{patrol.id}")]])


async def _show_under_way(message: Message, tx: Tx, patrol: Patrol) -> None:
    grid = (await directory(tx.db)).place(patrol.grid_id)
    await message.answer(
        tx.texts.label("patrol_under_way", place=grid.name if grid else "",
                       before=tx.texts.local_time(patrol.started_at, "%H:%M")),
        reply_markup=_under_way_markup(tx, patrol))


# --- /patrol and /patrols ------------------------------------------------------------------


@router.message(Command("patrol", "patrols"), ~PRIVATE)
async def in_group(message: Message, ctx: Ctx) -> None:
    await message.reply(ctx.texts.label("patrol_in_private", link=ctx.deep_link("start")))


@router.message(Command("patrol"), PRIVATE)
async def patrol_command(message: Message, state: FSMContext, db: AsyncSession,
                         ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None or message.from_user is None:
        return
    grids = patrols.patrol_grids(await directory(db), message.from_user.id)
    if not grids:
        await message.answer(tx.texts.label("err_patrol_not_staff"))
        return
    under_way = await patrols.active(tx, message.from_user.id)
    if under_way is not None:
        await _show_under_way(message, tx, under_way)
        return
    await state.clear()
    label = tx.texts.plain("btn_patrol_start")
    rows = [[(label if len(grids) == 1 else f"{label} · {g.name}", f"pt:s:{g.id}")]
            for g in grids]
    text = "patrol_start_prompt" if len(grids) == 1 else "patrol_choose_grid"
    await message.answer(tx.texts.label(text, place=grids[0].name), reply_markup=_ikb(rows))


@router.message(Command("patrols"), PRIVATE)
async def patrols_command(message: Message, db: AsyncSession, ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None or message.from_user is None:
        return
    lines = await patrols.recent(tx, message.from_user.id)
    if lines is None:
        await message.answer(tx.texts.label("err_patrol_no_list"))
        return
    await message.answer(patrols.list_text(tx, lines))


# --- buttons -------------------------------------------------------------------------------


async def _button(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                  prefix: str) -> tuple[Tx, int | None] | None:
    if not isinstance(query.message, Message) or query.data is None:
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return None
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return None
    return tx, _number(query.data.removeprefix(prefix))


@router.callback_query(F.data.startswith("pt:s:"))
async def start_pressed(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                        ctx: Ctx) -> None:
    got = await _button(query, db, ctx, "pt:s:")
    if got is None:
        return
    tx, grid_id = got
    assert isinstance(query.message, Message)
    try:
        patrol, new = await patrols.start(tx, query.from_user.id, grid_id or 0)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await query.answer()
    await drop_buttons(query)
    if not new:
        await _show_under_way(query.message, tx, patrol)
        return
    await state.clear()
    grid = (await directory(db)).place(patrol.grid_id)
    await query.message.answer(
        tx.texts.label("patrol_started", place=grid.name if grid else "",
                       before=tx.texts.local_time(patrol.started_at, "%H:%M")),
        reply_markup=_under_way_markup(tx, patrol))


async def _mine(query: CallbackQuery, tx: Tx, patrol_id: int | None) -> Patrol | None:
    """The person's patrol under way that the button names; None once told it is over."""
    patrol = await patrols.active(tx, query.from_user.id)
    if patrol is None or patrol.id != patrol_id:
        await query.answer(tx.texts.plain("err_patrol_ended"), show_alert=True)
        return None
    return patrol


async def _pressed_patrol(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                          prefix: str) -> tuple[Tx, Patrol] | None:
    """A button naming the presser's patrol under way (结束巡查, 发现问题): the operation and the
    patrol; None once they have been told why not."""
    got = await _button(query, db, ctx, prefix)
    if got is None:
        return None
    tx, patrol_id = got
    patrol = await _mine(query, tx, patrol_id)
    return None if patrol is None else (tx, patrol)


async def _drop_draft(state: FSMContext, db: AsyncSession, chat_id: int) -> None:
    """A 发现问题 draft whose patrol is over (ended meanwhile, by a press or the timeout)."""
    await state.clear()
    await take_draft_photos(db, chat_id)
    await db.commit()


@router.callback_query(F.data.startswith("pt:e:"))
async def end_pressed(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                      ctx: Ctx) -> None:
    if (pressed := await _pressed_patrol(query, db, ctx, "pt:e:")) is None:
        return
    tx, patrol = pressed
    assert isinstance(query.message, Message)
    # A 发现问题 draft not submitted ends with the patrol; its photos are dropped.
    if await state.get_state() in (PatrolFlow.found.state, PatrolFlow.building.state):
        await state.clear()
        await take_draft_photos(db, query.message.chat.id)
    summary = await patrols.end(tx, patrol)
    await query.answer()
    await drop_buttons(query)
    await query.message.answer(patrols.summary_text(tx, summary))


@router.callback_query(F.data.startswith("pt:f:"))
async def found_pressed(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                        ctx: Ctx) -> None:
    if (pressed := await _pressed_patrol(query, db, ctx, "pt:f:")) is None:
        return
    tx, patrol = pressed
    assert isinstance(query.message, Message)
    await take_draft_photos(db, query.message.chat.id)  # no photos of an earlier draft
    await db.commit()
    earlier = [i.id for i in await patrols.photos_before(tx, patrol)]
    await state.set_state(PatrolFlow.found)
    await state.set_data({"patrol_id": patrol.id, "earlier": earlier})
    await query.answer()
    await query.message.answer(tx.texts.label("patrol_found_prompt", photos=len(earlier)))


@router.callback_query(PatrolFlow.found, F.data == "pt:fd:ok")
async def found_submitted(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    got = await _button(query, db, ctx, "pt:fd:")
    if got is None:
        return
    tx, _ = got
    assert isinstance(query.message, Message)
    data = await state.get_data()
    patrol = await _mine(query, tx, data.get("patrol_id"))
    if patrol is None:
        await _drop_draft(state, tx.db, query.message.chat.id)
        return
    if not data.get("description"):
        await query.answer(tx.texts.plain("flow_expired"), show_alert=True)
        return
    await query.answer()
    await drop_buttons(query)
    building = await patrols.building_at(tx, patrol)
    if building is not None:
        await _file(query.message, state, tx, patrol, building.id)
        return
    # No point near a building of the grid: they say which.
    d = await directory(db)
    choices = patrols.grid_buildings(d, patrol.grid_id)[:MAX_BUILDINGS]
    names = [(b.name, f"pt:b:{b.id}") for b in choices]
    await state.set_state(PatrolFlow.building)
    await query.message.answer(tx.texts.label("patrol_ask_building"),
                               reply_markup=_ikb([names[i:i + 2]
                                                  for i in range(0, len(names), 2)]))


@router.callback_query(PatrolFlow.building, F.data.startswith("pt:b:"))
async def building_chosen(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    got = await _button(query, db, ctx, "pt:b:")
    if got is None:
        return
    tx, building_id = got
    assert isinstance(query.message, Message)
    patrol = await _mine(query, tx, (await state.get_data()).get("patrol_id"))
    if patrol is None:
        await _drop_draft(state, tx.db, query.message.chat.id)
        return
    await query.answer()
    await drop_buttons(query)
    await _file(query.message, state, tx, patrol, building_id or 0)


async def _file(message: Message, state: FSMContext, tx: Tx, patrol: Patrol,
                building_id: int) -> None:
    """The draft filed as a case found on the patrol; the draft ends with it."""
    data = await state.get_data()
    await state.clear()
    photos = await take_draft_photos(tx.db, message.chat.id)
    try:
        case = await patrols.report_found(tx, patrol, building_id,
                                          str(data.get("description") or ""), photos,
                                          tuple(data.get("earlier") or ()))
    except DomainError as err:
        await tx.db.rollback()
        await take_draft_photos(tx.db, message.chat.id)
        await tx.db.commit()
        await refuse(message, tx, err)
        return
    place = (await directory(tx.db)).place(case.building_id)
    await message.answer(tx.texts.label("patrol_found_done", case_id=case.id,
                                        place=place.name if place else ""),
                         reply_markup=_under_way_markup(tx, patrol))


@router.callback_query(F.data == "pt:fd:no")
async def found_cancelled(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    if await state.get_state() in (PatrolFlow.found.state, PatrolFlow.building.state):
        await state.clear()
    if isinstance(query.message, Message):
        await take_draft_photos(db, query.message.chat.id)
        await db.commit()
    await drop_buttons(query)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data.startswith("pt:"))
async def stale_button(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


# --- what is sent during a patrol -----------------------------------------------------------


async def _point(message: Message, db: AsyncSession, ctx: Ctx, patrol: Patrol, *,
                 edited: bool) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None or message.location is None:
        return
    loc = message.location
    live = edited or loc.live_period is not None
    new = await patrols.add_point(tx, patrol, loc.latitude, loc.longitude, live=live)
    if edited:
        return  # a live location's update: nothing to answer
    names = "、".join(b.name for b in new)
    await message.answer(tx.texts.label("patrol_live_started" if live else "patrol_point_added",
                                        count=len(new), text=names))


@router.edited_message(F.location, _patrolling)
async def live_update(message: Message, db: AsyncSession, ctx: Ctx, patrol: Patrol) -> None:
    await _point(message, db, ctx, patrol, edited=True)


@router.message(PRIVATE, StateFilter(None, PatrolFlow.found, PatrolFlow.building), F.location,
                _patrolling)
async def point_shared(message: Message, db: AsyncSession, ctx: Ctx, patrol: Patrol) -> None:
    await _point(message, db, ctx, patrol, edited=False)


@router.message(PRIVATE, PatrolFlow.found, NOT_COMMAND)
async def found_draft(message: Message, state: FSMContext, db: AsyncSession,
                      ctx: Ctx) -> None:
    """The draft's text and photos (as `draft_with_photos`); the preview counts the patrol's
    photos sent just before 发现问题 too. A draft whose patrol ended meanwhile is dropped."""
    tx = await open_tx(db, ctx, message)
    if tx is None or message.from_user is None:
        return
    data = await state.get_data()
    patrol = await patrols.active(tx, message.from_user.id)
    if patrol is None or patrol.id != data.get("patrol_id"):
        await _drop_draft(state, db, message.chat.id)
        await message.answer(tx.texts.label("err_patrol_ended"))
        return
    if message.photo and message.from_user is not None:
        await hold_draft_photo(db, message, ctx)
    text = user_text.clean_text(message_text(message), NOTE_LIMIT)
    data = await state.get_data()
    if user_text.visible(text):
        data = await state.update_data(description=text)
    if not data.get("description"):
        if message.photo:
            if message.media_group_id is None:
                await message.answer(ctx.texts.label("patrol_found_photo_first"))
            return
        await message.reply(ctx.texts.label("ask_text_again"))
        return
    if message.media_group_id is not None and not user_text.visible(text):
        return  # further parts of an album; the preview came with the captioned part
    photos = await count_draft_photos(db, message.chat.id) + len(data.get("earlier") or [])
    await message.answer(
        ctx.texts.render("patrol_found_preview", description=data["description"],
                         photos=photos, private=True),
        reply_markup=submit_markup(ctx, "btn_submit", "pt:fd"))


@router.message(PRIVATE, PatrolFlow.building, NOT_COMMAND)
async def building_other(message: Message, ctx: Ctx) -> None:
    await message.answer(ctx.texts.label("flow_use_buttons"))


@router.message(PRIVATE, StateFilter(None), F.photo, _patrolling)
async def photo_sent(message: Message, db: AsyncSession, ctx: Ctx, patrol: Patrol) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None or not message.photo:
        return
    caption = user_text.clean_text(message.caption, NOTE_LIMIT)
    await patrols.add_item(tx, patrol, file_id=message.photo[-1].file_id,
                           text=caption if user_text.visible(caption) else None)
    if message.media_group_id is None or message.caption:  # an album: once, its captioned part
        await message.answer(tx.texts.label("patrol_photo_added"))


@router.message(PRIVATE, StateFilter(None), F.text, NOT_COMMAND, _patrolling)
async def note_sent(message: Message, db: AsyncSession, ctx: Ctx, patrol: Patrol) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    text = user_text.clean_text(message_text(message), NOTE_LIMIT)
    if not user_text.visible(text):
        return
    await patrols.add_item(tx, patrol, text=text)
    await message.answer(tx.texts.label("patrol_note_added"),
                         reply_markup=_under_way_markup(tx, patrol))
