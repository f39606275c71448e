"""The loops of `gridbot run`, kept alive through outages and stopped promptly.

Each loop backs off and logs once per outage (`bot.telegram.outage`) instead of ending the process.
The process ends only for what a person must fix (a token the Bot API refuses, which a loop
raises), or on SIGTERM / SIGINT: the long poll in progress is abandoned, work in progress gets
a few seconds to finish, and the rest is cancelled, well within systemd's 10 seconds
(`TimeoutStopSec` defaults to 90; Docker's `stop` to 10).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]

from bot.telegram.outage import Outage, is_transient

log = logging.getLogger(__name__)
# What in-flight handling and delivery get after a stop before they are cancelled.
SHUTDOWN_GRACE = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def every(seconds: float, job: Callable[[], Awaitable[object]], stop: asyncio.Event,
                what: str) -> None:
    """Run `job` now and then every `seconds` until `stop`, on APScheduler.

    A run that fails is logged once per outage (`Outage`) and tried again at the next
    interval; a run still going when `stop` is set is waited for (`run_loops` cancels it after
    its grace).
    """
    outage = Outage(log, what)
    running = asyncio.Lock()

    async def run_once() -> None:
        async with running:
            try:
                await job()
                outage.ok()
            except asyncio.CancelledError:
                # Cancelled at a stop that did not wait for it: its transaction is rolled
                # back and the next start runs it again. Ending quietly keeps APScheduler
                # from logging a stop as "Job raised an exception".
                log.debug("%s cancelled at stop", what)
            except Exception as exc:
                if not is_transient(exc):
                    log.debug("%s failed", what, exc_info=exc)
                outage.failed(exc)

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(run_once, "interval", seconds=seconds, next_run_time=datetime.now(UTC),
                      max_instances=1, coalesce=True, misfire_grace_time=None, id=what)
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        async with running:
            pass


async def run_loops(loops: dict[str, Coroutine[Any, Any, None]], stop: asyncio.Event,
                    grace: float = SHUTDOWN_GRACE) -> None:
    """Run the loops until `stop` is set (a signal) or one of them raises; then stop them all.

    The first error a loop raised is raised again, for the command line to report.
    """
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(body, name=name) for name, body in loops.items()]
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        _done, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            log.warning("%s did not stop within %ss: cancelled", task.get_name(), grace)
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stopping.cancel()
        for task in tasks:
            task.cancel()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
