"""Writes during an export: a resident's report is answered while a 20,000-case 台账 is written.

Issue 19 found that `/export` and `gridbot export` held SQLite's write lock for their whole
run (every transaction began IMMEDIATE): a report made meanwhile waited for the export. The
product now reads in read transactions (`storage.db.reading`). Per mode, on a generated
database (bench.gen, 20,000 cases at `--size full`, 1,000 at `tiny`), opened by the real App:

- `alone`: reports fed one after another through the real Dispatcher with nothing else
  running: the usual time to handle a report;
- `read` (the product): the same reports while the month's 台账 (xlsx) is written in a read
  transaction, as `/export` does;
- `write` (before the fix): the same export in an ordinary (write) transaction.

Each report's time is from feeding its update to the handler's return (what a resident waits
for the acknowledgement to be written). The goal: during an export, a report within the usual
time (`read` median within 2× `alone` and no report slower than 1 s).

    python3 -m bench.export_writes --size full [--database-url postgresql+asyncpg://…]
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from bench.common import base_parser, machine, markdown_table, percentile, report, write_json
from bench.gen import NOW, generate
from bench.sweep import open_app
from bot.app import App
from bot.clock import ManualClock
from bot.ledger.definitions import Period
from bot.ledger.export import write_ledger
from storage.db import reading
from tests.e2e import building_chat, report_update, resident

SIZE = {"tiny": 1_000, "small": 20_000, "full": 20_000}
REPORTS = 12
TIMEZONE = "Asia/Shanghai"


async def _reports(app: App, first_id: int, grid: int) -> list[float]:
    """REPORTS reports, one after another (a pause between, as people type): ms each."""
    took: list[float] = []
    for n in range(REPORTS):
        update = {"update_id": first_id + n, **report_update(
            building_chat(grid), resident(grid, 500 + n), f"楼道灯不亮了，第{n}处",
            first_id + n)}
        t0 = time.perf_counter()
        await app.dp.feed_raw_update(app.bot, update)
        took.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.05)
    return took


async def _export(db: AsyncSession, period: Period) -> tuple[int, float]:
    t0 = time.perf_counter()
    rows = await write_ledger(db, period, None, io.BytesIO(), "xlsx", "zh_CN", now=NOW)
    await db.commit()  # as /export did: its transaction ends with the export
    return rows, time.perf_counter() - t0


async def _mode(app: App, mode: str, period: Period, first_id: int, grid: int
                ) -> dict[str, Any]:
    if mode == "alone":
        took = await _reports(app, first_id, grid)
        rows, seconds = 0, 0.0
    else:
        async with app.sessions() as db:
            if mode == "read":
                async with reading(db) as read:
                    export = asyncio.create_task(_export(read, period))
                    await asyncio.sleep(0.2)  # the export is under way
                    took = await _reports(app, first_id, grid)
                    rows, seconds = await export
            else:
                export = asyncio.create_task(_export(db, period))
                await asyncio.sleep(0.2)
                took = await _reports(app, first_id, grid)
                rows, seconds = await export
    return {"mode": mode, "reports": len(took),
            "median_ms": round(statistics.median(took), 1),
            "p90_ms": round(percentile(took, 90), 1), "max_ms": round(max(took), 1),
            "export_rows": rows, "export_s": round(seconds, 1)}


async def run(size: str, seed: int, url: str | None) -> list[dict[str, Any]]:
    n = SIZE[size]
    generated = await generate(n, seed, url)
    work = Path(tempfile.mkdtemp(prefix="gridbot-export-bench-"))
    try:
        if url is None:  # a copy of the cached file: the reports do not change the cache
            path = work / "db.sqlite"
            shutil.copyfile(make_url(generated.url).database or "", path)
            url = f"sqlite+aiosqlite:///{path}"
        app = await open_app(url, ManualClock(NOW))
        try:
            period = Period.month_of(NOW, TIMEZONE).previous_month()
            results = []
            for i, mode in enumerate(("alone", "read", "write", "alone")):
                results.append(await _mode(app, mode, period, 98_000_000 + 100 * i, 1 + i))
            return results
        finally:
            await app.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = base_parser(__doc__.split("\n")[0])
    args = ap.parse_args()
    results = asyncio.run(run(args.size, args.seed, args.database_url))
    alone = statistics.median(r["median_ms"] for r in results if r["mode"] == "alone")
    read = next(r for r in results if r["mode"] == "read")
    met = read["median_ms"] <= 2 * alone and read["max_ms"] <= 1000
    table = markdown_table(results, ["mode", "reports", "median_ms", "p90_ms", "max_ms",
                                     "export_rows", "export_s"])
    where = "PostgreSQL" if args.database_url else "SQLite"
    report(f"Reports during an export ({SIZE[args.size]:,} cases, {where})", table, [
        f"Goal: a report during an export within the usual time (read median ≤ 2 × alone "
        f"{alone:.1f} ms, none over 1 s): {'met' if met else 'NOT met'}.",
        "`write` is the export in an ordinary transaction, as before issue 19.",
    ], machine())
    write_json(args.json_path, results)


if __name__ == "__main__":
    main()
