"""Loading a care roster (走访): a district's Excel of 2,000 households, imported, and again.

Issue 22 asks that a roster of 2,000 households import from Excel in a few seconds, with every
row checked (the building in the registry, the kind, the interval, the phone number) before
anything is written, in one transaction. Per size (200 households at `tiny`, 2,000 at `small`
and `full`), on the sample registry with its buildings, opened by the real App:

- `first`: `gridbot care import` of a new roster (every household inserted);
- `again`: the same file again (every household read, compared, unchanged);
- `changed`: a tenth of the households with another interval, a tenth left out (made
  inactive);
- `export`: `gridbot care export` of the roster and its (no) visits.

Each time is the whole import as the CLI runs it: reading the xlsx (openpyxl, read-only),
checking the rows, writing and committing. The goal: 2,000 households in under 5 s.

    python3 -m bench.care_import --size small [--database-url postgresql+asyncpg://…]
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from bench.common import base_parser, machine, markdown_table, report, write_json
from bench.sweep import open_app
from bot.cases.registry_edit import apply_registry
from bot.clock import ManualClock
from bot.org.registry import parse_registry
from bot.rounds.care_roster import import_roster, write_roster
from tests.harness import MORNING, SAMPLE, empty_database

SIZE = {"tiny": 200, "small": 2000, "full": 2000}
GOAL_SECONDS = 5.0
HEADERS = ["楼栋", "单元", "门牌号", "姓名", "类别", "走访周期", "联系电话", "备注"]
KINDS = ("独居老人", "残疾人", "困难家庭", "留守儿童")
BUILDINGS = ("BSY-01-03", "BSY-01-05", "BSY-02-12")


def roster(path: Path, count: int, *, changed: bool = False) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["柏树郢社区重点关爱对象走访名单"])
    sheet.append(HEADERS)
    for i in range(count):
        if changed and i % 10 == 9:
            continue  # left out: made inactive
        interval = ("1m", "每周", "3m", "2w")[i % 4]
        if changed and i % 10 == 0:
            interval = "每季度"
        sheet.append([BUILDINGS[i % 3], str(i % 6 + 1), str(1000 + i), f"居民{i}",
                      KINDS[i % 4], interval, f"138{i:08d}" if i % 5 == 0 else None,
                      "行动不便" if i % 7 == 0 else None])
    book.save(path)
    return path


async def run(size: str, seed: int, url: str | None) -> list[dict[str, Any]]:
    del seed  # the roster is the same every run
    folder = Path(tempfile.mkdtemp(prefix="gridbot-care-"))
    try:
        if url:
            await empty_database(url)
        clock = ManualClock(MORNING)
        app = await open_app(url or f"sqlite+aiosqlite:///{folder / 'care.db'}", clock)
        try:
            async with app.sessions() as db:
                await apply_registry(db, parse_registry(SAMPLE.read_text("utf-8")), clock)
            count = SIZE[size]
            first = roster(folder / "first.xlsx", count)
            changed = roster(folder / "changed.xlsx", count, changed=True)
            results = []
            for mode, path in (("first", first), ("again", first), ("changed", changed)):
                started = time.perf_counter()
                async with app.sessions() as db:
                    done = await import_roster(db, path, clock.now())
                took = time.perf_counter() - started
                results.append({"mode": mode, "households": done.rows, "added": done.added,
                                "updated": done.updated, "inactive": len(done.deactivated),
                                "seconds": round(took, 2)})
            started = time.perf_counter()
            async with app.sessions() as db:
                written = await write_roster(db, io.BytesIO())
            results.append({"mode": "export", "households": written, "added": 0, "updated": 0,
                            "inactive": 0,
                            "seconds": round(time.perf_counter() - started, 2)})
            return results
        finally:
            await app.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = base_parser(__doc__.split("\n")[0])
    args = ap.parse_args()
    results = asyncio.run(run(args.size, args.seed, args.database_url))
    where = "PostgreSQL" if args.database_url else "SQLite"
    table = markdown_table(results, ["mode", "households", "added", "updated", "inactive",
                                     "seconds"])
    first = results[0]["seconds"]
    report(f"Care roster import ({SIZE[args.size]:,} households, {where})", table, [
        f"Goal: {SIZE[args.size]:,} households imported in under {GOAL_SECONDS:.0f} s: "
        f"{'met' if first < GOAL_SECONDS else 'NOT met'} ({first:.2f} s).",
        "`again`: the same file, every household compared and unchanged; `changed`: a tenth "
        "with another interval, a tenth left out (made inactive).",
    ], machine())
    write_json(args.json_path, results)


if __name__ == "__main__":
    main()
