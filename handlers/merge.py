"""合并 and 拆分 on a handler's case card.

合并 (`c1:mg:…`) offers the grid's open cases the handler may take (`mt:<id>`), or takes a
number typed as the answer, then asks to confirm (`mc:ok` / `mc:x`). 拆分 (`c1:sp:…`) asks for
the second problem's category (`sx:c:<code>`), its text, and which photos go with it
(`sx:p:<index>` toggles), then 确认拆分 (`sx:ok`). Each step lives in the presser's FSM state,
so a colleague pressing the same buttons in a group is told it is not theirs to press.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases import merge, notify, voice
from bot.cases.buttons import Action, CaseButton
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.directory import directory
from bot.org.roles import Actor
from bot.texts import Texts
from handlers.case_buttons import NOT_COMMAND, ask, text_or_again
from handlers.common import RouterSpec, button_tx, drop_buttons, open_tx, prompt_markup, refuse
from storage.models import Case

router = RouterSpec("merge")

# A case number as people type it: 12, #12, ＃12, １２, 诉求12 (user_text.typed_number).
NUMBER_PREFIX = 4
PHOTOS_PER_ROW = 5


class MergeFlow(StatesGroup):
    target = State()
    confirm = State()


class SplitFlow(StatesGroup):
    category = State()
    text = State()
    photos = State()


def _button(text: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data)


def _summary(text: str, size: int = 14) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


@router.callback_query(F.data.regexp(r"^c1:(mg|sp):"))
async def merge_or_split(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                         actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    if not isinstance(query.message, Message):
        await query.answer(tx.texts.plain("flow_expired"), show_alert=True)
        return
    try:
        if btn.action == Action.MERGE:
            case, lin = await merge.check_merge(tx, actor, btn.case_id, btn.rev)
            found = await merge.choices(tx, actor, case, lin)
            rows = [[_button(await _choice(tx, c), f"mt:{c.id}")] for c in found]
            text = tx.texts.label("ask_merge_target", case_id=case.id, any=bool(found))
            next_state: State = MergeFlow.target
        else:
            case = await merge.check_split(tx, actor, btn.case_id, btn.rev)
            cats = (await directory(tx.db)).active_categories()
            names = [_button(c.name(tx.texts.locale), f"sx:c:{c.code}") for c in cats]
            rows = [names[i:i + 2] for i in range(0, len(names), 2)]
            text = tx.texts.label("ask_split_category", case_id=case.id)
            next_state = SplitFlow.category
    except DomainError as err:
        await tx.db.rollback()
        await refuse(query, tx, err)
        return
    prefix = "mt" if btn.action == Action.MERGE else "sx"
    rows.append([_button(tx.texts.plain("btn_cancel"), f"{prefix}:x")])
    await state.set_state(next_state)
    await state.set_data({"case_id": btn.case_id, "rev": btn.rev})
    await query.answer()
    await query.message.answer(text, reply_markup=InlineKeyboardMarkup(inline_keyboard=rows))


async def _choice(tx: Tx, case: Case) -> str:
    """A merge choice's label: #9 路灯｜3号楼门口路灯不亮."""
    category = await notify.category_name(tx, case.category)
    return f"#{case.id} {category}｜{_summary(voice.described(tx.texts, case))}"


# --- 合并 ------------------------------------------------------------------------------------


@router.callback_query(F.data.in_({"mt:x", "mc:x", "sx:x"}))
async def cancel(query: CallbackQuery, state: FSMContext, ctx: Ctx) -> None:
    if await state.get_state() not in (*MergeFlow.__all_states_names__,
                                       *SplitFlow.__all_states_names__):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.clear()
    await drop_buttons(query)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(MergeFlow.target, F.data.regexp(r"^mt:\d{1,10}$"))
async def target_picked(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                        actor: Actor) -> None:
    if not isinstance(query.message, Message):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    try:
        text = await _confirm_text(tx, actor, state, int((query.data or "")[3:]))
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await drop_buttons(query)
    await query.answer()
    await query.message.answer(text, reply_markup=_confirm_markup(tx.texts))


@router.message(MergeFlow.target, NOT_COMMAND)
async def target_typed(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       actor: Actor) -> None:
    into_id = user_text.typed_number(message.text, digits=10, prefix=NUMBER_PREFIX)
    if into_id is None:
        await message.reply(ctx.texts.label("ask_merge_number"),
                            reply_markup=prompt_markup(message))
        return
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    try:
        text = await _confirm_text(tx, actor, state, into_id)
    except DomainError as err:
        await db.rollback()
        await refuse(message, tx, err)  # the prompt stays: another number may be typed
        return
    await message.reply(text, reply_markup=_confirm_markup(tx.texts))


async def _confirm_text(tx: Tx, actor: Actor, state: FSMContext, into_id: int) -> str:
    """The question 将 #12 合并到 #9？ once the target is known to be allowed; the flow
    moves on to the confirmation."""
    data = await state.get_data()
    case, _ = await merge.check_merge(tx, actor, int(data.get("case_id") or 0),
                                      int(data.get("rev") or 0))
    main, _ = await merge.check_target(tx, actor, case, into_id)
    await state.set_state(MergeFlow.confirm)
    await state.update_data(into=main.id)
    return tx.texts.label("merge_confirm", case_id=case.id, main_id=main.id,
                          category=await notify.category_name(tx, main.category),
                          description=_summary(voice.described(tx.texts, main), 60))


def _confirm_markup(texts: Texts) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        _button(texts.plain("btn_merge_confirm"), "mc:ok"),
        _button(texts.plain("btn_cancel"), "mc:x")]])


async def _confirmed(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                     run: Callable[[Tx, dict[str, Any]], Awaitable[dict[str, object]]],
                     done: str) -> None:
    """确认 of a flow: the flow ends first (a second press finds none), then `run` acts on its
    data; a refusal is told, else the `done` label with the case id and what `run` returns."""
    data = await state.get_data()
    await state.clear()
    await drop_buttons(query)
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return
    try:
        extra = await run(tx, data)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)
        return
    await query.answer()
    if isinstance(query.message, Message):
        await query.message.answer(tx.texts.label(done, case_id=int(data.get("case_id") or 0),
                                                  **extra))


@router.callback_query(MergeFlow.confirm, F.data == "mc:ok")
async def merge_confirmed(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                          actor: Actor) -> None:
    async def run(tx: Tx, data: dict[str, Any]) -> dict[str, object]:
        kept = await merge.merge(tx, actor, int(data.get("case_id") or 0),
                                 int(data.get("rev") or 0), int(data.get("into") or 0))
        return {"main_id": kept.main.id, **merge.kept_context(tx, kept)}

    await _confirmed(query, state, db, ctx, run, "done_merge")


# --- 拆分 ------------------------------------------------------------------------------------


@router.callback_query(SplitFlow.category, F.data.startswith("sx:c:"))
async def split_category(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                         ctx: Ctx) -> None:
    code = (query.data or "")[5:]
    cat = (await directory(db)).categories.get(code)
    if cat is None or not cat.active:
        await query.answer(ctx.texts.plain("err_bad_category"), show_alert=True)
        return
    data = await state.get_data()
    await drop_buttons(query)
    await ask(query, state, SplitFlow.text, ctx.texts,
              ctx.texts.label("ask_split_text", case_id=data.get("case_id"),
                              category=cat.name(ctx.texts.locale)),
              case_id=data.get("case_id"), rev=data.get("rev"), category=code)


@router.message(SplitFlow.text, NOT_COMMAND)
async def split_text(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    text = await text_or_again(message, ctx)
    if text is None:
        return
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    data = await state.get_data()
    case = await tx.db.get(Case, int(data.get("case_id") or 0))
    photos = len(await notify.photos_of(tx, case)) if case is not None else 0
    await state.set_state(SplitFlow.photos)
    await state.update_data(text=text, photos=photos, chosen=[])
    await message.reply(await _split_preview(tx, {**data, "text": text}, photos),
                        reply_markup=_photo_markup(ctx.texts, photos, []))


async def _split_preview(tx: Tx, data: dict[str, Any], photos: int) -> str:
    return tx.texts.label("split_preview", case_id=data.get("case_id"),
                          category=await notify.category_name(tx, str(data.get("category"))),
                          text=data.get("text") or "", photos=photos)


def _photo_markup(texts: Texts, photos: int, chosen: list[int]) -> InlineKeyboardMarkup:
    toggles = [_button(texts.plain("btn_split_photo", n=i + 1, on=i in chosen), f"sx:p:{i}")
               for i in range(photos)]
    rows = [toggles[i:i + PHOTOS_PER_ROW] for i in range(0, len(toggles), PHOTOS_PER_ROW)]
    rows.append([_button(texts.plain("btn_split_confirm"), "sx:ok"),
                 _button(texts.plain("btn_cancel"), "sx:x")])
    return InlineKeyboardMarkup(inline_keyboard=rows)


@router.callback_query(SplitFlow.photos, F.data.regexp(r"^sx:p:\d{1,2}$"))
async def split_photo(query: CallbackQuery, state: FSMContext, ctx: Ctx) -> None:
    data = await state.get_data()
    index, photos = int((query.data or "")[5:]), int(data.get("photos") or 0)
    chosen = [int(i) for i in data.get("chosen") or []]
    if index < photos:
        chosen = sorted(set(chosen) ^ {index})
        await state.update_data(chosen=chosen)
    await query.answer()
    if isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(
                reply_markup=_photo_markup(ctx.texts, photos, chosen))


@router.callback_query(SplitFlow.photos, F.data == "sx:ok")
async def split_confirmed(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                          actor: Actor) -> None:
    async def run(tx: Tx, data: dict[str, Any]) -> dict[str, object]:
        new = await merge.split(tx, actor, int(data.get("case_id") or 0),
                                int(data.get("rev") or 0), str(data.get("category") or ""),
                                str(data.get("text") or ""),
                                [int(i) for i in data.get("chosen") or []])
        return {"new_id": new.id}

    await _confirmed(query, state, db, ctx, run, "done_split")


@router.callback_query(F.data.regexp(r"^(mt|mc|sx):"))
async def stale(query: CallbackQuery, ctx: Ctx) -> None:
    """A step of a flow that is over, or someone else's."""
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
