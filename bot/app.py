"""Assembly: settings → database, texts, Bot, Dispatcher, outbox sender and the sweep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramBadRequest, TelegramUnauthorizedError
from aiogram.types import (
    BotCommandScopeAllGroupChats,
    BotCommandScopeAllPrivateChats,
    ErrorEvent,
)
from aiohttp.web import AppRunner
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import workflow  # its steps register in bot.cases.hooks on import
from bot.cases.albums import finish_albums
from bot.cases.deadlines import calendar_warning
from bot.cases.outbox import prune_sent
from bot.cases.sweep import PeriodicJob, sweep
from bot.clock import Clock, SystemClock
from bot.config import LOCALES, Settings, listen_address
from bot.context import Ctx, NotConfigured, begin
from bot.ledger import digest
from bot.ops.health import Health
from bot.ops.http import web_app
from bot.ops.metrics import CountCalls, CountHandled, Metrics
from bot.ops.workers import alive_within, heartbeat, leave, new_worker_id
from bot.rounds import campaigns, care, patrols
from bot.telegram.delivery import Delivery
from bot.telegram.inbox import CONCURRENT_CHATS, Inbox, prune
from bot.telegram.polling import every, run_loops
from bot.telegram.ratelimit import Limits
from bot.telegram.session import PacedSends
from bot.telegram.webhook import StoringRequestHandler, serve, webhook_path
from bot.texts import Texts
from handlers import build_router, menus
from handlers.middlewares import DbMiddleware
from storage.db import create_schema, make_engine, make_sessionmaker
from storage.fsm import SqlStorage
from storage.models import OrgSettings

log = logging.getLogger(__name__)
# How often a worker deletes handled updates and sent messages past their retention.
PRUNE_EVERY = timedelta(minutes=10)
# The sweep's jobs beside the cases' timers: the daily digest and the monthly score, and the
# workflow following a registry load (a check whose checker left, a whistle's due time).
PERIODIC: tuple[PeriodicJob, ...] = (digest.run_due, workflow.follow_registry,
                                      patrols.end_stale, care.run_due, campaigns.run_due)
# A syntactically valid token for runs that never reach Telegram (the demo, tests).
OFFLINE_TOKEN = "123456:offline-token-for-the-fake-bot-api"
# Every private chat's menu is the resident's; staff get their own per chat (handlers/menus.py).
PRIVATE_COMMANDS = menus.RESIDENT_COMMANDS
GROUP_COMMANDS = menus.GROUP_COMMANDS
# How often each worker looks for staff whose private menu changed (a registry load, someone
# starting the bot); each chat's menu is set only when it changed (`command_menus`).
MENU_SECONDS = 120


@dataclass
class App:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    ctx: Ctx
    bot: Bot
    dp: Dispatcher
    delivery: Delivery
    worker_id: str = field(default_factory=new_worker_id)
    pruned_at: datetime | None = None
    menu_sync: menus.Menus | None = None

    async def identify(self) -> None:
        """Learn the bot's own id and username (for deep links and reply detection)."""
        me = await self.bot.me()
        self.ctx.bot_id = me.id
        self.ctx.bot_username = me.username or self.ctx.bot_username

    async def tick(self) -> None:
        """What runs every second: albums that have settled become cases. The only loop that
        finishes albums (the sweep does not), and each album is claimed atomically."""
        if await finish_albums(self.sessions, self.ctx):
            self.delivery.wake()  # the album's acknowledgement and cards are owed now

    async def sweep(self) -> int:
        steps = await sweep(self.sessions, self.ctx, PERIODIC)
        if steps:
            self.delivery.wake()  # reminders and escalations are owed now, not at the next tick
        now = self.ctx.clock.now()
        # Rows are kept for days: deleting old ones a few times an hour is plenty, and spares
        # every other sweep the transactions (one per status) that find nothing to delete.
        if self.pruned_at is None or now - self.pruned_at >= PRUNE_EVERY:
            await prune(self.sessions, now)
            await prune_sent(self.sessions, now, self.settings.outbox_retention_days)
            self.pruned_at = now
        if self.delivery.claims.shared:  # SQLite has one process: nobody to share with
            self.delivery.pacer.workers = await heartbeat(
                self.sessions, self.worker_id, now, alive_within(self.settings.sweep_seconds))
        return steps

    async def sync_menus(self) -> int:
        """Each staff person's private command menu, set where it changed (their roles, its
        words); a person who lost their roles gets the private chats' menu back. Run after
        start and every MENU_SECONDS by its own loop: it never holds up an update, and a
        Telegram error only leaves that chat for the next run."""
        if self.menu_sync is None:
            self.menu_sync = menus.Menus(self.settings.templates_dir, self.ctx.texts.locale)
        return await self.menu_sync.sync(self.bot, self.sessions, self.ctx.clock)

    async def close(self) -> None:
        if self.delivery.claims.shared:
            await leave(self.sessions, self.worker_id)
        await self.bot.session.close()
        await self.engine.dispose()


async def _locale(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> str:
    """GRIDBOT_LOCALE if set, else the registry's locale, else zh_CN."""
    if "locale" in settings.model_fields_set:
        return settings.locale
    async with sessions() as db:
        row = await db.get(OrgSettings, 1)
    return row.locale if row is not None else settings.locale


async def build_app(settings: Settings, *, clock: Clock | None = None,
                    session: BaseSession | None = None, limits: Limits | None = None) -> App:
    engine = make_engine(settings.database_url)
    await create_schema(engine)
    sessions = make_sessionmaker(engine)
    texts = Texts(settings.templates_dir, await _locale(settings, sessions))
    ctx = Ctx(clock=clock or SystemClock(), texts=texts)
    ctx.extra["chart_font"] = settings.chart_font  # /stats' chart (handlers/stats.py)
    if session is None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.api_url.rstrip("/")))
    token = settings.bot_token.get_secret_value() if settings.bot_token else OFFLINE_TOKEN
    bot = Bot(token, session=session, default=DefaultBotProperties(
        parse_mode=ParseMode.HTML, link_preview_is_disabled=True))
    dp = Dispatcher(storage=SqlStorage(sessions))
    dp["ctx"] = ctx
    delivery = Delivery(bot, sessions, ctx, limits)
    # Every send a handler makes is paced like the outbox, and queued there if it fails.
    bot.session.middleware(PacedSends(delivery.pacer, ctx.clock.now))
    dp.update.outer_middleware(DbMiddleware(sessions, ctx, delivery))
    dp.include_router(build_router())
    dp.errors.register(_on_error)
    return App(settings, engine, sessions, ctx, bot, dp, delivery)


async def _on_error(event: ErrorEvent, ctx: Ctx) -> bool:
    """An unexpected failure: logged, and the person is told rather than left waiting."""
    log.error("update %s failed: %r", event.update.update_id, event.exception,
              exc_info=event.exception)
    try:
        if event.update.callback_query is not None:
            await event.update.callback_query.answer(ctx.texts.plain("err_internal"),
                                                     show_alert=True)
        elif event.update.message is not None:
            await event.update.message.reply(ctx.texts.label("err_internal"))
    except Exception:  # the apology itself failed; the log above has the cause
        log.warning("could not tell the user about the failure of update %s",
                    event.update.update_id)
    return True


async def register_commands(app: App) -> None:
    """Command menus for private chats and groups, in every locale we have."""
    for locale in LOCALES:
        texts = Texts(app.settings.templates_dir, locale)
        language = locale.split("_")[0]
        for scope, names in ((BotCommandScopeAllPrivateChats(), PRIVATE_COMMANDS),
                             (BotCommandScopeAllGroupChats(), GROUP_COMMANDS)):
            commands = menus.bot_commands(texts, names)
            await app.bot.set_my_commands(commands, scope=scope, language_code=language)
            if locale == app.ctx.texts.locale:
                await app.bot.set_my_commands(commands, scope=scope)


async def _start(app: App, *steps: Callable[[], Awaitable[object]]) -> None:
    """Who the bot is, the working calendar's warning, its command menus, and the calls given
    (polling's deleteWebhook)."""
    await app.identify()
    for step in (lambda: warn_calendar(app), lambda: register_commands(app), *steps):
        try:
            await step()
        except TelegramUnauthorizedError:
            raise
        except Exception as exc:  # the menus or the webhook can be set another time
            log.warning("start-up call failed (%s); going on", type(exc).__name__)


async def warn_calendar(app: App) -> str | None:
    """Log once at start when working-time deadlines could run into a year the working
    calendar does not know (this year or the next): they count weekends only there."""
    now = app.ctx.clock.now()
    try:
        async with app.sessions() as db:
            policy = (await begin(db, app.ctx)).policy
    except NotConfigured:
        return None
    warning = calendar_warning(policy, now, now + timedelta(days=366))
    if warning is not None:
        log.warning("%s", warning)
    return warning


async def _set_webhook(app: App, url: str, secret: str, allowed: list[str]) -> None:
    try:
        await app.bot.set_webhook(url, secret_token=secret, allowed_updates=allowed,
                                  drop_pending_updates=False)
    except (TelegramUnauthorizedError, TelegramBadRequest):
        raise  # a revoked token, a URL Telegram refuses: for a person to fix
    except Exception as exc:
        # Telegram keeps posting to the webhook registered before, if there was one.
        log.warning("setWebhook failed (%s); going on", type(exc).__name__)


def _inbox(app: App) -> Inbox:
    # SQLite has one writer at a time: chats side by side would only queue for it.
    sqlite = app.settings.database_url.startswith("sqlite")
    return Inbox(app.bot, app.dp, app.sessions, app.ctx.clock.now,
                 concurrency=1 if sqlite else CONCURRENT_CHATS)


def _work(app: App, inbox: Inbox, stop: asyncio.Event,
          health: Health | None = None) -> dict[str, Coroutine[Any, Any, None]]:
    """The loops every worker runs, however updates arrive: the processor first handles what
    was received but not handled before a stop, and the sweep runs at once for what fell due
    while the bot was down."""
    tick: Callable[[], Awaitable[object]] = app.tick
    swept: Callable[[], Awaitable[object]] = app.sweep
    if health is not None:
        tick, swept = health.sender(tick), health.sweep(swept)
    return {
        "handling": inbox.process(stop),
        "delivery": app.delivery.run(stop, also=tick),
        "sweep": every(app.settings.sweep_seconds, swept, stop, "the sweep"),
        "menus": every(MENU_SECONDS, app.sync_menus, stop, "the command menus"),
    }


class Monitoring:
    """One worker's counters and health, and the HTTP server answering `/healthz` and
    `/metrics` (with the webhook, for `gridbot webhook`)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.metrics = Metrics()
        app.dp.update.outer_middleware(CountHandled(self.metrics))
        app.bot.session.middleware(CountCalls(self.metrics))
        self.health = Health(app.engine, app.ctx.clock, app.settings.sweep_seconds,
                             self.metrics)
        self.runner: AppRunner | None = None

    async def serve(self, webhook: tuple[StoringRequestHandler, str] | None = None) -> None:
        """Listens on GRIDBOT_LISTEN; raises CannotListen."""
        app = self.app
        web = web_app(self.health, self.metrics,
                      lambda: self.metrics.refresh(app.sessions, app.ctx.clock.now()), webhook)
        self.runner = await serve(web, listen_address(app.settings.listen))

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def run_polling(app: App, stop: asyncio.Event | None = None) -> None:
    """Long polling into the inbox, its processor, the outbox sender and the sweep; with
    GRIDBOT_LISTEN set, `/healthz` and `/metrics` too.

    Returns after SIGTERM or SIGINT, or once `stop` is set; raises TelegramUnauthorizedError
    when the Bot API refuses the token, and CannotListen. Any other failure (network,
    database) is waited out by the loop it hit.
    """
    stop = stop or asyncio.Event()
    monitoring = Monitoring(app) if "listen" in app.settings.model_fields_set else None
    try:
        if monitoring is not None:
            await monitoring.serve()
            log.info("health and metrics on %s", app.settings.listen)
        await _start(app, lambda: app.bot.delete_webhook(drop_pending_updates=False))
        inbox = _inbox(app)
        allowed = app.dp.resolve_used_update_types()
        health = None
        if monitoring is not None:
            inbox.on_received = monitoring.metrics.count_received
            health = monitoring.health
        await run_loops({"polling": inbox.poll(stop, allowed),
                         **_work(app, inbox, stop, health)}, stop)
    finally:
        stop.set()
        if monitoring is not None:
            await monitoring.close()
        await app.close()


async def run_webhook(app: App, stop: asyncio.Event | None = None) -> None:
    """The webhook server (updates, `/healthz`, `/metrics`) and the same loops as polling.

    Listens on GRIDBOT_LISTEN first, then registers GRIDBOT_WEBHOOK_URL with its secret and
    the update types the handlers use. Stopping leaves the webhook registered: other workers
    behind the same URL go on serving it. Raises CannotListen, and
    TelegramUnauthorizedError / TelegramBadRequest when the Bot API refuses the token or the
    URL. Returns after SIGTERM or SIGINT, or once `stop` is set.
    """
    settings = app.settings
    assert settings.webhook_url is not None and settings.webhook_secret is not None
    secret = settings.webhook_secret.get_secret_value()
    monitoring = Monitoring(app)
    inbox = _inbox(app)
    inbox.on_received = monitoring.metrics.count_received
    allowed = app.dp.resolve_used_update_types()
    handler = StoringRequestHandler(app.dp, app.bot, inbox, secret, allowed,
                                    lambda: app.ctx.bot_id or app.bot.id)
    stop = stop or asyncio.Event()
    try:
        await monitoring.serve((handler, webhook_path(settings.webhook_url)))
        await _start(app)
        await _set_webhook(app, settings.webhook_url, secret, allowed)
        log.info("webhook listening on %s", settings.listen)
        await run_loops(_work(app, inbox, stop, monitoring.health), stop)
    finally:
        stop.set()
        await monitoring.close()
        await app.close()
