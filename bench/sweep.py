"""Sweep benchmark: one sweep with nothing due, and with ~1,000 reminders due, per size.

For each size a generated database (bench.gen) is opened by the real App (`build_app`, a fake
in-process Bot API, a manual clock at gen.NOW) and timed:
- `sweep` nothing due: `bot.cases.sweep.sweep(sessions, ctx)` at NOW (no open case is due), many
  times; also the whole `App.sweep()` (plus inbox and outbox pruning and the heartbeat).
- 1,000 due: the clock is moved to the next check of the 1,000th open case (so exactly ~1,000
  cases have a timer step due, nearly all reminders), then sweeps run until nothing is due
  ("drain"); the first sweep is timed alone too (the product takes at most 200 cases a sweep).
  After each repetition the cases, timer steps, events and outbox rows are put back as they were.
SQLite: each run works on a copy of the cached generated file. PostgreSQL: `--database-url`
(the database is emptied and generated into; kept between runs while it holds the same size).

`python3 -m bench.sweep --size small [--database-url postgresql+asyncpg://…] [--json out.json]`
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, event, func, select, update
from sqlalchemy.engine import make_url

from bench.common import base_parser, machine, markdown_table, percentile, report, write_json
from bench.gen import NOW, SIZES, generate
from bot.app import App, build_app
from bot.cases.lifecycle import due_cases
from bot.cases.sweep import sweep
from bot.clock import ManualClock
from bot.config import Settings
from bot.context import begin
from bot.telegram.fake import FakeTelegram
from bot.telegram.ratelimit import Limits
from storage.models import Case, CaseEvent, CaseTimerStep, Outbox

REPS = {"tiny": (20, 2), "small": (100, 3), "full": (200, 3)}  # nothing-due, due
DUE = {"tiny": 50, "small": 1000, "full": 1000}


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds * 1000)

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {"median_ms": statistics.median(s) if s else 0.0,
                "p90_ms": percentile(s, 90), "min_ms": min(s, default=0.0), "n": len(s)}


async def open_app(url: str, clock: ManualClock) -> App:
    settings = Settings(database_url=url, bot_token=None, _env_file=None)  # type: ignore[call-arg]
    app = await build_app(settings, clock=clock, session=FakeTelegram(),
                          limits=Limits.unlimited())
    await app.identify()
    return app


class StatementCounter:
    def __init__(self, app: App) -> None:
        self.count = 0
        event.listen(app.engine.sync_engine, "before_cursor_execute", self._on)

    def _on(self, *_: Any) -> None:
        self.count += 1


async def timed(fn: Callable[[], Awaitable[Any]], reps: int, t: Timing) -> None:
    for _ in range(reps):
        t0 = time.perf_counter()
        await fn()
        t.add(time.perf_counter() - t0)


async def _due_moment(app: App, due: int) -> tuple[datetime, int]:
    async with app.sessions() as db:
        when = await db.scalar(select(Case.next_check_at).where(Case.next_check_at.is_not(None))
                               .order_by(Case.next_check_at).offset(due - 1).limit(1))
        if when is None:
            when = await db.scalar(select(func.max(Case.next_check_at)))
        assert when is not None
        count = await db.scalar(select(func.count()).select_from(Case)
                                .where(Case.next_check_at <= when))
    return when, int(count or 0)


class Restore:
    """Keeps the due cases and the newest ids, and puts them back after a sweep changed them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.top: dict[Any, int] = {}

    async def keep(self, app: App, when: datetime) -> None:
        table = Case.__table__
        async with app.engine.connect() as conn:
            result = await conn.execute(select(table).where(table.c.next_check_at <= when))
            self.rows = [dict(r._mapping) for r in result]
            for model in (CaseTimerStep, CaseEvent, Outbox):
                self.top[model] = int(await conn.scalar(select(func.max(model.id))) or 0)
            await conn.rollback()

    async def put_back(self, app: App) -> None:
        table = Case.__table__
        cols = [c.name for c in table.columns if c.name != "id"]
        async with app.engine.begin() as conn:
            for model, top in self.top.items():
                await conn.execute(delete(model).where(model.id > top))
            stmt = (update(table).where(table.c.id == bindparam("_id"))
                    .values({c: bindparam(f"_{c}") for c in cols}))
            await conn.execute(stmt, [{"_id": r["id"], **{f"_{c}": r[c] for c in cols}}
                                      for r in self.rows])


async def bench_size(n: int, size: str, seed: int, url: str | None, work: Path
                     ) -> dict[str, Any]:
    g = await generate(n, seed, url)
    if url is None:
        src = Path(make_url(g.url).database or "")
        dst = work / f"sweep-{n}.db"
        shutil.copy(src, dst)
        run_url = f"sqlite+aiosqlite:///{dst}"
    else:
        run_url = url
    clock = ManualClock(NOW)
    app = await open_app(run_url, clock)
    counter = StatementCounter(app)
    reps, due_reps = REPS[size]
    out: dict[str, Any] = {"cases": n, "database": app.engine.dialect.name,
                           "generated_s": round(g.seconds, 1), "cached": g.cached}
    try:
        async with app.sessions() as db:
            assert not await due_cases(await begin(db, app.ctx)), "something due at NOW"
        # warm-up: caches, connections, the first prune and heartbeat
        for _ in range(3):
            await app.sweep()
        idle, whole = Timing(), Timing()
        c0 = counter.count
        await timed(lambda: sweep(app.sessions, app.ctx), reps, idle)
        out["statements_per_idle_sweep"] = (counter.count - c0) / reps
        await timed(app.sweep, reps, whole)
        out["idle"] = idle.summary()
        out["idle_app_sweep"] = whole.summary()

        when, due = await _due_moment(app, DUE[size])
        out["due_cases"] = due
        restore = Restore()
        await restore.keep(app, when)
        first, drain = Timing(), Timing()
        sweeps = steps = 0
        for _ in range(due_reps):
            clock.set(when)
            t0 = time.perf_counter()
            s = await sweep(app.sessions, app.ctx)
            first.add(time.perf_counter() - t0)
            sweeps, steps = 1, s
            while s:
                s = await sweep(app.sessions, app.ctx)
                steps += s
                sweeps += 1
            drain.add(time.perf_counter() - t0)
            clock.set(NOW)
            await restore.put_back(app)
        out["due_first_sweep"] = first.summary()
        out["due_drain"] = drain.summary()
        out["due_sweeps_to_drain"] = sweeps
        out["due_steps"] = steps
    finally:
        await app.close()
    return out


async def run(size: str, seed: int, url: str | None) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory(prefix="gridbot-sweep-") as tmp:
        for n in SIZES[size]:
            results.append(await bench_size(n, size, seed, url, Path(tmp)))
            Path(tmp, f"sweep-{n}.db").unlink(missing_ok=True)
    return results


def goals(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    small, big = results[0], results[-1]
    big_ms = big["idle"]["median_ms"]
    ratio = big_ms / small["idle"]["median_ms"] if small["idle"]["median_ms"] else None
    return [
        {"goal": f"nothing-due sweep at {big['cases']:,} cases", "measured": f"{big_ms:.2f} ms",
         "target": "< 10 ms", "met": big_ms < 10},
        {"goal": f"flat: {big['cases']:,} ÷ {small['cases']:,}",
         "measured": f"{ratio:.2f}×" if ratio else "–", "target": "≤ 2×",
         "met": ratio is not None and ratio <= 2},
    ]


def main() -> None:
    ap = base_parser("Sweep benchmark")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bot.cases.sweep").setLevel(logging.WARNING)
    results = asyncio.run(run(args.size, args.seed, args.database_url))
    rows = []
    for r in results:
        rows.append({
            "cases": f"{r['cases']:,}", "db": r["database"],
            "idle median ms": r["idle"]["median_ms"], "idle p90 ms": r["idle"]["p90_ms"],
            "App.sweep median ms": r["idle_app_sweep"]["median_ms"],
            "stmts/idle sweep": r["statements_per_idle_sweep"],
            "due cases": r["due_cases"], "1st due sweep median ms":
                r["due_first_sweep"]["median_ms"],
            "drain median ms": r["due_drain"]["median_ms"],
            "drain p90 ms": r["due_drain"]["p90_ms"],
            "sweeps to drain": r["due_sweeps_to_drain"], "steps": r["due_steps"],
        })
    g = goals(results)
    table = markdown_table(rows, list(rows[0]))
    table += "\n\n" + markdown_table(g, ["goal", "measured", "target", "met"])
    report(f"Sweep ({args.size})", table, [
        f"Command: python3 -m bench.sweep --size {args.size}"
        + (" --database-url …" if args.database_url else ""),
        "idle = bot.cases.sweep.sweep with nothing due; App.sweep adds pruning and the heartbeat; "
        "drain = sweeps until nothing is due (the product takes ≤ 200 cases per sweep)."])
    write_json(args.json_path, {"machine": machine(), "size": args.size, "results": results,
                                "goals": g})


if __name__ == "__main__":
    main()
