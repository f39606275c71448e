"""The daily digest and the monthly score (issue 10): sent at the registry's local time,
once per day (month) whatever the number of workers and restarts, with the right content.
Through the real app: the clock moves and the sweep runs; cases are written as the domain
leaves them (`next_check_at` None, so the sweep does not change them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, select

from bot.cases.deadlines import light
from bot.cases.registry_edit import apply_registry
from bot.context import begin
from bot.ledger import digest
from bot.ledger.figures import Weights, score
from bot.org.registry import parse_registry
from storage.models import Case, CaseEvent, Node, PeriodicRun
from tests.figures_month import BREAKDOWNS, fill_month
from tests.harness import (
    COMMUNITY_SUP,
    LEADER,
    LEADER2,
    MEMBER,
    SAMPLE,
    STREET_SUP,
    Harness,
)
from tests.harness import make_harness as _make_harness

ZONE = ZoneInfo("Asia/Shanghai")


async def make_harness(tmp_path: Path, **kwargs: Any) -> Harness:
    """A harness whose worker sends the periodic messages (the harness may keep them off
    for the other tests)."""
    h = await _make_harness(tmp_path, **kwargs)
    h.app.ctx.extra.pop(digest.OFF, None)
    return h


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE).astimezone(UTC)


def digests(h: Harness, chat: int, word: str = "早上好") -> list[str]:
    return [t for t in h.texts(chat) if word in t]


async def load(h: Harness, *changes: tuple[str, str]) -> None:
    text = SAMPLE.read_text("utf-8")
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)


def policy(line: str) -> tuple[str, str]:
    return ("policy:\n", f"policy:\n  {line}\n")


async def add_case(h: Harness, building: str, reported: datetime, deadline: datetime,
                   status: str = "accepted", category: str = "facility", **row: Any) -> int:
    async with h.app.sessions() as db:
        building_id = await db.scalar(select(Node.id).where(Node.code == building))
        case = Case(status=status, category=category, building_id=building_id,
                    reported_at=reported, clock_started_at=row.pop("clock_started_at", reported),
                    deadline_at=deadline, next_check_at=None, **row)
        db.add(case)
        await db.commit()
        return case.id


async def add_event(h: Harness, case_id: int, action: str, at: datetime,
                    from_status: str, to_status: str) -> None:
    async with h.app.sessions() as db:
        db.add(CaseEvent(case_id=case_id, at=at, action=action, from_status=from_status,
                         to_status=to_status))
        await db.commit()


@contextmanager
def statements(h: Harness) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = h.app.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def test_digest_at_local_time_once_with_its_content(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 24, 7, 0))
    try:
        # BSY-01: red (deadline yesterday), yellow and due today at 12:00, green.
        red = await add_case(h, "BSY-01-03", local(11, 20, 9), local(11, 23, 9))
        yellow = await add_case(h, "BSY-01-05", local(11, 21, 12), local(11, 24, 12),
                                category="sanitation", status="open")
        green = await add_case(h, "BSY-01-03", local(11, 23, 20), local(11, 26, 20),
                               status="verifying")
        # Rated 不满意 yesterday: reopened, its new round green.
        bad = await add_case(h, "BSY-01-03", local(11, 18, 9), local(11, 26, 15),
                             clock_started_at=local(11, 23, 15), round=2, status="open")
        await add_event(h, bad, "rework", local(11, 23, 15), "resolved", "open")
        # Not yesterday's 不满意: two days ago, and a failed check yesterday.
        old = await add_case(h, "BSY-01-05", local(11, 18, 9), local(11, 27, 9), status="open")
        await add_event(h, old, "rework", local(11, 22, 15), "resolved", "open")
        check = await add_case(h, "BSY-01-05", local(11, 18, 9), local(11, 27, 9),
                               status="open")
        await add_event(h, check, "rework", local(11, 23, 16), "checking", "open")
        # Not open: closed, suspended (paused), resolved past its deadline.
        await add_case(h, "BSY-01-03", local(11, 1, 9), local(11, 4, 9), status="closed")
        await add_case(h, "BSY-01-03", local(11, 1, 9), local(11, 4, 9), status="suspended")
        await add_case(h, "BSY-01-03", local(11, 1, 9), local(11, 4, 9), status="resolved")
        # BSY-02: two red: first in the community supervisor's ranking.
        for _ in range(2):
            await add_case(h, "BSY-02-12", local(11, 20, 9), local(11, 23, 9))

        for _ in range(3):
            await h.advance(timedelta(minutes=29))  # 07:29, 07:58, 08:27
        assert not digests(h, LEADER) and not digests(h, COMMUNITY_SUP)
        await h.advance(timedelta(minutes=3))  # 08:30
        [text] = digests(h, LEADER)
        assert "2026-11-24" in text and "柏树郢第一网格" in text
        assert "🔴 超期 1" in text and "🟡 临期 1" in text and "🟢 按期 4" in text
        assert "⏸ 挂账 1" in text
        assert "今日到期 1 件" in text and f"#{yellow} 环境卫生｜5号楼｜12:00" in text
        assert "昨日不满意 1 件" in text and f"#{bad} 市政设施｜3号楼" in text
        for other in (red, green, old, check):
            assert f"#{other} " not in text
        [text2] = digests(h, LEADER2)
        assert "🔴 超期 2" in text2 and "今日到期" not in text2
        assert not digests(h, MEMBER)  # the grid has a leader
        [sup] = digests(h, COMMUNITY_SUP)
        first, second = sup.index("1. 🔴 柏树郢第二网格"), sup.index("2. 🔴 柏树郢第一网格")
        assert first < second
        assert "在办 8 件，🔴 超期 3，🟡 临期 1，今日到期 1，昨日不满意 1" in sup
        assert not digests(h, STREET_SUP)
        # Later sweeps the same day send nothing again, and ask the database nothing.
        with statements(h) as seen:
            for _ in range(4):
                await h.advance(timedelta(hours=3))
        assert not [s for s in seen if "periodic_runs" in s]
        assert len(digests(h, LEADER)) == 1 and len(digests(h, COMMUNITY_SUP)) == 1
        # The next day at 08:30: the next digest (the red case is still red).
        await h.advance(timedelta(hours=11, minutes=59))  # 11-25 08:29
        assert len(digests(h, LEADER)) == 1
        await h.advance(timedelta(minutes=1))  # 08:30
        assert len(digests(h, LEADER)) == 2 and "2026-11-25" in digests(h, LEADER)[-1]
    finally:
        await h.app.close()


async def test_once_with_two_workers_and_a_restart(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 24, 8, 0))
    h2 = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
    try:
        h.clock.advance(timedelta(minutes=31))
        await h.app.sweep()
        with statements(h2) as seen:
            await h2.app.sweep()
            await h2.app.sweep()
        # The second worker finds the day claimed: one statement, then none.
        assert len([s for s in seen if "periodic_runs" in s]) == 1
        await h.deliver()
        await h2.deliver()
        assert len(digests(h, LEADER)) == 1 and len(digests(h, COMMUNITY_SUP)) == 1
        # The next day both sweep at the same moment: one of them sends.
        h.clock.advance(timedelta(days=1))
        await asyncio.gather(h.app.sweep(), h2.app.sweep())
        await h.deliver()
        await h2.deliver()
        assert len(digests(h, LEADER)) == 2 and len(digests(h, COMMUNITY_SUP)) == 2
        # A restart the same day sends nothing again.
        await h.app.close()
        h3 = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
        await h3.advance(timedelta(hours=1))
        await h3.app.close()
        assert len(digests(h, LEADER)) == 2
        async with h2.app.sessions() as db:
            runs = (await db.execute(select(PeriodicRun.name, PeriodicRun.period))).all()
        assert sorted(runs) == [("digest", "2026-11-24"), ("digest", "2026-11-25")]
    finally:
        await h2.app.close()


async def test_down_at_the_time_sent_on_start_past_days_never(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 24, 10, 0))
    try:
        await h.advance(timedelta(seconds=1))  # started at 10:00: today's digest now
        assert len(digests(h, LEADER)) == 1
        await h.advance(timedelta(days=3))  # stopped three days: only the 27th's
        got = digests(h, LEADER)
        assert len(got) == 2 and "2026-11-27" in got[-1]
    finally:
        await h.app.close()


async def test_digest_off_and_moved(tmp_path: Path) -> None:
    h = await make_harness(tmp_path, start=local(11, 24, 8, 0))
    try:
        await load(h, policy("digest_at: null"))
        with statements(h) as seen:
            await h.advance(timedelta(hours=3))
        assert not digests(h, LEADER) and not [s for s in seen if "periodic_runs" in s]
        await load(h, policy('digest_at: "09:15"'))
        await h.advance(timedelta(hours=20, minutes=40))  # 11-25 07:40
        await h.advance(timedelta(hours=1))  # 08:40: not yet
        assert not digests(h, LEADER)
        await h.advance(timedelta(minutes=35))  # 09:15
        assert len(digests(h, LEADER)) == 1
    finally:
        await h.app.close()


async def test_monthly_score_on_the_first_in_local_time(tmp_path: Path) -> None:
    # Digest at 07:00: 11-01 07:00 in Shanghai is 10-31 23:00 UTC, still October there.
    h = await make_harness(tmp_path, start=local(11, 1, 6, 30))
    try:
        await load(h, policy('digest_at: "07:00"'),
                   ("departments:\n", "assessment:\n  weights: {on_time: 40, closed: 30, "
                    "satisfied: 20, rework: 10}\n\ndepartments:\n"))
        async with h.app.sessions() as db:
            await fill_month(db)
        await h.advance(timedelta(minutes=29))
        assert not digests(h, COMMUNITY_SUP, "考核")
        await h.advance(timedelta(minutes=1))
        assert h.clock.now() == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
        [sup] = digests(h, COMMUNITY_SUP, "考核")
        assert "2026-10 网格考核得分" in sup
        assert "按期结案率 40，结案率 30，满意率 20，返工率扣分 10" in sup
        weights = Weights(on_time=40, closed=30, satisfied=20, rework=10)
        want = BREAKDOWNS[("2026-10", "BSY", "grid")]
        points = {code: score(fig, weights) for code, fig in want.items()}
        ranked = sorted(points, key=lambda c: -points[c])
        names = {"BSY-01": "柏树郢第一网格", "BSY-02": "柏树郢第二网格"}
        for rank, code in enumerate(ranked, 1):
            line = f"{rank}. <b>{names[code]}</b>"
            assert line in sup, (line, sup)
            assert f"{points[code]:.1f} 分" in sup
        fig1 = want["BSY-01"]
        assert (f"应结案 {fig1.due}，结案 {fig1.closed}（按期 {fig1.closed_on_time}），"
                f"返工 {fig1.reworked}，评价 {fig1.rated}") in sup
        assert "网格长 网格长甲" in sup
        [street] = digests(h, STREET_SUP, "考核")
        assert "（柏树郢社区）" in street
        assert not digests(h, LEADER, "考核")
        # Once: later sweeps, a restart, the next days.
        await h.advance(timedelta(hours=5))
        await h.app.close()
        h = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
        await h.advance(timedelta(days=1))
        assert len(digests(h, COMMUNITY_SUP, "考核")) == 1
        assert len(digests(h, STREET_SUP, "考核")) == 1
    finally:
        await h.app.close()


async def test_working_time_cases_light_as_their_cards_do(tmp_path: Path) -> None:
    """A 2wd case reported Friday 16:00 is due Tuesday 17:30. Its due-soon moment is 75% of
    the working time between (Tuesday 11:37:30), not of the clock time (Monday 17:07): at
    Tuesday's 08:30 digest it is green, as deadlines.light() and /cases show it."""
    h = await make_harness(tmp_path, start=local(11, 20, 15, 0))
    try:
        await load(h, ("sla: 72h}", "sla: 2wd}"))
        case = await h.report_in_group("3单元楼道灯坏了")  # "other", now 2wd
        h.clock.set(local(11, 20, 16, 0))
        async with h.app.sessions() as db:
            row = await db.get(Case, case.id)
            assert row is not None
            row.status, row.next_check_at = "accepted", None
            row.reported_at = row.clock_started_at = local(11, 20, 16, 0)
            row.deadline_at = local(11, 24, 17, 30)
            await db.commit()
        await h.advance(local(11, 24, 8, 30) - h.clock.now())
        [text] = digests(h, LEADER)
        assert "🟡 临期 0" in text and "🟢 按期 1" in text, text
        async with h.app.sessions() as db:
            row = await db.get(Case, case.id)
            assert row is not None
            assert light(row, (await begin(db, h.app.ctx)).policy, h.clock.now()) == "green"
    finally:
        await h.app.close()
