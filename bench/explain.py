"""EXPLAIN every statement a sweep, a tick and one group report run, on a big database.

The real statements are captured with a SQLAlchemy `before_cursor_execute` listener while the
real App (`build_app`, a fake in-process Bot API, a manual clock at gen.NOW) runs:
- `App.sweep()` with nothing due, and `bot.cases.sweep.sweep` with timer steps due;
- `App.tick()` (albums: `bot.cases.albums.finish_albums`);
- one `/report` in a building group from a resident with earlier cases, through the
  Dispatcher, and the outbox delivery of what it made owed.
Each distinct statement is then explained with its own parameters (SQLite: EXPLAIN QUERY
PLAN; PostgreSQL: EXPLAIN) and a full scan of a big table (cases, case_events, outbox, inbox,
people, case_timer_steps, case_photos) is flagged. The time each statement took when it ran
is shown beside it (the slowest of its runs).

`python3 -m bench.explain --size small [--database-url …] [--json out.json]` (the largest
database of the size: tiny 1k, small 100k, full 1M cases).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from bench.common import base_parser, machine, markdown_table, report, write_json
from bench.gen import NOW, SIZES, generate
from bench.sweep import open_app
from bot.app import PERIODIC, App
from bot.cases.sweep import sweep
from bot.clock import ManualClock
from tests.e2e import building_chat, report_update, resident

BIG = ("cases", "case_events", "outbox", "inbox", "people", "case_timer_steps", "case_photos")
SKIP = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA|SELECT pg_|"
                  r"SHOW|select pg_|select current_schema|SET )", re.I)


@dataclass
class Statement:
    sql: str
    params: Any
    phases: set[str] = field(default_factory=set)
    runs: int = 0
    max_ms: float = 0.0
    plan: list[str] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)
    small_scans: list[str] = field(default_factory=list)


class Capture:
    def __init__(self, app: App) -> None:
        self.phase = "setup"
        self.seen: dict[str, Statement] = {}
        self._t0 = 0.0
        engine = app.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        self._t0 = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        ms = (time.perf_counter() - self._t0) * 1000
        if self.phase == "setup" or SKIP.match(statement):
            return
        params = parameters[0] if executemany and parameters else parameters
        st = self.seen.setdefault(statement, Statement(statement, params))
        st.phases.add(self.phase)
        st.runs += 1
        st.max_ms = max(st.max_ms, ms)


def _sqlite_scans(plan: list[str]) -> list[str]:
    out = []
    for line in plan:
        m = re.search(r"\bSCAN (\w+)( USING (COVERING )?INDEX (\w+))?", line)
        if m and m.group(1) in BIG:
            out.append(f"{m.group(1)} (whole index {m.group(4)})" if m.group(2)
                       else m.group(1))
    return out


# A scan of a table this small is the planner's right choice, not a missing index.
SMALL = 10_000


def _flag(st: Statement, scanned: list[str], rows: dict[str, int]) -> None:
    st.scans = [s for s in scanned if rows.get(s.split()[0], 0) >= SMALL]
    st.small_scans = [f"{s} ({rows.get(s.split()[0], 0)} rows)" for s in scanned
                      if rows.get(s.split()[0], 0) < SMALL]


def explain_sqlite(path: Path, statements: list[Statement]) -> None:
    conn = sqlite3.connect(path)
    try:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in BIG}
        for st in statements:
            try:
                rows = conn.execute(f"EXPLAIN QUERY PLAN {st.sql}", st.params or ()).fetchall()
                st.plan = [r[-1] for r in rows]
            except sqlite3.Error as exc:
                st.plan = [f"(cannot explain: {exc})"]
            _flag(st, _sqlite_scans(st.plan), rows)
    finally:
        conn.close()


async def explain_pg(url: str, statements: list[Statement]) -> None:
    import asyncpg  # type: ignore[import-untyped]

    u = make_url(url)
    conn = await asyncpg.connect(user=u.username, password=u.password, host=u.host,
                                 port=u.port, database=u.database)
    try:
        counts = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in BIG}
        for st in statements:
            try:
                plan = await conn.fetch(f"EXPLAIN {st.sql}", *(st.params or ()))
                st.plan = [r[0] for r in plan]
            except Exception as exc:
                st.plan = [f"(cannot explain: {type(exc).__name__}: {exc})"]
            _flag(st, sorted({m.group(1) for line in st.plan
                              if (m := re.search(r"Seq Scan on (\w+)", line))
                              and m.group(1) in BIG}), counts)
    finally:
        await conn.close()


async def capture(url: str) -> tuple[App, Capture]:
    clock = ManualClock(NOW)
    app = await open_app(url, clock)
    cap = Capture(app)
    await app.sweep()  # first-run work (heartbeat row, connections) out of the way
    cap.phase = "sweep"
    await app.sweep()
    cap.phase = "tick"
    await app.tick()
    cap.phase = "report"
    # A resident of grid 3 who reported before: the flood check counts their cases.
    await app.dp.feed_raw_update(app.bot, {"update_id": 99_000_001, **report_update(
        building_chat(3), resident(3, 1), "楼道灯坏了，晚上很黑", 990_001)})
    cap.phase = "deliver"
    while await app.delivery.flush():
        pass
    cap.phase = "sweep-due"
    clock.advance(timedelta(days=2))  # reminders and more fall due
    await sweep(app.sessions, app.ctx, PERIODIC)
    cap.phase = "setup"
    return app, cap


def shorten(sql: str, width: int = 110) -> str:
    s = re.sub(r"\s+", " ", sql).strip()
    s = re.sub(r"SELECT .{60,}? FROM", lambda m: m.group(0)[:40] + " … FROM", s)
    return s if len(s) <= width else s[:width - 1] + "…"


async def run(size: str, seed: int, url: str | None) -> dict[str, Any]:
    n = SIZES[size][-1]
    g = await generate(n, seed, url)
    with tempfile.TemporaryDirectory(prefix="gridbot-explain-") as tmp:
        if url is None:
            path = Path(tmp) / "explain.db"
            shutil.copy(make_url(g.url).database or "", path)
            run_url = f"sqlite+aiosqlite:///{path}"
        else:
            run_url = url
        app, cap = await capture(run_url)
        await app.close()
        statements = list(cap.seen.values())
        if url is None:
            explain_sqlite(path, statements)
        else:
            await explain_pg(url, statements)
    rows = [{"phase": ",".join(sorted(st.phases)), "runs": st.runs,
             "max ms": round(st.max_ms, 2), "statement": st.sql,
             "plan": st.plan, "full scan of a big table": st.scans,
             "scan of a small table": st.small_scans} for st in statements]
    return {"cases": n, "database": "sqlite" if url is None else "postgresql",
            "statements": rows}


def main() -> None:
    ap = base_parser("EXPLAIN the per-sweep, per-tick and per-report statements")
    args = ap.parse_args()
    out = asyncio.run(run(args.size, args.seed, args.database_url))
    table_rows = []
    for r in sorted(out["statements"], key=lambda r: (not r["full scan of a big table"],
                                                       -r["max ms"])):
        table_rows.append({
            "phase": r["phase"], "max ms": r["max ms"], "statement": shorten(r["statement"]),
            "plan": shorten(" / ".join(r["plan"]), 140),
            "index or SCAN": ("**SCAN " + ", ".join(r["full scan of a big table"]) + "**")
            if r["full scan of a big table"] else
            ("scan of a small table: " + ", ".join(r["scan of a small table"])
             if r["scan of a small table"] else "index")})
    scans = [r for r in out["statements"] if r["full scan of a big table"]]
    notes = [f"Command: python3 -m bench.explain --size {args.size}"
             + (" --database-url …" if args.database_url else ""),
             f"{len(out['statements'])} distinct statements; {len(scans)} scan a big table "
             f"at {out['cases']:,} cases ({out['database']})."]
    report(f"EXPLAIN at {out['cases']:,} cases ({out['database']})",
           markdown_table(table_rows, ["phase", "max ms", "statement", "plan",
                                       "index or SCAN"]), notes)
    write_json(args.json_path, {"machine": machine(), "size": args.size, **out})


if __name__ == "__main__":
    main()
