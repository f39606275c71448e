"""Every Bot API send goes through here: paced like the outbox, and never failing an update.

A session middleware sees each call the Bot makes. Sends made by the outbox sender are paced
by the sender itself and pass through. Sends a handler makes straight away (help, refusals,
prompts) take a slot from the same `Pacer`; if none is free soon, or the send fails in any way
(429, 5xx, an HTML page from a proxy, a dropped connection), the answer is written to the
outbox in the update's own transaction and delivered later, exactly once, in order, while the
handler goes on with a stand-in message. A stand-in's `message_id` is minus the outbox row's
id; the sender rewrites the references a handler kept to it once the real message exists.

An edit or a button's toast made while answering an update is contained the same way: if
Telegram refuses it (a query too old, a 429, a 5xx), it is left out and logged, and the
update stands as handled.

And for every send or edit, an answer `ok: true` that the client cannot read means Telegram
did it: the call returns a message built from the raw answer instead of raising.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramRetryAfter,
)
from aiogram.methods import Response, SendMessage, SendPhoto, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import (
    Chat,
    ForceReply,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.outbox import enqueue
from bot.telegram.ratelimit import Pacer
from storage.fsm import current_session
from storage.models import Outbox

log = logging.getLogger(__name__)

# Set by the outbox sender around its own calls: paced already, and its failures are its own.
OUTBOX_CALL: ContextVar[bool] = ContextVar("gridbot_outbox_call", default=False)
# A handler holds its transaction (on SQLite, the write lock) while it sends: it waits at most
# this long for a slot, else the answer is queued.
DIRECT_PAUSE = 0.25
# Sent outside any update (the apology after a failure): wait for a slot at most this long.
OTHER_PAUSE = 5.0
DIRECT_KIND = "direct"
NOT_SENDS = {"sendchataction"}


def is_send(method: TelegramMethod[Any]) -> bool:
    """Calls that post a message to a chat: what Telegram's sending limits count."""
    name = method.__api_method__.lower()
    return ((name.startswith("send") and name not in NOT_SENDS)
            or name in ("copymessage", "forwardmessage", "copymessages", "forwardmessages"))


def _posts_or_edits(method: TelegramMethod[Any]) -> bool:
    return is_send(method) or method.__api_method__.lower().startswith("edit")


def is_cosmetic(method: TelegramMethod[Any]) -> bool:
    """Calls that change what a person already sees (a card's buttons, a button's toast):
    when one is refused, the update it answers has still been handled."""
    name = method.__api_method__.lower()
    return name.startswith("edit") or name == "answercallbackquery"


def chat_of(method: TelegramMethod[Any]) -> int | None:
    chat = getattr(method, "chat_id", None)
    return chat if isinstance(chat, int) else None


def _stand_in(chat_id: int | None, raw: Any) -> Message:
    """A message the client could not (or did not yet) read, with what is known of it."""
    fields = raw if isinstance(raw, dict) else {}
    message_id = fields.get("message_id")
    chat = chat_id or 0
    return Message.model_construct(
        message_id=message_id if isinstance(message_id, int) else 0,
        date=datetime.now(UTC),
        chat=Chat.model_construct(id=chat, type="private" if chat > 0 else "supergroup"),
    )


def accepted(exc: ClientDecodeError) -> bool:
    """Telegram said `ok: true`: whatever the rest of the answer, it did what was asked."""
    return isinstance(exc.data, dict) and exc.data.get("ok") is True


def accepted_result(method: TelegramMethod[Any] | None, exc: ClientDecodeError) -> Any:
    """What an unreadable answer stands for if Telegram said `ok: true`; None if it did not.

    Only for sends and edits (`method` None: a send): their results are messages (or
    `true`), and the raw answer carries the ids we need. Anything else (an HTML page, a body
    that is no JSON, an unreadable list of updates) is None.
    """
    if not accepted(exc) or (method is not None and not _posts_or_edits(method)):
        return None
    raw = exc.data.get("result")
    chat = chat_of(method) if method is not None else None
    if isinstance(raw, list):
        return [_stand_in(chat, item) for item in raw] or [_stand_in(chat, None)]
    if raw is True:
        return True
    return _stand_in(chat, raw)


def message_id_of(result: Any) -> int | None:
    """The id of the message a send produced (the last one of an album); None if unknown."""
    if isinstance(result, list):
        result = result[-1] if result else None
    message_id = getattr(result, "message_id", None)
    return message_id if isinstance(message_id, int) and message_id > 0 else None


def describe(exc: BaseException) -> str:
    """One line for logs and `gridbot outbox`: never the content of the message or answer."""
    if isinstance(exc, ClientDecodeError):
        # Its `data` is the raw answer, which may quote what we sent.
        return f"unreadable answer: {exc.message}"
    if isinstance(exc, TelegramAPIError):
        return f"{type(exc).__name__}: {exc.message}"[:300]
    return type(exc).__name__


def reply_markup_of(markup: dict[str, Any] | None) -> ReplyKeyboardMarkup | ReplyKeyboardRemove \
        | ForceReply | None:
    """A stored reply keyboard (or its removal) as the client's object."""
    if not markup:
        return None
    if "keyboard" in markup:
        return ReplyKeyboardMarkup.model_validate(markup)
    if "remove_keyboard" in markup:
        return ReplyKeyboardRemove.model_validate(markup)
    if "force_reply" in markup:
        return ForceReply.model_validate(markup)
    return None


class PacedSends(BaseRequestMiddleware):
    """The aiogram session middleware described above."""

    def __init__(self, pacer: Pacer, now: Callable[[], datetime]) -> None:
        self.pacer = pacer
        self.now = now

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        chat = chat_of(method)
        db = current_session.get()
        if db is not None and not OUTBOX_CALL.get() and is_cosmetic(method):
            return await self._contained(make_request, bot, method)
        if OUTBOX_CALL.get() or chat is None or not is_send(method):
            return await self._readable(make_request, bot, method)
        if db is None:
            # Not answering an update (an apology after a failure): wait our turn, then send.
            await self.pacer.acquire(chat, max_pause=OTHER_PAUSE)
            self.pacer.sent(chat)
            try:
                return await self._readable(make_request, bot, method)
            finally:
                self.pacer.finished(chat)
        if await self._queued_before(db, chat) or not await self.pacer.acquire(
                chat, max_pause=DIRECT_PAUSE, answer=True):
            return await self._queue(db, method, chat, None)
        self.pacer.sent(chat)
        try:
            return await self._readable(make_request, bot, method)
        except TelegramRetryAfter as exc:
            self.pacer.block(chat, exc.retry_after)
            return await self._queue(db, method, chat, exc)
        except Exception as exc:  # any surprise is contained to this one answer
            return await self._queue(db, method, chat, exc)
        finally:
            self.pacer.finished(chat)

    @staticmethod
    async def _readable(make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                        method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        try:
            return await make_request(bot, method)
        except ClientDecodeError as exc:
            result = accepted_result(method, exc)
            if result is None:
                raise
            log.warning("Telegram accepted %s but its answer was unreadable (%s): counted "
                        "as done", method.__api_method__, exc.message)
            # The chain returns the call's result itself (BaseSession.make_request does).
            return result  # type: ignore[no-any-return]

    @classmethod
    async def _contained(cls, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                         method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        """An edit or a toast while answering an update: a refusal leaves it out, and the
        update goes on (failing it would run it again, for an apology)."""
        try:
            return await cls._readable(make_request, bot, method)
        except Exception as exc:
            unchanged = isinstance(exc, TelegramBadRequest) and "not modified" in exc.message
            log.log(logging.DEBUG if unchanged else logging.WARNING,
                    "%s refused while answering an update (%s): left out",
                    method.__api_method__, describe(exc))
            return True  # type: ignore[return-value]

    async def _queued_before(self, db: AsyncSession, chat: int) -> bool:
        """Earlier answers to this chat still in the outbox: this one goes after them."""
        return await db.scalar(
            select(Outbox.id).where(Outbox.chat_id == chat, Outbox.kind == DIRECT_KIND,
                                    Outbox.status == "pending", Outbox.not_before <= self.now())
            .limit(1)) is not None

    async def _queue(self, db: AsyncSession, method: TelegramMethod[TelegramType], chat: int,
                     error: Exception | None) -> Response[TelegramType]:
        """Write the answer to the outbox in the update's transaction; return a stand-in."""
        row_id = await self._enqueue(db, method, chat)
        if row_id is not None:
            # It goes before the chat's background rows (delivery.ANSWERS_FIRST); a sender
            # mid-turn in the chat reads its next row again.
            self.pacer.answer_queued(chat)
        reason = describe(error) if error is not None else "no slot free now"
        if row_id is None:
            # Nothing the outbox can carry (a file upload, a location): the handler goes on.
            log.warning("a direct %s could not be sent (%s) nor queued: dropped",
                        method.__api_method__, reason)
            if error is not None and not isinstance(error, TelegramAPIError | ClientDecodeError
                                                    | OSError | TimeoutError):
                log.warning("the dropped %s failed with %r", method.__api_method__, error)
            row_id = 0
        elif error is not None:
            log.warning("a direct answer went to the outbox as %s (%s)", row_id, reason)
        stand_in = _stand_in(chat, {"message_id": -row_id})
        if method.__api_method__.lower() in ("sendmediagroup", "forwardmessages",
                                             "copymessages"):
            return [stand_in]  # type: ignore[return-value]
        return stand_in  # type: ignore[return-value]

    async def _enqueue(self, db: AsyncSession, method: TelegramMethod[Any],
                       chat: int) -> int | None:
        if isinstance(method, SendMessage):
            text, photos = method.text, []
        elif isinstance(method, SendPhoto) and isinstance(method.photo, str):
            text, photos = method.caption or "", [method.photo]
        else:
            return None
        markup = method.reply_markup
        buttons: list[list[dict[str, Any]]] = []
        other: dict[str, Any] | None = None
        if isinstance(markup, InlineKeyboardMarkup):
            buttons = [[b.model_dump(exclude_none=True) for b in line]
                       for line in markup.inline_keyboard]
        elif isinstance(markup, ReplyKeyboardMarkup | ReplyKeyboardRemove | ForceReply):
            other = markup.model_dump(exclude_none=True)
        reply = method.reply_parameters
        reply_to = getattr(reply, "message_id", None)
        if reply_to is None:
            reply_to = getattr(method, "reply_to_message_id", None)
        # Its id is the stand-in's message id.
        return await enqueue(
            db, f"{DIRECT_KIND}:{uuid.uuid4().hex}", chat, text, self.now(), photos=photos,
            buttons=buttons, reply_to=reply_to if isinstance(reply_to, int) else None,
            kind=DIRECT_KIND, markup=other)
