"""`/healthz`: is this worker doing its job?

Healthy when the database answers and the outbox sender and the sweep have each finished a
pass recently. The loops survive outages by waiting (`bot.telegram.outage`), so a process can be
alive
and yet do nothing: this is what tells a load balancer or a monitor so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.clock import Clock
from bot.ops.metrics import Metrics

# The sender passes about once a second; a minute without one is a stall, not a pause.
SENDER_STALE = timedelta(seconds=60)
# The sweep runs every GRIDBOT_SWEEP_SECONDS; a big one may take a while.
SWEEP_GRACE = timedelta(seconds=60)
PING_TIMEOUT = 5.0
Job = Callable[[], Awaitable[object]]


class Health:
    def __init__(self, engine: AsyncEngine, clock: Clock, sweep_seconds: float,
                 metrics: Metrics | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.sweep_stale = timedelta(seconds=3 * sweep_seconds) + SWEEP_GRACE
        self.metrics = metrics
        self.sender_at: datetime | None = None
        self.sweep_at: datetime | None = None

    def sender(self, job: Job) -> Job:
        """`job` (run on every pass of the sender), noting each pass that succeeded."""
        async def run() -> object:
            result = await job()
            self.sender_at = self.clock.now()
            return result
        return run

    def sweep(self, job: Job) -> Job:
        """The sweep, timed and noted when it succeeded."""
        async def run() -> object:
            started = time.monotonic()
            result = await job()
            if self.metrics is not None:
                self.metrics.sweep.observe(time.monotonic() - started)
            self.sweep_at = self.clock.now()
            return result
        return run

    async def problems(self) -> list[str]:
        """Why this worker is not healthy; empty when it is."""
        found = []
        try:
            await asyncio.wait_for(self._ping(), timeout=PING_TIMEOUT)
        except Exception as exc:
            found.append(f"database: {type(exc).__name__}")
        now = self.clock.now()
        found += _stale("sender", self.sender_at, now, SENDER_STALE)
        found += _stale("sweep", self.sweep_at, now, self.sweep_stale)
        return found

    async def _ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


def _stale(what: str, at: datetime | None, now: datetime, limit: timedelta) -> list[str]:
    if at is None:
        return [f"{what}: has not run yet"]
    if now - at > limit:
        return [f"{what}: last ran {int((now - at).total_seconds())}s ago"]
    return []
