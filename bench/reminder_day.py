"""A grid leader's day of reminders: 30 open cases, 10 of them overdue (issue 21).

Played on the harness (the real App: Dispatcher, sweep, reminder lists and sender, on the
in-process fake Bot API) with its clock, so a day takes seconds and repeats exactly:

- 10 cases (市政设施, 72 h) reported three days before the day: overdue when it begins;
- 20 more reported through the two days before, of four categories (环境卫生 48 h, 治安隐患
  24 h, 市政设施 72 h, 矛盾纠纷 7 d), a few minutes apart, so that their due-soon moments and
  deadlines fall all over the day, some not at all;
- every case confirmed by its building head, so each is the grid leader's; nobody acts on
  them. Then the day, local midnight to midnight, swept every `--step` minutes.

Counted: the leader's reminder lists in each sweep and in the day, and every case that was
due soon or overdue at the leader's level during the day against the cases the lists named.
Goal: at most one list per sweep, at most 12 in the day, no case missing.

    python3 -m bench.reminder_day [--step 5]
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from bench.common import base_parser, machine, markdown_table, report, write_json
from bot.cases.deadlines import due_soon_at
from bot.cases.registry_edit import apply_registry
from bot.cases.reminders import PER_DAY
from bot.context import begin
from bot.org.registry import parse_registry
from storage.models import Case, Reminder
from tests.harness import (
    BUILDING5_CHAT,
    BUILDING_CHAT,
    HEAD,
    HEAD5,
    LEADER,
    SAMPLE,
    Harness,
    make_harness,
)

# The day: 2026-11-26, Asia/Shanghai (UTC+8).
DAY = datetime(2026, 11, 25, 16, 0, tzinfo=UTC)
START = DAY - timedelta(hours=74)
# (hours before the day, category's words, how many): reported a few minutes apart.
WAVES = (
    (74.0, "楼道灯坏了", 10),  # 市政设施 72 h: overdue from 2 h before the day
    (40.0, "垃圾没人清运", 5),  # 环境卫生 48 h: due soon before the day, red at 08:00-
    (21.0, "有陌生人撬门", 5),  # 治安隐患 24 h: due soon at 00:00-, red at 03:00-
    (30.0, "小区路灯不亮", 5),  # 市政设施 72 h: due soon in the evening
    (5.0, "楼上装修噪音扰民", 5),  # 矛盾纠纷 7 d: green all day
)
SPACING = timedelta(minutes=7)
OPENS = re.compile(r"^c1:op:(\d+):")


@dataclass
class DayResult:
    step_minutes: int
    sweeps: int = 0
    open_cases: int = 0
    overdue_at_start: int = 0
    lists: int = 0
    most_in_one_sweep: int = 0
    due_in_day: int = 0
    listed_in_day: int = 0
    missing: list[int] = field(default_factory=list)
    # The leader's reminders owed in the day: before issue 21, each was a message of its own.
    reminders_owed: int = 0
    list_times: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.most_in_one_sweep <= 1 and self.lists <= PER_DAY and not self.missing


async def _file(h: Harness, n: int, words: str) -> int:
    chat, head = (BUILDING_CHAT, HEAD) if n % 2 else (BUILDING5_CHAT, HEAD5)
    await h.say(chat, 5_560_000 + n, f"/report {words}（第{n}处）")
    case = (await h.cases())[-1]
    await h.press(head, h.card(head, case.id), "✅ 属实")
    return case.id


def _listed(h: Harness, since: int) -> list[tuple[int, set[int]]]:
    """The leader's lists after the `since`th message: (its index, the cases it names)."""
    found = []
    for i, sent in enumerate(h.api.to(LEADER)[since:], start=since):
        cases = {int(m.group(1)) for row in sent.buttons for b in row
                 if (m := OPENS.match(str(b.get("callback_data", ""))))}
        if cases:
            found.append((i, cases))
    return found


async def _due_in_day(h: Harness, end: datetime) -> set[int]:
    """Cases at the grid that were due soon or overdue at some moment of the day."""
    due = set()
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        for case in (await db.scalars(select(Case))).all():
            soon = due_soon_at(case, tx.policy)
            if case.deadline_at < end or (soon is not None and soon < end):
                due.add(case.id)
    return due


async def play_day(folder: Path, step_minutes: int = 5) -> DayResult:
    h = await make_harness(folder, start=START)
    result = DayResult(step_minutes)
    try:
        # Same category, same building, within days: not 是同一问题 here, on purpose.
        text = SAMPLE.read_text("utf-8").replace("duplicate_window: 3d", "duplicate_window: null")
        async with h.app.sessions() as db:
            await apply_registry(db, parse_registry(text), h.clock)
        n = 0
        for hours, words, count in sorted(WAVES, key=lambda w: -w[0]):
            at = DAY - timedelta(hours=hours)
            if at > h.clock.now():
                await h.advance(at - h.clock.now())
            for _ in range(count):
                n += 1
                await _file(h, n, words)
                await h.advance(SPACING)
        if h.clock.now() < DAY:
            await h.advance(DAY - h.clock.now())
        cases = await h.cases()
        result.open_cases = sum(1 for c in cases if c.status in ("open", "accepted"))
        result.overdue_at_start = sum(1 for c in cases if c.deadline_at <= h.clock.now())
        before = len(h.api.to(LEADER))
        end = DAY + timedelta(days=1)
        step = timedelta(minutes=step_minutes)
        while h.clock.now() + step < end:
            mark = len(h.api.to(LEADER))
            await h.advance(step)
            result.sweeps += 1
            new = len(_listed(h, mark))
            result.most_in_one_sweep = max(result.most_in_one_sweep, new)
            if new:
                local = h.clock.now() + timedelta(hours=8)
                result.list_times.append(local.strftime("%H:%M"))
        lists = _listed(h, before)
        result.lists = len(lists)
        named = set().union(*(cases for _, cases in lists)) if lists else set()
        due = await _due_in_day(h, end)
        result.due_in_day = len(due)
        result.listed_in_day = len(due & named)
        result.missing = sorted(due - named)
        async with h.app.sessions() as db:
            result.reminders_owed = int(await db.scalar(
                select(func.count()).select_from(Reminder).where(
                    Reminder.person_id == LEADER, Reminder.created_at >= DAY,
                    Reminder.created_at < end)) or 0)
        return result
    finally:
        await h.app.close()


async def run(step_minutes: int) -> DayResult:
    folder = Path(tempfile.mkdtemp(prefix="gridbot-reminder-day-"))
    try:
        return await play_day(folder, step_minutes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--step", type=int, default=5, help="minutes between sweeps")
    args = ap.parse_args()
    r = asyncio.run(run(args.step))
    table = markdown_table([{
        "open cases": r.open_cases, "overdue at 00:00": r.overdue_at_start,
        "sweeps": r.sweeps, "lists in the day": r.lists,
        "most lists in one sweep": r.most_in_one_sweep,
        "cases due or overdue in the day": r.due_in_day,
        "of them on a list": r.listed_in_day,
        "reminders owed (one message each before)": r.reminders_owed,
    }], ["open cases", "overdue at 00:00", "sweeps", "lists in the day",
         "most lists in one sweep", "cases due or overdue in the day", "of them on a list",
         "reminders owed (one message each before)"])
    report("A grid leader's day of reminders (harness clock)", table, [
        f"Lists went out at (local time): {', '.join(r.list_times) or 'none'}.",
        f"Goal: at most one list per sweep, at most {PER_DAY} in the day, every case due or "
        f"overdue on one: {'met' if r.met else 'NOT met'}"
        + (f" (missing: {r.missing})" if r.missing else "") + ".",
        "Before issue 21 each reminder owed was a message of its own.",
    ], machine())
    write_json(args.json_path, asdict(r))


if __name__ == "__main__":
    main()
