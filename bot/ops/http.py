"""The HTTP server of one worker: `/healthz`, `/metrics` and, for `gridbot webhook`, the
webhook that stores Telegram's updates (bot/telegram/webhook.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.ops.health import Health
from bot.ops.metrics import CONTENT_TYPE, Metrics
from bot.telegram.webhook import MAX_BODY, StoringRequestHandler


def web_app(health: Health, metrics: Metrics, refresh: Callable[[], Any],
            webhook: tuple[StoringRequestHandler, str] | None = None) -> web.Application:
    """The HTTP server of one worker: `/healthz`, `/metrics` and, for `gridbot webhook`, the
    webhook (its handler and path)."""
    app = web.Application(client_max_size=MAX_BODY)
    if webhook is not None:
        handler, path = webhook
        handler.register(app, path=path)

    async def healthz(_request: web.Request) -> web.Response:
        problems = await health.problems()
        if problems:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def render(_request: web.Request) -> web.Response:
        await refresh()
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", render)
    return app
