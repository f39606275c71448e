"""Small helpers shared by the routers: answering refusals, reading command arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiogram import Router
from aiogram.dispatcher.event.handler import CallbackType
from aiogram.exceptions import TelegramBadRequest
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot import user_text
from bot.cases.albums import count_draft_photos, hold_photo, take_draft_photos
from bot.cases.voice import Voice
from bot.context import Ctx, NotConfigured, Tx, begin
from bot.errors import DomainError
from storage.models import PendingPhoto

B = TypeVar("B")


async def open_tx(db: AsyncSession, ctx: Ctx, event: Message | CallbackQuery) -> Tx | None:
    """The domain transaction, or None after telling the person the bot is not set up yet."""
    try:
        return await begin(db, ctx)
    except NotConfigured:
        if isinstance(event, CallbackQuery):
            await event.answer(ctx.texts.plain("not_configured"), show_alert=True)
        else:
            await event.answer(ctx.texts.label("not_configured"))
        return None


async def button_tx(query: CallbackQuery, db: AsyncSession, ctx: Ctx,
                    unpack: Callable[[str], B | None]) -> tuple[B, Tx] | None:
    """The pressed button and the operation it starts; None once the person has been told
    why not (a button this bot never made, or no registry loaded yet)."""
    btn = unpack(query.data or "")
    if btn is None:
        await query.answer(ctx.texts.plain("err_bad_button"), show_alert=True)
        return None
    tx = await open_tx(db, ctx, query)
    if tx is None:
        return None
    return btn, tx


async def refuse(event: Message | CallbackQuery, tx: Tx, err: DomainError) -> None:
    text = err.explain(tx.texts)
    if isinstance(event, CallbackQuery):
        await event.answer(text.unescape(), show_alert=True)
    else:
        await event.reply(text)


def prompt_markup(message: Message) -> ForceReply | None:
    """In a group the answer must be a reply to the bot, or privacy mode hides it from us."""
    if message.chat.type == "private":
        return None
    return ForceReply(selective=True)


def message_text(message: Message) -> str:
    return message.text or message.caption or ""


class _Observer:
    """Collects handlers for one update type, as `Router.message` etc. would."""

    def __init__(self) -> None:
        self.handlers: list[tuple[CallbackType, tuple[Any, ...]]] = []
        self.filters: list[Any] = []

    def __call__(self, *filters: Any) -> Callable[[CallbackType], CallbackType]:
        def register(handler: CallbackType) -> CallbackType:
            self.handlers.append((handler, filters))
            return handler

        return register

    def filter(self, *filters: Any) -> None:
        self.filters.extend(filters)


class RouterSpec:
    """Handlers declared at import time and bound to a fresh Router for each Dispatcher.

    aiogram lets a Router belong to one parent only; building it per Dispatcher lets the tests
    (and the demo) run many bots in one process.
    """

    EVENTS = ("message", "callback_query", "my_chat_member")

    def __init__(self, name: str) -> None:
        self.name = name
        self.message = _Observer()
        self.callback_query = _Observer()
        self.my_chat_member = _Observer()

    def build(self) -> Router:
        router = Router(name=self.name)
        for event in self.EVENTS:
            spec: _Observer = getattr(self, event)
            observer = router.observers[event]
            if spec.filters:
                observer.filter(*spec.filters)
            for handler, filters in spec.handlers:
                observer.register(handler, *filters)
        return router


def submit_markup(ctx: Ctx, submit_label: str, prefix: str) -> InlineKeyboardMarkup:
    """提交 / 取消 under a preview: `<prefix>:ok` and `<prefix>:no`."""
    return InlineKeyboardMarkup(inline_keyboard=[[
        InlineKeyboardButton(text=ctx.texts.plain(submit_label), callback_data=f"{prefix}:ok"),
        InlineKeyboardButton(text=ctx.texts.plain("btn_cancel"), callback_data=f"{prefix}:no"),
    ]])


async def draft_with_photos(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx, *,
                            key: str, limit: int, photo_first: str, preview: str,
                            markup: InlineKeyboardMarkup) -> None:
    """One message of a prompt that takes text and, in a private chat, photos (a result, a
    failed check's reason, a department's note): the text is kept under `key` in the prompt's
    data, photos are held as drafts, and each time there is text a preview with 提交 / 取消
    is shown. A photo before any text asks for the text (`photo_first`)."""
    private = message.chat.type == "private"
    if message.photo and private and message.from_user is not None:
        await hold_draft_photo(db, message, ctx)
    text = user_text.clean_text(message_text(message), limit)
    data = await state.get_data()
    if user_text.visible(text):
        data = await state.update_data({key: text})
    if not data.get(key):
        if message.photo and private:
            if message.media_group_id is None:
                await message.answer(ctx.texts.label(photo_first))
            return
        await message.reply(ctx.texts.label("ask_text_again"), reply_markup=prompt_markup(message))
        return
    if message.media_group_id is not None and not user_text.visible(text):
        return  # further parts of an album; the preview came with the captioned part
    photos = await count_draft_photos(db, message.chat.id) if private else 0
    await message.answer(
        ctx.texts.render(preview, case_id=data.get("case_id"), photos=photos, private=private,
                         **{key: data[key]}),
        reply_markup=markup,
    )


async def submit_text(message: Message, state: FSMContext, db: AsyncSession, ctx: Ctx,
                      *, run: Callable[[Tx, dict[str, Any]], Awaitable[dict[str, object] | None]],
                      done: str) -> None:
    """A prompt's text answer acted on: the prompt is cleared first, so a second answer typed
    meanwhile finds none, then `run` (given the prompt's data) in an operation of its own; a
    refusal is told, else the `done` label, with the prompt's case id and what `run` returns."""
    data = await state.get_data()
    await state.clear()
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    try:
        extra = await run(tx, data) or {}
    except DomainError as err:
        await db.rollback()
        await refuse(message, tx, err)
        return
    await message.reply(tx.texts.label(done, case_id=int(data.get("case_id") or 0), **extra))


async def submit_draft(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx, *,
                       key: str, run: Callable[[Tx, dict[str, Any], list[str]], Awaitable[object]],
                       done: str) -> None:
    """提交 under the preview of a draft (`draft_with_photos`): the prompt is cleared first, so
    a second 提交 finds none; the draft photos are taken and `run` gets them in an operation of
    its own. A refusal is told, and the photos the rollback brought back as drafts are
    dropped: they must not join the person's next report."""
    data = await state.get_data()
    message = query.message
    if not isinstance(message, Message) or not data.get(key):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.clear()
    private = message.chat.type == "private"
    photos = await take_draft_photos(db, message.chat.id) if private else []
    await query.answer()
    with contextlib.suppress(TelegramBadRequest):
        await message.edit_reply_markup(reply_markup=None)
    tx = await open_tx(db, ctx, message)
    if tx is None:
        return
    try:
        await run(tx, data, photos)
    except DomainError as err:
        await db.rollback()
        if private:
            await take_draft_photos(db, message.chat.id)
            await db.commit()
        await refuse(message, tx, err)
        return
    await message.reply(tx.texts.label(done, case_id=int(data.get("case_id") or 0)))


async def hold_draft_photo(db: AsyncSession, message: Message, ctx: Ctx) -> None:
    """Keep a photo sent in a private conversation until the draft it belongs to is filed."""
    assert message.photo is not None and message.from_user is not None
    await hold_photo(db, PendingPhoto(
        chat_id=message.chat.id, message_id=message.message_id, user_id=message.from_user.id,
        media_group_id=message.media_group_id, file_id=message.photo[-1].file_id,
        caption=message.caption, received_at=ctx.clock.now(),
    ))


async def cancel_draft(query: CallbackQuery, state: FSMContext, db: AsyncSession, ctx: Ctx,
                       states: Iterable[str | None]) -> None:
    """取消 under a flow's preview: the flow (one of `states`) is cleared and its draft photos
    dropped; pressed after the flow ended, it says so."""
    if await state.get_state() not in set(states):
        await query.answer(ctx.texts.plain("flow_expired"), show_alert=True)
        return
    await state.clear()
    if isinstance(query.message, Message):
        await take_draft_photos(db, query.message.chat.id)
    await db.commit()
    await drop_buttons(query)
    await query.answer(ctx.texts.plain("cancelled"))


async def drop_buttons(query: CallbackQuery) -> None:
    """Take the buttons off the message a step was chosen on (too old to edit: left as is)."""
    if isinstance(query.message, Message):
        with contextlib.suppress(TelegramBadRequest):
            await query.message.edit_reply_markup(reply_markup=None)


def voice_of(message: Message) -> Voice | None:
    """The voice or video note a message carries, if any."""
    if message.voice is not None:
        return Voice(message.voice.file_id, "voice", int(message.voice.duration))
    if message.video_note is not None:
        return Voice(message.video_note.file_id, "video_note", int(message.video_note.duration))
    return None
