"""The periodic loops' runner (bot/telegram/polling.py): stopping mid-run is not an error."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.telegram.polling import every


async def test_a_sweep_cancelled_at_stop_is_not_logged_as_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()

    async def long_sweep() -> None:
        started.set()
        await asyncio.sleep(3600)

    stop = asyncio.Event()
    with caplog.at_level(logging.DEBUG):
        loop_task = asyncio.create_task(every(60, long_sweep, stop, "the sweep"))
        await asyncio.wait_for(started.wait(), 5)
        stop.set()
        await asyncio.sleep(0.05)
        loop_task.cancel()  # what run_loops does once its grace is over
        # ... and what the end of asyncio.run does to the job APScheduler still runs.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "the sweep cancelled at stop" in caplog.text
