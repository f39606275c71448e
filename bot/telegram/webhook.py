"""`gridbot webhook`: Telegram posts updates over HTTPS; each is stored, then answered 200.

The update is kept in the inbox (the same keep / skip rules and redelivery check as polling)
and Telegram is answered as soon as it is committed; the inbox processor hands it to the
handlers later, durably and exactly once, as for polling. A slow handler therefore never
makes Telegram time out and deliver again, and a worker killed after the 200 loses nothing.
Only when the update could not be stored is the answer an error, so Telegram sends it again.

Every request must carry the secret registered with `setWebhook` in the
X-Telegram-Bot-Api-Secret-Token header, compared in constant time; without it the answer is
401 and nothing is stored. The same server answers `/healthz` and `/metrics`, which
`gridbot run` also serves when GRIDBOT_LISTEN is set.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from bot.telegram.inbox import Inbox, store
from bot.telegram.inbox_scope import acts_on

log = logging.getLogger(__name__)
# Telegram posts one update per request; anything far bigger is not from Telegram.
MAX_BODY = 1024 * 1024


class CannotListen(Exception):
    """GRIDBOT_LISTEN cannot be bound (in use, not an address of this host)."""


def webhook_path(url: str) -> str:
    """Where the updates are posted: the path of GRIDBOT_WEBHOOK_URL (the reverse proxy
    passes it on unchanged)."""
    return urlsplit(url).path or "/"


class StoringRequestHandler(SimpleRequestHandler):
    """aiogram's webhook handler, storing each update in the inbox instead of handling it in
    the request."""

    def __init__(self, dp: Dispatcher, bot: Bot, inbox: Inbox, secret: str, allowed: list[str],
                 bot_id: Callable[[], int]) -> None:
        super().__init__(dp, bot, handle_in_background=False, secret_token=secret)
        self.inbox = inbox
        self.allowed = allowed
        self.bot_id = bot_id

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters, which anyone can send.
        assert self.secret_token
        return hmac.compare_digest(telegram_secret_token.encode("utf-8", "surrogateescape"),
                                   self.secret_token.encode())

    async def close(self) -> None:
        """The Bot's session belongs to the App, which closes it after the loops."""

    async def _handle_request(self, bot: Bot, request: web.Request) -> web.Response:
        try:
            item: Any = json.loads(await request.read())
        except ValueError:
            return web.Response(status=400, text="not JSON")
        bot_id = self.bot_id()
        try:
            await store(self.inbox.sessions, [item], self.inbox.now(),
                        keep=lambda update: acts_on(update, bot_id, self.allowed))
        except Exception as exc:
            # Not stored: Telegram must deliver it again.
            log.warning("webhook: could not store an update (%s); answered 503",
                        type(exc).__name__)
            return web.Response(status=503, text="try again")
        self.inbox.received([item])
        return web.Response(text="ok")


async def serve(app: web.Application, listen: tuple[str, int]) -> web.AppRunner:
    """Starts serving `app`; the caller cleans the runner up. Raises CannotListen."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, *listen).start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(exc.strerror or str(exc)) from exc
    return runner
