"""A local HTTP fake of the Telegram Bot API, with fault injection and rate measurement.

The bot under test talks to it over real HTTP (GRIDBOT_API_URL). It serves `getUpdates`
from a queue with Telegram's offset semantics, records every message it accepts, enforces
and measures Telegram's rate limits, and can answer a share of calls with 429, 500, slow
answers or dropped connections, and chosen chats with 403 or "migrated to supergroup".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.telegram.fake import BOT_ID, BOT_USERNAME, FIXED_DATE, chat_json

SEND_METHODS = {"sendmessage", "sendphoto", "sendmediagroup", "sendlocation", "senddocument",
                "sendvenue", "sendvoice", "sendvideonote"}
# Where `_params` puts the files of a multipart call: {field: (file name, bytes)}.
FILES = "_files"
Rule = Callable[[str, int, dict[str, Any]], "web.StreamResponse | None"]


@dataclass
class Faults:
    """Shares (0..1) of send calls answered with each fault; drawn per call."""

    too_many: float = 0.0  # 429 with retry_after
    server_error: float = 0.0  # 500
    slow: float = 0.0  # answer after `slow_seconds`
    drop: float = 0.0  # close the connection without answering (nothing is sent)
    retry_after: int = 1
    slow_seconds: float = 1.5
    seed: int = 7


@dataclass
class Received:
    method: str
    chat_id: int
    text: str
    photos: list[str]
    buttons: list[list[dict[str, Any]]]
    message_id: int
    at: float
    # A file uploaded in the multipart body (sendPhoto, sendDocument): its name and bytes.
    file_name: str | None = None
    file: bytes | None = None


@dataclass
class FakeBotApi:
    faults: Faults = field(default_factory=Faults)
    enforce_limits: bool = True
    forbidden: set[int] = field(default_factory=set)
    migrate: dict[int, int] = field(default_factory=dict)  # old group id -> new
    received: list[Received] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    limit_violations: list[str] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    call_times: list[tuple[float, str, Any]] = field(default_factory=list)
    # Every n-th send is accepted (recorded as received) but answered `ok: true` with a
    # result the client cannot read (no `chat`, no `date`); 1: every send, 0: none.
    unreadable_every: int = 0
    # Answers chosen by the test: each rule sees (method, chat_id, params) before the send is
    # accepted and returns a response to answer instead (nothing is received), or None.
    rules: list[Rule] = field(default_factory=list)
    # How long getUpdates holds a long poll with nothing to return (Telegram: the whole
    # `timeout` the bot asked for).
    long_poll_cap: float = 2.0
    # The token was revoked: every call is answered 401 Unauthorized.
    revoked: bool = False

    def __post_init__(self) -> None:
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(5000)
        self._accepted = 0
        self._new_update = asyncio.Event()
        self._rng = random.Random(self.faults.seed)
        self._all: deque[float] = deque()
        self._chat: dict[int, deque[float]] = defaultdict(deque)
        self.runner: web.AppRunner | None = None
        self.port = 0

    # --- running ---------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self._new_update.set()  # a long poll still open answers now
        if self.runner is not None:
            await self.runner.cleanup()

    # --- updates ---------------------------------------------------------------------------

    def push(self, update: dict[str, Any], update_id: int | None = None) -> int:
        """Queue an update (its update_id is assigned here, or given) for getUpdates."""
        update = dict(update)
        update["update_id"] = next(self._update_ids) if update_id is None else update_id
        self._updates.append(update)
        self._new_update.set()
        return int(update["update_id"])

    def restart_ids(self, start: int) -> None:
        """Number the next updates from `start`, as Telegram does (from a random, possibly
        lower, number) after a week without updates."""
        self._update_ids = itertools.count(start)

    @property
    def unconfirmed(self) -> int:
        return len(self._updates)

    # --- looking ---------------------------------------------------------------------------

    def to(self, chat_id: int) -> list[Received]:
        return [r for r in self.received if r.chat_id == chat_id]

    # --- the API ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].lower()
        params = await self._params(request)
        self.calls.append((method, params))
        self.call_times.append((time.monotonic(), method, params.get("chat_id")))
        if self.revoked:
            return _error(401, "Unauthorized")
        if method == "getme":
            return _ok({"id": BOT_ID, "is_bot": True, "first_name": "Gridbot",
                        "username": BOT_USERNAME})
        if method == "getupdates":
            return await self._get_updates(params)
        if method in SEND_METHODS:
            return await self._send(request, method, params)
        return _ok(True)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                params.setdefault(FILES, {})[key] = (value.filename, value.file.read())
                continue
            if not isinstance(value, str):
                continue
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
        return params

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        if offset:
            # Everything below the offset is confirmed by the bot: Telegram forgets it.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        if not self._updates and timeout:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(),
                                       timeout=min(timeout, self.long_poll_cap))
        return _ok(self._updates[:100])

    async def _send(self, request: web.Request, method: str,
                    params: dict[str, Any]) -> web.StreamResponse:
        chat_id = int(params["chat_id"])
        f = self.faults
        roll = self._rng.random()
        if roll < f.drop:
            self.injected["drop"] += 1
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        roll -= f.drop
        if roll < f.too_many:
            self.injected["429"] += 1
            return _error(429, "Too Many Requests: retry after "
                          f"{f.retry_after}", retry_after=f.retry_after)
        roll -= f.too_many
        if roll < f.server_error:
            self.injected["500"] += 1
            return _error(500, "Internal Server Error")
        roll -= f.server_error
        slow = roll < f.slow
        if chat_id in self.forbidden:
            return _error(403, "Forbidden: bot can't initiate conversation with a user")
        if chat_id in self.migrate:
            return _error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                          migrate_to_chat_id=self.migrate[chat_id])
        for rule in self.rules:
            answer = rule(method, chat_id, params)
            if answer is not None:
                self.injected["rule"] += 1
                return answer
        violation = self._check_limits(chat_id)
        if violation:
            self.limit_violations.append(violation)
            if self.enforce_limits:
                return _error(429, f"Too Many Requests: {violation}", retry_after=1)
        result = self._accept(method, chat_id, params)
        self._accepted += 1
        if self.unreadable_every and self._accepted % self.unreadable_every == 0:
            self.injected["unreadable"] += 1
            return _ok(_unreadable(result))
        if slow:
            # Accepted on arrival, answered late: the sender must wait, not send again.
            self.injected["slow"] += 1
            await asyncio.sleep(f.slow_seconds)
        return _ok(result)

    def _check_limits(self, chat_id: int) -> str | None:
        """Telegram's limits, measured on what arrives; the call is counted either way."""
        now = time.monotonic()
        while self._all and self._all[0] <= now - 1:
            self._all.popleft()
        sent = self._chat[chat_id]
        while sent and sent[0] <= now - 60:
            sent.popleft()
        problem = None
        if len(self._all) >= 30:
            problem = "over 30 messages in a second"
        elif sent and now - sent[-1] < 0.95:
            problem = f"two messages to chat {chat_id} within a second"
        elif chat_id < 0 and len(sent) >= 20:
            problem = f"over 20 messages a minute to group {chat_id}"
        self._all.append(now)
        sent.append(now)
        return problem

    def _accept(self, method: str, chat_id: int, params: dict[str, Any]) -> Any:
        now = time.monotonic()
        markup = params.get("reply_markup") or {}
        buttons = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
        if method == "sendmediagroup":
            results = []
            for item in params.get("media", []):
                mid = next(self._message_ids)
                self.received.append(Received(method, chat_id, "", [str(item.get("media"))],
                                              [], mid, now))
                results.append(_message(chat_id, mid, "", [str(item.get("media"))]))
            return results
        text = str(params.get("text") or params.get("caption") or "")
        photos = [str(params["photo"])] if "photo" in params else []
        mid = next(self._message_ids)
        files: dict[str, tuple[str, bytes]] = params.get(FILES) or {}
        # aiogram names a file's form field by a random token: `photo` says attach://<it>.
        name, data = next(iter(files.values()), (None, None))
        if data is not None and method == "sendphoto":
            photos = [f"uploaded:{name}"]
        self.received.append(Received(method, chat_id, text, photos, buttons, mid, now,
                                      file_name=name, file=data))
        return _message(chat_id, mid, text, photos)


def _message(chat_id: int, message_id: int, text: str, photos: list[str]) -> dict[str, Any]:
    msg: dict[str, Any] = {"message_id": message_id, "date": FIXED_DATE,
                           "chat": chat_json(chat_id),
                           "from": {"id": BOT_ID, "is_bot": True, "first_name": "Gridbot",
                                    "username": BOT_USERNAME}}
    if photos:
        msg["photo"] = [{"file_id": photos[0], "file_unique_id": "u1", "width": 1,
                         "height": 1}]
        if text:
            msg["caption"] = text
    else:
        msg["text"] = text or "."
    return msg


def _unreadable(result: Any) -> Any:
    """A send result as a Bot API server of another version might give it: no chat, no date."""
    if isinstance(result, list):
        return [_unreadable(r) for r in result]
    return {k: v for k, v in result.items() if k not in ("chat", "date")}


def html_page(status: int = 502) -> web.Response:
    """What a proxy in front of the Bot API answers when it cannot reach it."""
    return web.Response(status=status, content_type="text/html",
                        text="<html><body><h1>502 Bad Gateway</h1></body></html>")


def error(status: int, description: str, **parameters: Any) -> web.Response:
    """A Bot API error answer, for rules."""
    return _error(status, description, **parameters)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, **parameters: Any) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
