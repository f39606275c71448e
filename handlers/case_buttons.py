"""Case card buttons (verify, accept, assign, escalate, resolve, rate) and the short prompts
some of them open (a reason, a result, a comment).

Every press is checked against the case as it is now, by the domain: a button someone else
presses, or one the case has moved past, changes nothing and says why.
"""

from __future__ import annotations

import contextlib

from aiogram import F
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    Message,
    ReplyKeyboardRemove,
)
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.albums import take_draft_photos
from bot.cases.buttons import Action, CaseButton
from bot.cases.events import EventKind
from bot.cases.intake import active_categories
from bot.cases.lifecycle import Intent
from bot.context import Ctx, Tx
from bot.errors import DomainError
from bot.org.roles import Actor, lineage_of
from bot.telegram.delivery import keyboard
from bot.texts import Texts
from handlers.common import (
    RouterSpec,
    button_tx,
    draft_with_photos,
    message_text,
    open_tx,
    prompt_markup,
    refuse,
    submit_markup,
)
from storage.models import Case

router = RouterSpec("case_buttons")


class Prompt(StatesGroup):
    reject = State()
    escalate = State()
    send_back = State()
    resolve = State()
    rate_bad = State()


# Buttons that first ask for text: (domain action checked first, state, prompt label).
_ASKS: dict[Action, tuple[cases.Act, State, str]] = {
    Action.REJECT: (EventKind.REJECT, Prompt.reject, "ask_reject_reason"),
    Action.ESCALATE: (EventKind.ESCALATE, Prompt.escalate, "ask_escalate_reason"),
    Action.SEND_BACK: (EventKind.SEND_BACK, Prompt.send_back, "ask_send_back_reason"),
    Action.RESOLVE: (EventKind.RESOLVE, Prompt.resolve, "ask_result"),
}


# Answers to a prompt are text; a command typed meanwhile is left to its own handler.
NOT_COMMAND = ~F.text.startswith("/")


@router.message(Command("cancel"))
async def cancel(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx) -> None:
    """Leave whatever conversation is under way: a prompt here, or the guided report."""
    had = await state.get_state()
    await state.clear()
    if message.chat.type == "private":
        await take_draft_photos(db, message.chat.id)
        await db.commit()
    await message.reply(ctx.texts.label("cancelled" if had else "nothing_to_cancel"),
                        reply_markup=ReplyKeyboardRemove() if message.chat.type == "private"
                        else None)


async def refresh(query: CallbackQuery, tx: Tx, actor: Actor, case: Case) -> None:
    """Show the card's buttons as they are for this person now."""
    if not isinstance(query.message, Message):
        return
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    markup = keyboard(await notify.buttons_for(tx, actor, case, lin))
    # Unchanged, or too old to edit: the answer that follows still tells them.
    with contextlib.suppress(TelegramBadRequest):
        await query.message.edit_reply_markup(reply_markup=markup)


async def turn_page(query: CallbackQuery, tx: Tx, actor: Actor, btn: CaseButton) -> None:
    """更多 / ← 返回: the same message redrawn with the card's other page, as this person
    may use it now."""
    buttons = await notify.card_page_for(tx, actor, btn.case_id, btn.rev,
                                         more=btn.action == Action.MORE)
    if isinstance(query.message, Message):
        # Unchanged (pressed twice), or too old to edit: nothing more to show.
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(reply_markup=keyboard(buttons))
    await query.answer()


@router.callback_query(F.data.startswith("c1:"))
async def case_button(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                      actor: Actor) -> None:
    if (pressed := await button_tx(query, db, ctx, CaseButton.unpack)) is None:
        return
    btn, tx = pressed
    try:
        await _press(query, state, tx, actor, btn)
    except DomainError as err:
        await db.rollback()
        await refuse(query, tx, err)


async def _press(query: CallbackQuery, state: FSMContext, tx: Tx, actor: Actor,
                 btn: CaseButton) -> None:
    a, cid, rev = btn.action, btn.case_id, btn.rev
    if a in (Action.MORE, Action.BACK):
        await turn_page(query, tx, actor, btn)
        return
    asks = _ASKS.get(a) or ((Intent.RATE_BAD, Prompt.rate_bad, "ask_bad_comment")
                            if a == Action.RATE and btn.arg == "bad" else None)
    if asks is not None:
        action, st, label = asks
        await cases.check(tx, actor, cid, rev, action)
        await ask(query, state, st, tx.texts, tx.texts.label(label, case_id=cid),
                  case_id=btn.case_id, rev=btn.rev, arg=btn.arg)
        return
    if a == Action.CATEGORY:
        case = await cases.check(tx, actor, cid, rev, EventKind.CATEGORY)
        cats = await active_categories(tx.db)
        if isinstance(query.message, Message):
            await query.message.edit_reply_markup(
                reply_markup=keyboard(notify.category_buttons(tx, case, cats)))
        await query.answer(tx.texts.plain("ask_new_category"))
        return
    if a == Action.SET_CATEGORY:
        # The answer says where the deadline stands (moved, kept, held or passed).
        refiled = await cases.set_category(tx, actor, cid, rev, btn.arg)
        await refresh(query, tx, actor, refiled.case)
        await query.answer(refiled.answer, show_alert=refiled.alert)
        return
    if a == Action.CONFIRM:
        case = await cases.confirm(tx, actor, cid, rev)
    elif a == Action.ACCEPT:
        case = await cases.accept(tx, actor, cid, rev)
    elif a == Action.ASSIGN:
        case = await cases.assign(tx, actor, cid, rev)
    elif a == Action.ACK:
        case = await cases.acknowledge_task(tx, actor, cid, rev)
    elif a == Action.DONE:
        case = await cases.task_done(tx, actor, cid, rev)
    elif a == Action.RATE:
        case = await cases.rate(tx, actor, cid, rev, btn.arg)
    else:  # pragma: no cover - every action is handled above
        raise DomainError("bad_button")
    await refresh(query, tx, actor, case)
    await query.answer(tx.texts.plain(f"done_{a.name.lower()}", case_id=cid), show_alert=False)


async def ask(query: CallbackQuery, state: FSMContext, st: State, texts: Texts, text: str,
              **data: object) -> None:
    """Open a prompt: the state and what the answer needs (`case_id`, `rev` …), then the
    question under the card, naming whose prompt it is in a group."""
    message = query.message
    if not isinstance(message, Message):
        # No message to ask under (an inline or too old message): a prompt nobody sees would
        # take their next words as the answer. Press it on a fresh card.
        await query.answer(texts.plain("flow_expired"), show_alert=True)
        return
    await state.set_state(st)
    await state.set_data(data)
    await query.answer()
    if message.chat.type != "private":
        # Say whose prompt it is. Markup, so the name is escaped exactly once.
        name = user_text.clean_name(query.from_user.full_name) or str(query.from_user.id)
        text = Markup("{} {}").format(name, text)
    await message.answer(text, reply_markup=prompt_markup(message))


# --- the prompts -----------------------------------------------------------------------------


async def text_or_again(message: Message, ctx: Ctx) -> str | None:
    """The prompt's answer as clean text, or None after asking again for text."""
    text = user_text.clean_text(message_text(message), user_text.REASON_LIMIT)
    if not user_text.visible(text):
        await message.reply(ctx.texts.label("ask_text_again"), reply_markup=prompt_markup(message))
        return None
    return text


async def _finish(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx, actor: Actor,
                  action: cases.Act, text: str, photos: list[str] | None = None) -> None:
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    data = await state.get_data()
    cid, rev = int(data.get("case_id", 0)), int(data.get("rev", 0))
    done = f"done_{action}"
    try:
        if action == EventKind.REJECT:
            await cases.reject(tx, actor, cid, rev, text)
        elif action == EventKind.ESCALATE:
            await cases.escalate(tx, actor, cid, rev, text)
        elif action == EventKind.SEND_BACK:
            await cases.send_back(tx, actor, cid, rev, text)
        elif action == EventKind.RESOLVE:
            case = await cases.resolve(tx, actor, cid, rev, text, photos)
            if case.status == cases.S.CHECKING:
                done = "done_resolve_check"  # the reporter hears nothing before the check
        elif action == Intent.RATE_BAD:
            await cases.rate(tx, actor, cid, rev, "bad", text)
    except DomainError as err:
        await db.rollback()
        await state.clear()
        await refuse(message, tx, err)
        return
    await state.clear()
    await message.reply(tx.texts.label(done, case_id=cid))


@router.message(Prompt.reject, NOT_COMMAND)
async def reject_reason(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                        actor: Actor) -> None:
    if (text := await text_or_again(message, ctx)) is not None:
        await _finish(message, state, db, ctx, actor, EventKind.REJECT, text)


@router.message(Prompt.escalate, NOT_COMMAND)
async def escalate_reason(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                          actor: Actor) -> None:
    if (text := await text_or_again(message, ctx)) is not None:
        await _finish(message, state, db, ctx, actor, EventKind.ESCALATE, text)


@router.message(Prompt.send_back, NOT_COMMAND)
async def send_back_reason(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                           actor: Actor) -> None:
    if (text := await text_or_again(message, ctx)) is not None:
        await _finish(message, state, db, ctx, actor, EventKind.SEND_BACK, text)


@router.message(Prompt.rate_bad, NOT_COMMAND)
async def bad_comment(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                      actor: Actor) -> None:
    if (text := await text_or_again(message, ctx)) is not None:
        await _finish(message, state, db, ctx, actor, Intent.RATE_BAD, text)


@router.message(Prompt.resolve, NOT_COMMAND)
async def result_given(message: Message, state: FSMContext, db: AsyncSession,
                       ctx: Ctx) -> None:
    """The result: text, and in a private chat photos too; submitted with a button."""
    await draft_with_photos(message, state, db, ctx, key="result", limit=user_text.TEXT_LIMIT,
                            photo_first="photo_now_result", preview="result_preview",
                            markup=submit_markup(ctx, "btn_submit_result", "pr"))

@router.callback_query(Prompt.resolve, F.data == "pr:ok")
async def result_submit(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                        actor: Actor) -> None:
    data = await state.get_data()
    if not isinstance(query.message, Message) or not data.get("result"):
        await query.answer(ctx.texts.plain("ask_result_first"), show_alert=True)
        return
    photos: list[str] = []
    if query.message.chat.type == "private":
        photos = await take_draft_photos(db, query.message.chat.id)
    await query.answer()
    await query.message.edit_reply_markup(reply_markup=None)
    await _finish(query.message, state, db, ctx, actor, EventKind.RESOLVE, data["result"], photos)


@router.callback_query(F.data == "pr:no")
async def result_cancel(query: CallbackQuery, state: FSMContext, db: AsyncSession,
                        ctx: Ctx) -> None:
    await state.clear()
    if isinstance(query.message, Message):
        if query.message.chat.type == "private":
            await take_draft_photos(db, query.message.chat.id)
            await db.commit()
        await query.message.edit_reply_markup(reply_markup=None)
    await query.answer(ctx.texts.plain("cancelled"))


@router.callback_query(F.data == "pr:ok")
async def result_stale(query: CallbackQuery, ctx: Ctx) -> None:
    await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
