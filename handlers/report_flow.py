"""The guided report in a private chat: building, category, description, photos, location,
confirm. `/cancel` leaves it at any step; the draft lives in the FSM storage (database).
"""

from __future__ import annotations

from typing import Any

from aiogram import F
from aiogram.filters import Command, CommandObject, CommandStart, StateFilter
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
from bot.cases import duplicates, voice
from bot.cases import lifecycle as cases
from bot.cases.albums import count_draft_photos, take_draft_photos
from bot.cases.intake import (
    active_categories,
    building_label,
    buildings_page,
    ensure_person,
    link_building,
)
from bot.cases.notify import category_name
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org import door_links, geo, hints
from bot.org.directory import directory
from bot.org.roles import Actor, place_by_id
from bot.texts import Texts
from handlers import menus
from handlers.common import (
    RouterSpec,
    hold_draft_photo,
    message_text,
    open_tx,
    refuse,
    voice_of,
)
from handlers.middlewares import display_name
from storage.models import Person

router = RouterSpec("report_flow")
router.message.filter(F.chat.type == "private")
router.callback_query.filter(F.message.chat.type == "private")

PAGE_SIZE = 8
MAX_PHOTOS = 10


class ReportFlow(StatesGroup):
    building = State()
    category = State()
    description = State()
    photos = State()
    location = State()
    confirm = State()


def _ikb(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=text, callback_data=data) for text, data in row]
        for row in rows
    ])


async def _person(db: AsyncSession, tx: Tx, message: Message) -> Person:
    assert message.from_user is not None
    return await ensure_person(db, message.from_user.id, display_name(message.from_user), tx.now)


def _node_id(raw: str) -> int | None:
    """A building link (`/start b12`) and the building buttons carry a node id: read as any
    number a person types (user_text.typed_number: ASCII digits, or full-width ones; no more
    than an id can have)."""
    return user_text.typed_number(raw)


async def _gone(query: CallbackQuery, ctx: Ctx) -> bool:
    """Answer and return True when the button's message can no longer be seen or edited
    (an inline message, or one too old): the flow goes on from the message it last sent."""
    if isinstance(query.message, Message):
        return False
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
    return True


@router.message(CommandStart())
async def start(message: Message, command: CommandObject, state: FSMContext,
                db: AsyncSession, ctx: Ctx, actor: Actor) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    person = await _person(db, tx, message)
    payload = command.args or ""
    linked = None
    building_id = _node_id(payload[1:]) if payload.startswith("b") else None
    # A poster's door link (扫码报事, `d<key>`): the building whose key it is; a stale or
    # altered one starts the ordinary flow, after a line saying so.
    stale = ""
    if door_links.is_door_payload(payload):
        building_id = await door_links.building_of(db, payload)
        stale = "" if building_id is not None else f"{tx.texts.label('door_link_stale')}\n"
    if building_id is not None:
        linked = await link_building(db, person, building_id)
        await db.commit()
    if actor.is_staff and linked is None:
        await state.clear()
        await message.answer(stale + await menus.help_for(db, tx.texts, actor))
        return
    if not await _may_report(message, state, tx, person):
        return
    place = await building_label(db, linked) if linked else None
    await message.answer(stale + tx.texts.render("welcome_resident", place=place))
    await _begin(message, state, db, tx, person, None)


@router.message(Command("report"))
async def report(message: Message, command: CommandObject, state: FSMContext,
                 db: AsyncSession, ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    person = await _person(db, tx, message)
    if not await _may_report(message, state, tx, person):
        return
    description = user_text.clean_text(command.args)
    await _begin(message, state, db, tx, person,
                 description if user_text.visible(description) else None)


async def _may_report(message: Message, state: FSMContext, tx: Tx, person: Person) -> bool:
    """Refuse at once, not after six steps, someone who has just sent many reports."""
    try:
        await cases.check_report_quota(tx, person.id)
    except DomainError as err:
        await state.clear()
        await refuse(message, tx, err)
        return False
    return True


async def _begin(message: Message, state: FSMContext, db: AsyncSession, tx: Tx, person: Person,
                 description: str | None) -> None:
    await state.clear()
    await take_draft_photos(db, message.chat.id)
    await db.commit()
    await state.set_data({"description": description} if description else {})
    if person.building_id is None:
        await _ask_building(message, state, db, tx, 0, edit=False)
    else:
        await _ask_category(message, state, db, tx, description)


async def _ask_building(message: Message, state: FSMContext, db: AsyncSession, tx: Tx,
                        page: int, *, edit: bool, offer_location: bool = True) -> None:
    if not edit and offer_location and geo.router(await directory(db)).grids:
        # Grids with boundaries: a shared location finds the grid and its nearest building
        # (`building_located`). A reply keyboard needs a message of its own.
        await message.answer(tx.texts.label("ask_building_location"), reply_markup=(
            ReplyKeyboardMarkup(keyboard=[[KeyboardButton(
                text=tx.texts.plain("btn_send_location_building"), request_location=True)]],
                resize_keyboard=True, one_time_keyboard=True)))
    buildings, pages = await buildings_page(db, page, PAGE_SIZE)
    rows = [[(await building_label(db, b), f"rf:b:{b.id}")] for b in buildings]
    nav = []
    if page > 0:
        nav.append((tx.texts.plain("btn_prev"), f"rf:bp:{page - 1}"))
    if page + 1 < pages:
        nav.append((tx.texts.plain("btn_next_page"), f"rf:bp:{page + 1}"))
    if nav:
        rows.append(nav)
    text = tx.texts.label("ask_building")
    await state.set_state(ReportFlow.building)
    if edit:
        await message.edit_text(text, reply_markup=_ikb(rows))
    else:
        await message.answer(text, reply_markup=_ikb(rows))


async def _ask_category(message: Message, state: FSMContext, db: AsyncSession, tx: Tx,
                        described: str | None) -> None:
    # The description normally comes after this step; only `/report <text>` gives it before.
    # With it, the categories its words suggest come first; without, the registry's order.
    cats = hints.matching_first(described, await active_categories(db))
    names = [(c.name_zh if tx.texts.locale == "zh_CN" else c.name_en, f"rf:c:{c.code}")
             for c in cats]
    rows = [names[i:i + 2] for i in range(0, len(names), 2)]
    await state.set_state(ReportFlow.category)
    await message.answer(tx.texts.label("ask_category"), reply_markup=_ikb(rows))


@router.message(ReportFlow.building, F.location)
async def building_located(message: Message, state: FSMContext, db: AsyncSession,
                           ctx: Ctx) -> None:
    """A location shared instead of choosing a building: the grid whose boundary holds it
    proposes its nearest building (confirmed with the usual `rf:b:` button); outside every
    grid, the usual list. The location is kept for the case either way."""
    tx = await open_tx(db, ctx, message)
    if tx is None or message.location is None:
        return
    lon, lat = message.location.longitude, message.location.latitude
    await state.update_data(latitude=lat, longitude=lon)
    d = await directory(db)
    routes = geo.router(d)
    grid = routes.grid_at(lon, lat)
    if grid is None:
        await message.answer(tx.texts.label("location_outside"),
                             reply_markup=ReplyKeyboardRemove())
        await _ask_building(message, state, db, tx, 0, edit=False, offer_location=False)
        return
    other = [(tx.texts.plain("btn_other_building"), "rf:bp:0")]
    nearest = routes.nearest_building(grid, lon, lat)
    if nearest is not None:
        rows = [[("✅ " + await building_label(db, nearest), f"rf:b:{nearest.id}")], other]
        text = tx.texts.label("location_propose", place=grid.name)
    else:
        # No building of the grid has a point: the grid's buildings to choose from.
        in_grid = [b for b in d.buildings() if b.parent_id == grid.id][:PAGE_SIZE]
        rows = [*[[(await building_label(db, b), f"rf:b:{b.id}")] for b in in_grid], other]
        text = tx.texts.label("location_propose_no_building", place=grid.name)
    await message.answer(text, reply_markup=_ikb(rows))


@router.callback_query(ReportFlow.building, F.data.startswith("rf:bp:"))
async def building_page(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                        ctx: Ctx) -> None:
    if await _gone(query, ctx):
        return
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message) or query.data is None:
        return
    page = _node_id(query.data.removeprefix("rf:bp:"))
    await query.answer()
    await _ask_building(query.message, state, db, tx, page or 0, edit=True)


@router.callback_query(ReportFlow.building, F.data.startswith("rf:b:"))
async def building_chosen(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    if await _gone(query, ctx):
        return
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message) or query.data is None:
        return
    building_id = _node_id(query.data.removeprefix("rf:b:"))
    person = await ensure_person(db, query.from_user.id, display_name(query.from_user), tx.now)
    building = await link_building(db, person, building_id) if building_id else None
    if building is None:
        await query.answer(tx.texts.plain("err_no_building"), show_alert=True)
        return
    await db.commit()
    await query.answer()
    await query.message.edit_text(
        tx.texts.label("building_chosen", place=await building_label(db, building)))
    # The draft's description, if `/report <text>` gave one (one read, at this step only).
    described = (await state.get_data()).get("description")
    await _ask_category(query.message, state, db, tx, described)


@router.callback_query(ReportFlow.category, F.data.startswith("rf:c:"))
async def category_chosen(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                          ctx: Ctx) -> None:
    if await _gone(query, ctx):
        return
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message) or query.data is None:
        return
    code = query.data.removeprefix("rf:c:")
    if code not in {c.code for c in await active_categories(db)}:
        await query.answer(tx.texts.plain("err_bad_category"), show_alert=True)
        return
    data = await state.update_data(category=code)
    await query.answer()
    await query.message.edit_text(
        tx.texts.label("category_chosen", category=await category_name(tx, code)))
    if data.get("description"):
        await _ask_photos(query.message, state, tx.texts)
    else:
        await state.set_state(ReportFlow.description)
        await query.message.answer(tx.texts.label("ask_description_voice"))


@router.message(ReportFlow.description, F.voice | F.video_note)
async def voice_given(message: Message, state: FSMContext, ctx: Ctx) -> None:
    """A voice or video note stands for the description; a text may still follow it (at
    the photos step), and a caption on it is that text already."""
    got = voice_of(message)
    assert got is not None
    refused = voice.problem(got)
    if refused is not None:
        await message.answer(ctx.texts.label(f"err_{refused}", limit=voice.MAX_SECONDS // 60))
        return
    data: dict[str, Any] = {"voice": {"file_id": got.file_id, "kind": got.kind,
                                      "seconds": got.seconds}}
    caption = user_text.clean_text(message.caption)
    if user_text.visible(caption):
        data["description"] = caption
    await state.update_data(**data)
    await message.answer(ctx.texts.label("voice_received", kind=got.kind, count=got.seconds))
    await _ask_photos(message, state, ctx.texts)


def _draft_voice(data: dict[str, Any]) -> voice.Voice | None:
    raw = data.get("voice")
    if not isinstance(raw, dict):
        return None
    return voice.Voice(str(raw["file_id"]), str(raw["kind"]), int(raw["seconds"]))


@router.message(ReportFlow.description)
async def description_given(message: Message, state: FSMContext, ctx: Ctx) -> None:
    text = user_text.clean_text(message.text)
    if not user_text.visible(text):
        await message.answer(ctx.texts.label("ask_description_again_voice"))
        return
    await state.update_data(description=text)
    await _ask_photos(message, state, ctx.texts)


async def _ask_photos(message: Message, state: FSMContext, texts: Texts) -> None:
    await state.set_state(ReportFlow.photos)
    await message.answer(texts.label("ask_photos", limit=MAX_PHOTOS), reply_markup=_ikb(
        [[(texts.plain("btn_next"), "rf:next"), (texts.plain("btn_skip"), "rf:next")]]))


@router.message(ReportFlow.photos, F.photo)
async def photo_given(message: Message, db: AsyncSession, ctx: Ctx) -> None:
    if await count_draft_photos(db, message.chat.id) >= MAX_PHOTOS:
        await message.answer(ctx.texts.label("too_many_photos", limit=MAX_PHOTOS))
        return
    await hold_draft_photo(db, message, ctx)
    if message.media_group_id is None:
        count = await count_draft_photos(db, message.chat.id)
        await message.answer(ctx.texts.label("photo_received", count=count))


@router.message(ReportFlow.photos)
async def photos_other(message: Message, state: FSMContext, ctx: Ctx) -> None:
    # After a voice, the text typed next is its written description (the voice stays).
    text = user_text.clean_text(message.text)
    if message.text is not None and user_text.visible(text):
        data = await state.get_data()
        if _draft_voice(data) is not None and not data.get("description"):
            await state.update_data(description=text)
            await message.answer(ctx.texts.label("voice_text_added"))
            return
    await message.answer(ctx.texts.label("photos_hint"))


@router.callback_query(ReportFlow.photos, F.data == "rf:next")
async def photos_done(query: CallbackQuery, state: FSMContext, ctx: Ctx) -> None:
    if await _gone(query, ctx) or not isinstance(query.message, Message):
        return
    await query.answer()
    await query.message.edit_reply_markup(reply_markup=None)
    await state.set_state(ReportFlow.location)
    texts = ctx.texts
    keyboard = ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=texts.plain("btn_send_location"), request_location=True),
                   KeyboardButton(text=texts.plain("btn_skip"))]],
        resize_keyboard=True, one_time_keyboard=True,
    )
    await query.message.answer(texts.label("ask_location"), reply_markup=keyboard)


@router.message(ReportFlow.location, F.location)
async def location_given(message: Message, state: FSMContext, db: AsyncSession,
                         ctx: Ctx) -> None:
    assert message.location is not None
    await state.update_data(latitude=message.location.latitude,
                            longitude=message.location.longitude)
    await message.answer(ctx.texts.label("location_received"), reply_markup=ReplyKeyboardRemove())
    await _ask_confirm(message, state, db, ctx)


@router.message(ReportFlow.location)
async def location_other(message: Message, state: FSMContext, db: AsyncSession,
                         ctx: Ctx) -> None:
    if message_text(message).strip() == ctx.texts.plain("btn_skip"):
        # 跳过 keeps a location shared at the building step only where the bot placed it:
        # in the grid of the building chosen. One outside every grid, or in another grid,
        # is dropped (issue 20, defect 8): no 定位：已附, no map link or 📍 for staff.
        if not await _shared_at_building(message, state, db):
            await state.update_data(latitude=None, longitude=None)
        await message.answer(ctx.texts.label("location_skipped"),
                             reply_markup=ReplyKeyboardRemove())
        await _ask_confirm(message, state, db, ctx)
        return
    await message.answer(ctx.texts.label("location_hint"))


async def _shared_at_building(message: Message, state: FSMContext, db: AsyncSession) -> bool:
    """Whether the draft's location (shared at the building step) lies in the grid of the
    building the report is for."""
    data = await state.get_data()
    lat, lon = data.get("latitude"), data.get("longitude")
    if lat is None or lon is None or message.from_user is None:
        return False
    person = await db.get(Person, message.from_user.id)
    d = await directory(db)
    building = d.places.get(person.building_id) if person and person.building_id else None
    grid = geo.router(d).grid_at(float(lon), float(lat))
    return building is not None and grid is not None and building.parent_id == grid.id


async def _ask_confirm(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    data = await state.get_data()
    person = await _person(db, tx, message)
    building = await place_by_id(db, person.building_id)
    await state.set_state(ReportFlow.confirm)
    spoken = _draft_voice(data)
    text = tx.texts.render(
        "report_summary",
        place=await building_label(db, building) if building else "",
        category=await category_name(tx, data.get("category") or "other"),
        # A voice report's line (🎤 语音 0:42) leads, as on the staff card.
        description="\n".join(p for p in (
            voice.line(tx.texts, spoken) if spoken else "", data.get("description", "")) if p),
        photos=await count_draft_photos(db, message.chat.id),
        has_location=data.get("latitude") is not None,
    )
    await message.answer(text, reply_markup=_ikb(
        [[(tx.texts.plain("btn_submit"), "rf:ok"), (tx.texts.plain("btn_cancel"), "rf:no")]]))


@router.callback_query(ReportFlow.confirm, F.data == "rf:ok")
async def submit(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    if await _gone(query, ctx):
        return
    tx = await open_tx(db, ctx, query)
    if tx is None or not isinstance(query.message, Message):
        return
    if await state.get_state() != ReportFlow.confirm.state:
        # Pressed twice at once: the state the filter saw is gone, the first press took it.
        await query.answer(tx.texts.plain("flow_expired"), show_alert=True)
        return
    data: dict[str, Any] = await state.get_data()
    person = await ensure_person(db, query.from_user.id, display_name(query.from_user), tx.now)
    if person.building_id is None:
        await query.answer(tx.texts.plain("err_no_building"), show_alert=True)
        return
    photos = await take_draft_photos(db, query.message.chat.id)
    inp = cases.ReportInput(
        building_id=person.building_id, unit_id=person.unit_id, reporter_id=person.id,
        description=data.get("description", ""), category=data.get("category"),
        photos=photos, latitude=data.get("latitude"), longitude=data.get("longitude"),
        source_chat_id=query.message.chat.id, source_message_id=None,
        voice=_draft_voice(data),
    )
    # The draft ends in the transaction that makes the case: a second press waiting on the
    # draft's lock then finds no draft (and a refused report rolls back to the draft).
    await state.clear()
    try:
        await duplicates.submit(tx, inp)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await query.answer()
    await query.message.edit_reply_markup(reply_markup=None)


@router.callback_query(ReportFlow.confirm, F.data == "rf:no")
async def discard(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    await state.clear()
    if isinstance(query.message, Message):
        await take_draft_photos(db, query.message.chat.id)
        await db.commit()
        await query.message.edit_reply_markup(reply_markup=None)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data.startswith("rf:"))
async def flow_stale(query: CallbackQuery, ctx: Ctx) -> None:
    """A flow button from an earlier or finished draft."""
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)


@router.message(StateFilter(ReportFlow.building, ReportFlow.category, ReportFlow.confirm))
async def flow_other(message: Message, ctx: Ctx) -> None:
    await message.answer(ctx.texts.label("flow_use_buttons"))
