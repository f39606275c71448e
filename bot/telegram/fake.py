"""An in-process fake of the Telegram Bot API, and builders of real update JSON.

Used by `gridbot demo` and by the tests: the Bot talks to `FakeTelegram` instead of the
network, every call is recorded as its typed method object, and answers are built the way
Telegram builds them (message ids, chats, photos). Errors are injected per chat.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import (
    DeleteMyCommands,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    SendDocument,
    SendLocation,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
    SendVenue,
    SendVideoNote,
    SendVoice,
    SetMyCommands,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiogram.types import InputFile

BOT_ID = 7000000001
BOT_USERNAME = "gridbot_test_bot"
FIXED_DATE = 1_780_000_000

FORBIDDEN = (403, "Forbidden: bot can't initiate conversation with a user")
# setMyCommands' contract: at most 100 commands, each 1-32 of a-z 0-9 _, described in 1-256.
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")


@dataclass
class Sent:
    """One message the bot sent, as a person in that chat sees it."""

    chat_id: int
    text: str
    buttons: list[list[dict[str, Any]]]
    photos: list[str]
    message_id: int
    reply_to: int | None = None
    # A file uploaded with the message (sendPhoto or sendDocument with an InputFile): what
    # Telegram would have received in the multipart body.
    file: bytes | None = None
    file_name: str | None = None
    file_kind: str | None = None  # "photo" or "document"
    # A voice or video note re-sent by file_id (sendVoice / sendVideoNote): its file_id, and
    # "voice" or "video_note".
    voice: str | None = None
    voice_kind: str | None = None
    # A venue (sendVenue): latitude, longitude, title, address.
    venue: tuple[float, float, str, str] | None = None

    def button_data(self, label: str) -> str:
        for row in self.buttons:
            for b in row:
                if b.get("text") == label and b.get("callback_data"):
                    return str(b["callback_data"])
        raise KeyError(f"no button {label!r} in {[b['text'] for r in self.buttons for b in r]}")

    @property
    def labels(self) -> list[str]:
        return [b["text"] for row in self.buttons for b in row]


@dataclass
class FakeTelegram(BaseSession):
    """A Bot API session that answers from memory."""

    calls: list[TelegramMethod[Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    # chat id -> (status code, description) answered to every send to that chat
    failing: dict[int, tuple[int, str]] = field(default_factory=dict)
    # one-off answers for the next sends to a chat: (status, description, parameters)
    queued: dict[int, list[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    # one-off answers for the next calls of a method, by its API name (e.g. "answerCallbackQuery")
    queued_methods: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    # The command menus as set: (scope type, chat id or None, language or None) -> commands
    # as (command, description). `menu_of` reads them as a person's client would.
    menus: dict[tuple[str, int | None, str | None], list[tuple[str, str]]] = field(
        default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1000)

    async def close(self) -> None:
        return None

    async def stream_content(self, url: str, headers: dict[str, Any] | None = None,
                             timeout: int = 30, chunk_size: int = 65536,
                             raise_for_status: bool = True) -> AsyncGenerator[bytes, None]:
        yield b""

    def forbid(self, chat_id: int) -> None:
        self.failing[chat_id] = FORBIDDEN

    def allow(self, chat_id: int) -> None:
        self.failing.pop(chat_id, None)

    def fail_next(self, chat_id: int, status: int, description: str,
                  **parameters: Any) -> None:
        self.queued.setdefault(chat_id, []).append((status, description, parameters))

    def fail_next_call(self, api_method: str, status: int, description: str) -> None:
        self.queued_methods.setdefault(api_method, []).append((status, description))

    async def make_request(self, bot: Bot, method: TelegramMethod[TelegramType],
                           timeout: int | None = None) -> TelegramType:
        self.calls.append(method)
        # Files are read as the real session reads them for its multipart body: once, in
        # chunks, before the call is answered.
        files = {name: await _read(bot, value) for name in ("photo", "document")
                 if isinstance(value := getattr(method, name, None), InputFile)}
        # Tests replace `_answer` with one-argument fakes: files go only when there are some.
        status, payload = self._answer(method, files) if files else self._answer(method)
        return self.check_response(bot, method, status, json.dumps(payload)).result  # type: ignore[return-value]

    def _answer(self, method: TelegramMethod[Any],
                files: dict[str, tuple[str, bytes]] | None = None) -> tuple[int, dict[str, Any]]:
        files = files or {}
        if self.queued_methods.get(method.__api_method__):
            status, description = self.queued_methods[method.__api_method__].pop(0)
            return status, {"ok": False, "error_code": status, "description": description}
        chat_id = getattr(method, "chat_id", None)
        if isinstance(chat_id, int):
            if self.queued.get(chat_id):
                status, description, params = self.queued[chat_id].pop(0)
                body: dict[str, Any] = {"ok": False, "error_code": status,
                                        "description": description}
                if params:
                    body["parameters"] = params
                return status, body
            if chat_id in self.failing:
                status, description = self.failing[chat_id]
                return status, {"ok": False, "error_code": status, "description": description}
        if isinstance(method, GetMe):
            return 200, {"ok": True, "result": bot_user()}
        if isinstance(method, SetMyCommands | DeleteMyCommands):
            return self._menu(method)
        if isinstance(method, SendMessage):
            return 200, {"ok": True, "result": self._record(method, method.text, [])}
        if isinstance(method, SendPhoto) and "photo" in files:
            name, data = files["photo"]
            return 200, {"ok": True, "result": self._record(
                method, method.caption or "", [f"uploaded:{name}"], upload=("photo", name, data))}
        if isinstance(method, SendPhoto):
            return 200, {"ok": True, "result": self._record(method, method.caption or "",
                                                            [str(method.photo)])}
        if isinstance(method, SendDocument) and "document" in files:
            name, data = files["document"]
            return 200, {"ok": True, "result": self._record(
                method, method.caption or "", [], upload=("document", name, data))}
        if isinstance(method, SendMediaGroup):
            results = [self._record(method, "", [str(m.media)], markup=False)
                       for m in method.media]
            return 200, {"ok": True, "result": results}
        if isinstance(method, SendVoice | SendVideoNote):
            kind = "voice" if isinstance(method, SendVoice) else "video_note"
            file_id = str(method.voice if isinstance(method, SendVoice) else method.video_note)
            result = self._record(method, getattr(method, "caption", None) or "", [])
            self.sent[-1].voice, self.sent[-1].voice_kind = file_id, kind
            result.pop("text", None)
            result[kind] = {"file_id": file_id, "file_unique_id": f"u{file_id}", "duration": 1,
                            **({"length": 240} if kind == "video_note" else {})}
            return 200, {"ok": True, "result": result}
        if isinstance(method, SendLocation):
            return 200, {"ok": True, "result": self._record(method, "", [])}
        if isinstance(method, SendVenue):
            result = self._record(method, "", [])
            self.sent[-1].venue = (method.latitude, method.longitude, method.title,
                                   method.address)
            result["venue"] = {"location": {"latitude": method.latitude,
                                            "longitude": method.longitude},
                               "title": method.title, "address": method.address}
            return 200, {"ok": True, "result": result}
        if isinstance(method, EditMessageText | EditMessageReplyMarkup):
            self._edit(method)
            return 200, {"ok": True, "result": True}
        return 200, {"ok": True, "result": True}

    def _menu(self, method: SetMyCommands | DeleteMyCommands) -> tuple[int, dict[str, Any]]:
        scope = method.scope
        key = (scope.type if scope is not None else "default",
               getattr(scope, "chat_id", None), method.language_code or None)
        if isinstance(method, DeleteMyCommands):
            self.menus.pop(key, None)
            return 200, {"ok": True, "result": True}
        error = None
        if len(method.commands) > 100:
            error = "BOT_COMMANDS_TOO_MUCH"
        elif not all(_COMMAND.match(c.command) for c in method.commands):
            error = "BOT_COMMAND_INVALID"
        elif not all(0 < len(c.description) <= 256 for c in method.commands):
            error = "BOT_COMMAND_DESCRIPTION_INVALID"
        if error is not None:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {error}"}
        self.menus[key] = [(c.command, c.description) for c in method.commands]
        return 200, {"ok": True, "result": True}

    def menu_of(self, chat_id: int, language: str | None = None) -> list[str]:
        """The commands a person sees in their private chat's menu, resolved as Telegram does:
        the chat's own (in their language, then any), then all private chats', then the
        default."""
        for scope, chat in (("chat", chat_id), ("all_private_chats", None), ("default", None)):
            for lang in (language, None):
                found = self.menus.get((scope, chat, lang))
                if found is not None:
                    return [c for c, _ in found]
        return []

    def _record(self, method: Any, text: str, photos: list[str],
                markup: bool = True,
                upload: tuple[str, str, bytes] | None = None) -> dict[str, Any]:
        chat_id = int(method.chat_id)
        message_id = next(self._ids)
        buttons: list[list[dict[str, Any]]] = []
        reply_markup = getattr(method, "reply_markup", None) if markup else None
        if reply_markup is not None and hasattr(reply_markup, "inline_keyboard"):
            buttons = [[b.model_dump(exclude_none=True) for b in row]
                       for row in reply_markup.inline_keyboard]
        reply = getattr(method, "reply_parameters", None)
        sent = Sent(chat_id, text, buttons, photos, message_id,
                    reply.message_id if reply is not None else None)
        if upload is not None:
            sent.file_kind, sent.file_name, sent.file = upload
        self.sent.append(sent)
        message: dict[str, Any] = {
            "message_id": message_id, "date": FIXED_DATE, "chat": chat_json(chat_id),
            "from": bot_user(),
        }
        if upload is not None and upload[0] == "document":
            message["document"] = {"file_id": f"doc{message_id}",
                                   "file_unique_id": f"ud{message_id}", "file_name": upload[1],
                                   "file_size": len(upload[2])}
            if text:
                message["caption"] = text
        elif photos:
            message["photo"] = [photo_json(photos[0])]
            if text:
                message["caption"] = text
        elif text:
            message["text"] = text
        return message

    def _edit(self, method: EditMessageText | EditMessageReplyMarkup) -> None:
        """Apply an edit to the message as recorded, as the person would now see it."""
        for sent in self.sent:
            if sent.chat_id == method.chat_id and sent.message_id == method.message_id:
                if isinstance(method, EditMessageText):
                    sent.text = method.text or ""
                markup = method.reply_markup
                sent.buttons = ([[b.model_dump(exclude_none=True) for b in row]
                                 for row in markup.inline_keyboard] if markup else [])

    def to(self, chat_id: int) -> list[Sent]:
        return [s for s in self.sent if s.chat_id == chat_id]

    def texts_to(self, chat_id: int) -> list[str]:
        return [s.text for s in self.to(chat_id) if s.text]

    def last_to(self, chat_id: int) -> Sent:
        messages = [s for s in self.to(chat_id) if s.text]
        if not messages:
            raise AssertionError(f"nothing was sent to chat {chat_id}")
        return messages[-1]

    def files_to(self, chat_id: int) -> list[Sent]:
        """The messages to a chat that carried a file we uploaded."""
        return [s for s in self.to(chat_id) if s.file is not None]

    def calls_of(self, kind: type[Any]) -> list[Any]:
        return [c for c in self.calls if isinstance(c, kind)]

    def clear(self) -> None:
        self.calls.clear()
        self.sent.clear()


async def _read(bot: Bot, file: InputFile) -> tuple[str, bytes]:
    chunks = [chunk async for chunk in file.read(bot)]
    return file.filename or "file", b"".join(chunks)


def bot_user() -> dict[str, Any]:
    return {"id": BOT_ID, "is_bot": True, "first_name": "Gridbot", "username": BOT_USERNAME}


def chat_json(chat_id: int, title: str = "group") -> dict[str, Any]:
    if chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": f"user{chat_id}"}
    return {"id": chat_id, "type": "supergroup", "title": title}


def photo_json(file_id: str) -> dict[str, Any]:
    return {"file_id": file_id, "file_unique_id": f"u{abs(hash(file_id)) % 10**9}",
            "width": 1280, "height": 960}


class Updates:
    """Builds update JSON as Telegram sends it, with increasing update and message ids."""

    def __init__(self) -> None:
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)

    def user(self, user_id: int, name: str = "") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": name or f"user{user_id}",
                "language_code": "zh-hans"}

    def message(self, chat_id: int, user_id: int, text: str | None = None, *,
                name: str = "", photo: str | None = None, caption: str | None = None,
                media_group_id: str | None = None, reply_to: dict[str, Any] | None = None,
                location: tuple[float, float] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "message_id": next(self._message_ids), "date": FIXED_DATE,
            "chat": chat_json(chat_id), "from": self.user(user_id, name),
        }
        if text is not None:
            msg["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if photo is not None:
            msg["photo"] = [photo_json(photo)]
            if caption is not None:
                msg["caption"] = caption
                if caption.startswith("/"):
                    command = caption.split()[0]
                    msg["caption_entities"] = [{"type": "bot_command", "offset": 0,
                                                "length": len(command)}]
        if media_group_id is not None:
            msg["media_group_id"] = media_group_id
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        if location is not None:
            msg["location"] = {"latitude": location[0], "longitude": location[1]}
        if extra:
            msg.update(extra)
        return {"update_id": next(self._update_ids), "message": msg}

    def bot_message(self, sent: Sent) -> dict[str, Any]:
        """The JSON of a message the bot sent, as it appears inside a reply or callback."""
        msg: dict[str, Any] = {"message_id": sent.message_id, "date": FIXED_DATE,
                               "chat": chat_json(sent.chat_id), "from": bot_user()}
        if sent.photos:
            msg["photo"] = [photo_json(sent.photos[0])]
            msg["caption"] = sent.text
        else:
            msg["text"] = sent.text or "."
        return msg

    def callback(self, user_id: int, data: str, sent: Sent | None = None, *,
                 chat_id: int | None = None, name: str = "") -> dict[str, Any]:
        if sent is None:
            sent = Sent(chat_id if chat_id is not None else user_id, ".", [], [],
                        next(self._message_ids))
        return {"update_id": next(self._update_ids), "callback_query": {
            "id": str(next(self._update_ids) * 7919), "from": self.user(user_id, name),
            "chat_instance": "ci", "data": data, "message": self.bot_message(sent),
        }}

    def added_to_group(self, chat_id: int, by_user: int) -> dict[str, Any]:
        return {"update_id": next(self._update_ids), "my_chat_member": {
            "chat": chat_json(chat_id), "from": self.user(by_user), "date": FIXED_DATE,
            "old_chat_member": {"status": "left", "user": bot_user()},
            "new_chat_member": {"status": "member", "user": bot_user()},
        }}
