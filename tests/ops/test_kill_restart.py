"""Kill a real `gridbot run` process (SIGKILL) again and again during a busy scenario.

Every report sent to it must become exactly one case, albums included, and every message it
owes must be delivered; a crash may repeat at most the one message it was sending.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import (
    TOKEN,
    Reader,
    ReportStream,
    wait_for,
    write_registry,
)
from tests.fakeserver import FakeBotApi
from tests.harness import fresh_database

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
GRIDS = 5
KILLS = 6


class Bot:
    """The `gridbot run` process."""

    def __init__(self, tmp: Path, url: str, database: str, registry: Path) -> None:
        self.reader = Reader(database)
        self.env = {**os.environ, "GRIDBOT_BOT_TOKEN": TOKEN, "GRIDBOT_API_URL": url,
                    "GRIDBOT_DATABASE_URL": database,
                    "GRIDBOT_SWEEP_SECONDS": "1", "PYTHONPATH": str(ROOT)}
        self.registry = registry
        self.tmp = tmp
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--registry", str(self.registry),
            cwd=self.tmp, env=self.env, stdout=asyncio.subprocess.DEVNULL,
            stderr=open(self.tmp / "bot.log", "ab"))  # noqa: SIM115 - closed with the process

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=30)

    async def query(self, sql: str) -> list[tuple[object, ...]]:
        return await self.reader.look(sql)


async def test_sigkill_during_busy_scenario_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(11)
    server = FakeBotApi()
    url = await server.start()
    bot = Bot(tmp_path, url, await fresh_database(tmp_path, "kill.db"),
              write_registry(tmp_path / "district.yaml", GRIDS))
    stream = ReportStream(server, GRIDS)

    try:
        stream.push_reports(20)
        stream.push_album()
        for _ in range(KILLS):
            await bot.start()
            await asyncio.sleep(rng.uniform(1.5, 3.5))
            stream.push_reports(8)
            stream.push_album()
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            await bot.kill()
        stream.push_reports(5)
        await bot.start()

        async def done() -> bool:
            cases = await bot.query("SELECT count(*) FROM cases")
            pending = await bot.query("SELECT count(*) FROM outbox WHERE status = 'pending'")
            parts = await bot.query("SELECT count(*) FROM pending_photos")
            return (bool(cases) and cases[0][0] == stream.cases and bool(pending)
                    and pending[0][0] == 0 and bool(parts) and parts[0][0] == 0
                    and server.unconfirmed == 0)

        await wait_for(done, 180, "every report handled and every message delivered")
        assert await bot.stop() == 0  # SIGTERM stops it cleanly

        # Exactly one case per report, with every album photo.
        descriptions = Counter(d for (d,) in await bot.query("SELECT description FROM cases"))
        assert len(descriptions) == stream.cases
        assert set(descriptions.values()) == {1}
        photos = await bot.query("SELECT c.description, count(p.id) FROM cases c "
                           "JOIN case_photos p ON p.case_id = c.id GROUP BY c.id")
        assert len(photos) == stream.albums and all(n == 3 for _, n in photos)
        # Every owed message reached its chat; a kill repeated at most one message.
        rows = await bot.query("SELECT chat_id, text, status FROM outbox")
        assert rows and {status for _, _, status in rows} <= {"sent"}
        received = Counter((r.chat_id, r.text) for r in server.received if r.text)
        missing = [(c, t) for c, t, _ in rows if received[(c, t)] == 0]
        assert not missing, missing[:3]
        repeats = sum(n - 1 for n in received.values() if n > 1)
        assert repeats <= KILLS
        # Each acknowledgement carries its case number, once per case.
        acks = [t for (_, t) in received if "已收到您的诉求" in t]
        assert len(acks) == stream.cases
    finally:
        import json
        (tmp_path / "server.json").write_text(json.dumps({
            "violations": server.limit_violations[:50],
            "calls": [(t, m, c) for t, m, c in server.call_times if m.startswith("send")]}))
        if bot.proc is not None and bot.proc.returncode is None:
            await bot.kill()
        await bot.reader.close()
        await server.stop()
