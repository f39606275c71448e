"""Prometheus metrics of one worker process, served at `/metrics` by `gridbot webhook` (and
by `gridbot run` when GRIDBOT_LISTEN is set).

Counters are counted where things happen (updates received, handled, failed; Bot API sends by
result; 429s; sweep durations); they are per process, and Prometheus adds up the workers.
The state of the district (cases by status and level, outbox rows waiting, the age of the
oldest unsent row and of the oldest unhandled update) is read from the database at scrape
time, so every worker reports the same shared figures. Each App has its own registry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import TelegramObject, Update
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.telegram.inbox_scope import update_kind
from bot.telegram.session import OUTBOX_CALL, is_send
from storage.models import Case, InboxUpdate, Outbox

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The outbox states worth watching; `sent` rows are history, not work.
OUTBOX_STATES = ("pending", "held", "failed", "undeliverable")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("gridbot_updates_received", "Updates received from Telegram, "
                                "by kind", ["kind"], registry=r)
        self.handled = Counter("gridbot_updates_handled", "Updates handed to the handlers, "
                               "by kind", ["kind"], registry=r)
        self.failures = Counter("gridbot_handler_failures", "Updates whose handler raised, "
                                "by kind", ["kind"], registry=r)
        self.deliveries = Counter("gridbot_deliveries", "Bot API send calls by source "
                                  "(outbox, direct) and result", ["source", "result"],
                                  registry=r)
        self.too_many = Counter("gridbot_telegram_429", "Bot API calls answered 429 Too Many "
                                "Requests", registry=r)
        self.sweep = Histogram("gridbot_sweep_duration_seconds", "How long one sweep took",
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                               registry=r)
        self.database_up = Gauge("gridbot_database_up", "1 when the last scrape could read "
                                 "the database", registry=r)
        self.cases = Gauge("gridbot_cases", "Cases by status and level", ["status", "level"],
                           registry=r)
        self.outbox = Gauge("gridbot_outbox_rows", "Outbox rows not sent, by status",
                            ["status"], registry=r)
        self.outbox_age = Gauge("gridbot_outbox_oldest_pending_age_seconds", "How long the "
                                "oldest pending outbox row has been due (0: none)", registry=r)
        self.inbox_age = Gauge("gridbot_inbox_oldest_unhandled_age_seconds", "How long the "
                               "oldest unhandled update has waited (0: none)", registry=r)

    async def refresh(self, sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
        """Read the shared figures from the database; on failure they are left out."""
        try:
            async with sessions() as db:
                cases = (await db.execute(select(Case.status, Case.level, func.count())
                                          .group_by(Case.status, Case.level))).all()
                outbox: dict[str, int] = {status: count for status, count in (await db.execute(
                    select(Outbox.status, func.count()).where(Outbox.status.in_(OUTBOX_STATES))
                    .group_by(Outbox.status))).all()}
                oldest_due = await db.scalar(select(func.min(Outbox.not_before)).where(
                    Outbox.status == "pending", Outbox.not_before <= now))
                oldest_new = await db.scalar(select(func.min(InboxUpdate.received_at))
                                             .where(InboxUpdate.status == "new"))
        except Exception as exc:
            log.warning("metrics: cannot read the database (%s)", type(exc).__name__)
            self.database_up.set(0)
            self.cases.clear()
            self.outbox.clear()
            # Unknown, not zero: an alert on the age must not see "all is well".
            self.outbox_age.set(math.nan)
            self.inbox_age.set(math.nan)
            return
        self.database_up.set(1)
        self.cases.clear()  # a status no case has any more is gone, not stuck at its last count
        for status, level, count in cases:
            self.cases.labels(status=status, level=level).set(count)
        for status in OUTBOX_STATES:
            self.outbox.labels(status=status).set(outbox.get(status, 0))
        self.outbox_age.set(_age(now, oldest_due))
        self.inbox_age.set(_age(now, oldest_new))

    def count_received(self, items: Sequence[Any]) -> None:
        """Updates stored from getUpdates or the webhook (raw JSON items)."""
        for item in items:
            kind = (update_kind(item) if isinstance(item, dict) else None) or "unknown"
            self.received.labels(kind=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _age(now: datetime, since: datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def kind_of(update: Update) -> str:
    return update.event_type if update.event_type != "update" else "unknown"


class CountHandled(BaseMiddleware):
    """Counts updates that reach the handlers (inside the database middleware, so an update
    dropped as already handled is not counted) and those whose handler raised."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
                       event: TelegramObject, data: dict[str, Any]) -> Any:
        kind = kind_of(event) if isinstance(event, Update) else "unknown"
        try:
            result = await handler(event, data)
        except Exception:
            self.metrics.failures.labels(kind=kind).inc()
            raise
        self.metrics.handled.labels(kind=kind).inc()
        return result


class CountCalls(BaseRequestMiddleware):
    """Counts what the Bot API answered to every send, and every 429 whatever the call."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        send = is_send(method)
        source = "outbox" if OUTBOX_CALL.get() else "direct"
        try:
            response = await make_request(bot, method)
        except Exception as exc:
            if isinstance(exc, TelegramRetryAfter):
                self.metrics.too_many.inc()
            if send:
                self.metrics.deliveries.labels(source=source, result=_result(exc)).inc()
            raise
        if send:
            self.metrics.deliveries.labels(source=source, result="sent").inc()
        return response


def _result(exc: Exception) -> str:
    if isinstance(exc, TelegramRetryAfter):
        return "rate_limited"
    if isinstance(exc, TelegramForbiddenError):
        return "forbidden"
    if isinstance(exc, TelegramBadRequest):
        return "bad_request"
    if isinstance(exc, TelegramServerError):
        return "server_error"
    if isinstance(exc, TelegramNetworkError | TimeoutError | OSError):
        return "network"
    return "other"
