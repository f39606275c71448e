"""The rounds' figures (issue 22, point 4): patrols, care visits and campaigns per grid and
period, rolled up, in /stats, `gridbot stats --json`, the 台账's three sheets and the score.

`fill_rounds(db)` writes a generated October 2026 (Asia/Shanghai) of the sample registry's two
grids straight into the tables, as the rounds would have left them; every answer below was
counted by hand from this table (all times local; the harness's clock is 2026-11-23 10:00, so
October is measured as of its end, 10-31 24:00 = 10-31 16:00 UTC, and November as of now).

Patrols (BSY-01 has buildings 03 and 05, BSY-02 has 12):
    p1 BSY-01 member  10-01 00:30–02:00 (09-30 16:30 UTC: October)    covers 03
    p2 BSY-01 leader  09-30 23:00–10-01 01:00 (started in September)   covers 05
    p3 BSY-01 leader  10-31 23:00–11-01 01:00 (started in October)     covers 03
    p4 BSY-01 member  11-01 00:30–01:30 (10-31 16:30 UTC: November)     covers 05
    p5 BSY-01 member  10-20 09:00, under way (never ended)             covers 05
    p6 BSY-02 leader  10-10 09:00–10:30                                covers 12 (and 05 of
                                                                       the other grid: no)
    October: BSY-01 2 patrols (p1 p3), 3.5 h, 1 of 2 buildings; BSY-02 1, 1.5 h, 1 of 1.
Cases (source): k1 BSY-01-03 patrol 10-31 23:30 (Oct); k2 BSY-01-05 patrol 11-01 00:30
    (Nov); k3 BSY-02-12 patrol 10-10, rejected; k4 BSY-02-12 patrol 10-10, resolved; k5
    BSY-01-03 visit; k6 BSY-01-03 a resident's. October found on patrol: BSY-01 1, BSY-02 1.
Households (on the roster from 09-01) and visits, as `due_at` → visited at:
    h1 BSY-01-03 101 monthly  10-10 09:00 → 10-05 (on time); next 11-05 10:00
    h2 BSY-01-03 102 weekly   10-03 12:00 → 10-03 09:00 (on time); 10-10 09:00 → 10-12
                              (late); 10-19 09:00 → 10-18 (on time); next 10-25, never
    h3 BSY-01-05 501 monthly  next 10-31 23:00 (October), never visited
    h4 BSY-01-05 502 monthly  next 11-01 00:30 (November in Shanghai, 10-31 in UTC)
    h5 BSY-01-05 503 inactive next 10-15: off the roster, counts nowhere
    h6 BSY-01-05 504 loaded 11-10, next 10-20: not on the roster at October's end
    h7 BSY-01-03 103 monthly  10-28 09:00 → 11-03 (late, in November); next 12-03
    h8 BSY-02-12 1201 monthly 10-20 → 10-02 (early: on time); 11-02 → 10-25 (on time);
                              next 11-25 (after now)
    October BSY-01: due 7 (h1, h2 ×4, h3, h7), on time 3, visits 4, overdue 3 (h2 h3 h7);
            BSY-02: due 1, on time 1, visits 2, overdue 0.
    November (as of now): BSY-01 due 2 (h1, h4), on time 0, visits 1 (h7's), overdue 5 (h1
            h2 h3 h4 h6); BSY-02 due 2 (11-02 on time, 11-25 ahead), on time 1, visits 0.
Campaigns, deadline → BSY-01 / BSY-02:
    t1 10-15 18:00 → done 10-14 (on time) / done 10-16 (late)
    t2 10-31 23:59 → cannot 10-20 / pending (overdue at October's end)
    t3 10-25 18:00 → done 11-02 (after October's end: overdue then) / done 10-25 17:00
    t4 11-30 18:00 → pending (not yet due) / done 11-10
    t5 11-01 00:30 → pending (November; overdue now) / —
    October: BSY-01 3 due, 1 on time, 0 late, 1 cannot, 1 overdue; BSY-02 3, 1, 1, 0, 1.
    November: BSY-01 2 due, 0 on time, 1 overdue; BSY-02 1 due, 1 on time.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.status import CaseStatus
from bot.ledger import rounds
from bot.ledger.definitions import Period
from bot.ledger.figures import Figures, Weights, score
from bot.ledger.rounds import RoundFigures, RoundWeights
from bot.rounds.campaigns import TaskStatus
from storage.models import (
    Campaign,
    CampaignGrid,
    CareHousehold,
    CareVisit,
    Case,
    Node,
    Patrol,
    PatrolBuilding,
    Person,
)
from tests.figures_month import TZ, ZONE, local
from tests.harness import COMMUNITY_SUP, LEADER, LEADER2, MEMBER, Harness

L = local
OCT = Period.parse("2026-10", TZ)
NOV = Period.parse("2026-11", TZ)
SEP = Period.parse("2026-09", TZ)

OCT_01 = RoundFigures(
    patrols=2, patrol_hours=3.5, buildings=2, buildings_patrolled=1, found_on_patrol=1,
    visits=4, visits_due=7, visits_on_time=3, visits_overdue=3,
    tasks=3, tasks_on_time=1, tasks_late=0, tasks_cannot=1, tasks_overdue=1)
OCT_02 = RoundFigures(
    patrols=1, patrol_hours=1.5, buildings=1, buildings_patrolled=1, found_on_patrol=1,
    visits=2, visits_due=1, visits_on_time=1, visits_overdue=0,
    tasks=3, tasks_on_time=1, tasks_late=1, tasks_cannot=0, tasks_overdue=1)
NOV_01 = RoundFigures(
    patrols=1, patrol_hours=1.0, buildings=2, buildings_patrolled=1, found_on_patrol=1,
    visits=1, visits_due=2, visits_on_time=0, visits_overdue=5,
    tasks=2, tasks_on_time=0, tasks_late=0, tasks_cannot=0, tasks_overdue=1)
NOV_02 = RoundFigures(
    buildings=1, visits_due=2, visits_on_time=1, tasks=1, tasks_on_time=1)


# --- the generated month ----------------------------------------------------------------


async def fill_rounds(db: AsyncSession, *, copies: int = 1, first: int = 0) -> None:
    """Writes the month above (`copies` times over: the same rows again, on doors of their
    own) and commits."""
    nodes = {code: node_id for code, node_id in
             (await db.execute(select(Node.code, Node.id))).all()}
    for pid, name in ((LEADER, "网格长甲"), (MEMBER, "网格员乙"), (LEADER2, "网格长庚")):
        if await db.get(Person, pid) is None:
            db.add(Person(id=pid, name=name, created_at=L(9, 1, 9)))
    await db.flush()

    for n in range(first, first + copies):
        await _fill_one(db, n, nodes)
    await db.commit()


async def _fill_one(db: AsyncSession, n: int, nodes: dict[str, int]) -> None:
    """One copy of the month (n > 0: on doors of their own)."""
    g1, g2 = nodes["BSY-01"], nodes["BSY-02"]
    b3, b5, b12 = nodes["BSY-01-03"], nodes["BSY-01-05"], nodes["BSY-02-12"]
    street = nodes["LHJD"]

    def patrol(grid: int, person: int, start: datetime, end: datetime | None) -> Patrol:
        p = Patrol(person_id=person, grid_id=grid, started_at=start, ended_at=end,
                   note=f"巡查 {n}")
        db.add(p)
        return p

    plan = [
        (g1, MEMBER, L(10, 1, 0, 30), L(10, 1, 2), (b3,)),
        (g1, LEADER, L(9, 30, 23), L(10, 1, 1), (b5,)),
        (g1, LEADER, L(10, 31, 23), L(11, 1, 1), (b3,)),
        (g1, MEMBER, L(11, 1, 0, 30), L(11, 1, 1, 30), (b5,)),
        (g1, MEMBER, L(10, 20, 9), None, (b5,)),
        (g2, LEADER2, L(10, 10, 9), L(10, 10, 10, 30), (b12, b5)),
    ]
    made = [(patrol(g, person, s, e), bs) for g, person, s, e, bs in plan]
    await db.flush()
    for p, bs in made:
        for b in bs:
            db.add(PatrolBuilding(patrol_id=p.id, building_id=b,
                                  at=p.started_at + timedelta(minutes=10)))

    def case(building: int, at: datetime, source: str, status: CaseStatus,
             patrol_id: int | None = None) -> None:
        db.add(Case(status=status, category="facility", building_id=building,
                    reporter_id=None, description="井盖松动", reported_at=at,
                    deadline_at=at + timedelta(hours=72), verified="staff",
                    source=source, patrol_id=patrol_id,
                    resolved_at=at + timedelta(hours=2)
                    if status == CaseStatus.RESOLVED else None))

    case(b3, L(10, 31, 23, 30), rounds.PATROL, CaseStatus.OPEN, made[2][0].id)
    case(b5, L(11, 1, 0, 30), rounds.PATROL, CaseStatus.OPEN, made[3][0].id)
    case(b12, L(10, 10, 9, 30), rounds.PATROL, CaseStatus.REJECTED, made[5][0].id)
    case(b12, L(10, 10, 10), rounds.PATROL, CaseStatus.RESOLVED, made[5][0].id)
    case(b3, L(10, 15, 10), "visit", CaseStatus.OPEN)
    case(b3, L(10, 16, 10), "", CaseStatus.OPEN)

    def household(building: int, door: str, kind: str, interval: str,
                  next_due: datetime | None, *, unit: str = "", active: bool = True,
                  created: datetime | None = None) -> CareHousehold:
        created = created or L(9, 1, 9)
        h = CareHousehold(building_id=building, unit=unit, door=f"{door}-{n}" if n else door,
                          names="张某某", kind=kind, interval=interval,
                          phone="13800138000", notes="行动不便", active=active,
                          created_at=created, updated_at=created, next_due_at=next_due)
        db.add(h)
        return h

    h1 = household(b3, "101", "elderly_alone", "1m", L(11, 5, 10), unit="1")
    h2 = household(b3, "102", "disabled", "7d", L(10, 25, 9), unit="1")
    household(b5, "501", "hardship", "1m", L(10, 31, 23))
    household(b5, "502", "left_behind", "1m", L(11, 1, 0, 30))
    household(b5, "503", "hardship", "1m", L(10, 15, 9), active=False)
    household(b5, "504", "hardship", "1m", L(10, 20, 9), created=L(11, 10, 9))
    h7 = household(b3, "103", "elderly_alone", "1m", L(12, 3, 10), unit="2")
    h8 = household(b12, "1201", "elderly_alone", "1m", L(11, 25, 10))
    await db.flush()
    for h, at, due, person, need in (
        (h1, L(10, 5, 10), L(10, 10, 9), MEMBER, False),
        (h2, L(10, 3, 9), L(10, 3, 12), MEMBER, False),
        (h2, L(10, 12, 9), L(10, 10, 9), LEADER, True),
        (h2, L(10, 18, 9), L(10, 19, 9), MEMBER, False),
        (h7, L(11, 3, 10), L(10, 28, 9), MEMBER, False),
        (h8, L(10, 2, 10), L(10, 20, 9), LEADER2, False),
        (h8, L(10, 25, 10), L(11, 2, 10), LEADER2, False),
    ):
        db.add(CareVisit(household_id=h.id, person_id=person, at=at, due_at=due,
                         note="老人身体尚好", photos=[], need_found=need))

    c_parts: list[tuple[Campaign, tuple[tuple[int, str, datetime | None], ...]]] = []

    def campaign(title: str, deadline: datetime, *parts: tuple[int, str, datetime | None]
                 ) -> None:
        c = Campaign(title=title, body="请各网格落实", photos=[], sender_id=COMMUNITY_SUP,
                     scope_node_id=street, deadline_at=deadline, created_at=L(10, 1, 9))
        db.add(c)
        c_parts.append((c, parts))

    done, cannot, pending = TaskStatus.DONE.value, TaskStatus.CANNOT.value, "pending"
    campaign("防汛巡查", L(10, 15, 18), (g1, done, L(10, 14, 9)), (g2, done, L(10, 16, 9)))
    campaign("消防检查", L(10, 31, 23, 59), (g1, cannot, L(10, 20, 9)), (g2, pending, None))
    campaign("入户摸排", L(10, 25, 18), (g1, done, L(11, 2, 9)), (g2, done, L(10, 25, 17)))
    campaign("垃圾分类", L(11, 30, 18), (g1, pending, None), (g2, done, L(11, 10, 9)))
    campaign("夜间巡逻", L(11, 1, 0, 30), (g1, pending, None))
    await db.flush()
    for c, parts in c_parts:
        for grid, status, at in parts:
            db.add(CampaignGrid(campaign_id=c.id, grid_id=grid, status=status, done_at=at,
                                done_by_id=(LEADER if grid == g1 else LEADER2)
                                if at is not None else None, photos=[]))


@pytest.fixture
async def filled(h: Harness) -> Harness:
    async with h.app.sessions() as db:
        await fill_rounds(db)
    return h


def _same(got: RoundFigures | None, want: RoundFigures) -> None:
    assert got is not None
    assert got.as_dict() == pytest.approx(want.as_dict()), (got, want)


# --- the figures ----------------------------------------------------------------------------


def test_the_stored_task_states_are_the_rounds_own() -> None:
    assert TaskStatus.DONE.value == rounds.TASK_DONE
    assert TaskStatus.CANNOT.value == rounds.TASK_CANNOT


async def test_each_grid_and_the_roll_ups_match_the_hand_counts(filled: Harness) -> None:
    h = filled
    now = h.clock.now()
    async with h.app.sessions() as db:
        for period, one, two in ((OCT, OCT_01, OCT_02), (NOV, NOV_01, NOV_02)):
            _same(await rounds.compute(db, period, "BSY-01", now=now), one)
            _same(await rounds.compute(db, period, "BSY-02", now=now), two)
            # A community, the street and everything are the sums of their grids.
            for scope in ("BSY", "LHJD", None):
                _same(await rounds.compute(db, period, scope, now=now), one + two)
            rows = await rounds.breakdown(db, period, "BSY", "grid", now=now)
            assert [code for code, _, _ in rows] == ["BSY-01", "BSY-02"]
            _same(rows[0][2], one)
            _same(rows[1][2], two)
            (code, name, fig), = await rounds.breakdown(db, period, None, "community", now=now)
            assert (code, name) == ("BSY", "柏树郢社区")
            _same(fig, one + two)
        # A building has no grid below it: no rounds' figures.
        assert await rounds.compute(db, OCT, "BSY-01-03", now=now) is None
        # September: p2 started on 09-30 23:00 local (15:00 UTC), though it ended in October.
        sep = await rounds.compute(db, SEP, "BSY-01", now=now)
        assert sep is not None and sep.patrols == 1 and sep.patrol_hours == pytest.approx(2.0)
        assert sep.buildings_patrolled == 1


async def test_the_rates(filled: Harness) -> None:
    async with filled.app.sessions() as db:
        one = await rounds.compute(db, OCT, "BSY-01", now=filled.clock.now())
        both = await rounds.compute(db, OCT, "BSY", now=filled.clock.now())
    assert one is not None and both is not None
    assert one.coverage_rate == pytest.approx(1 / 2)
    assert one.visit_rate == pytest.approx(3 / 7)
    assert one.task_rate == pytest.approx(1 / 3)
    assert both.coverage_rate == pytest.approx(2 / 3)
    assert both.visit_rate == pytest.approx(4 / 8)
    assert both.task_rate == pytest.approx(2 / 6)
    assert both.tasks_done == 3
    empty = RoundFigures()
    assert empty.coverage_rate is None and empty.visit_rate is None and empty.task_rate is None


async def test_a_running_period_is_measured_as_of_now(filled: Harness) -> None:
    """October asked on 10-31 at 23:30 local: h3 (due at 23:00) is overdue, t2 (due 23:59)
    is not yet overdue; at 22:00 h3 was not overdue yet."""
    async with filled.app.sessions() as db:
        late_evening = await rounds.compute(db, OCT, "BSY-01", now=L(10, 31, 23, 30))
        assert late_evening is not None
        # p3 ended at 01:00 on 11-01 and counts in October, where it started, once ended.
        assert late_evening.patrols == 2
        # h2 (10-25), h3 (23:00) and h7 (10-28) are overdue; t3 is overdue (10-25), t2 not
        # yet; t1 done on time, t2 cannot.
        assert late_evening.visits_overdue == 3
        assert (late_evening.tasks_overdue, late_evening.tasks_cannot) == (1, 1)
        early = await rounds.compute(db, OCT, "BSY-01", now=L(10, 31, 22, 0))
        assert early is not None and early.visits_overdue == 2  # h3 not due yet


# --- the statements -------------------------------------------------------------------------


@contextmanager
def counting(h: Harness) -> Iterator[list[str]]:
    seen: list[str] = []
    sync = h.app.engine.sync_engine

    def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(sync, "before_cursor_execute", on_sql)
    try:
        yield seen
    finally:
        event.remove(sync, "before_cursor_execute", on_sql)


async def _statements(h: Harness) -> list[int]:
    counts = []
    for call in (lambda db: rounds.compute(db, OCT, "BSY-01", now=h.clock.now()),
                 lambda db: rounds.compute(db, OCT, None, now=h.clock.now()),
                 lambda db: rounds.breakdown(db, OCT, "LHJD", "grid", now=h.clock.now())):
        async with h.app.sessions() as db:
            from bot.org.directory import directory

            await directory(db)  # the registry check is the session's, not the figures'
            with counting(h) as seen:
                await call(db)
        counts.append(len(seen))
    return counts


async def test_the_number_of_statements_does_not_grow_with_the_rows(filled: Harness) -> None:
    h = filled
    few = await _statements(h)
    assert few == [6, 6, 6]
    async with h.app.sessions() as db:
        await fill_rounds(db, copies=4, first=1)
    assert await _statements(h) == few
    async with h.app.sessions() as db:
        fig = await rounds.compute(db, OCT, "BSY-01", now=h.clock.now())
    assert fig is not None
    assert (fig.patrols, fig.visits, fig.tasks) == (5 * 2, 5 * 4, 5 * 3)
    # Buildings count once however many patrols came near them.
    assert fig.buildings_patrolled == 1


# --- /stats in chat -------------------------------------------------------------------------


def _said(h: Harness, chat: int) -> str:
    """Everything the chat was sent (the caption, and the text when it went apart)."""
    return "\n".join(s.text for s in h.api.to(chat))


async def test_stats_shows_a_grid_leader_their_grids_rounds(filled: Harness) -> None:
    h = filled
    await h.private(LEADER, "/stats 2026-10")
    text = _said(h, LEADER)
    assert "网格巡查与走访" in text
    assert "巡查 2 次，共 3.5 小时 · 覆盖率 50.0%（1/2 栋）· 巡查发现问题 1 件" in text
    assert "走访率 42.9%（按时 3/应访 7）· 走访 4 次 · 逾期未访 3 户" in text
    assert ("专项任务完成率 33.3%（按期 1/应完成 3）· 逾期完成 0 · 无法完成 1 · "
            "逾期未完成 1") in text
    # Nothing of a household reaches the chat: neither names nor phone numbers.
    assert "张某某" not in text and "13800138000" not in text
    # A building has no grid below it: no block.
    await h.private(LEADER, "/stats 2026-10 BSY-01-05")
    assert "5号楼" in h.api.to(LEADER)[-1].text or "5号楼" in _said(h, LEADER)
    assert "网格巡查与走访" not in h.api.to(LEADER)[-1].text


async def test_stats_shows_a_community_supervisor_their_community(filled: Harness) -> None:
    h = filled
    await h.private(COMMUNITY_SUP, "/stats 2026-10")
    text = _said(h, COMMUNITY_SUP)
    assert "柏树郢社区" in text
    assert "巡查 3 次，共 5.0 小时 · 覆盖率 66.7%（2/3 栋）· 巡查发现问题 2 件" in text
    assert "走访率 50.0%（按时 4/应访 8）· 走访 6 次 · 逾期未访 3 户" in text
    assert ("专项任务完成率 33.3%（按期 2/应完成 6）· 逾期完成 1 · 无法完成 1 · "
            "逾期未完成 2") in text
    # This month so far (11-01 to 11-23), as of now.
    await h.private(COMMUNITY_SUP, "/stats BSY-02")
    last = h.api.to(COMMUNITY_SUP)[-1].text
    assert "2026-11-01..2026-11-23" in last
    assert "走访率 50.0%（按时 1/应访 1）" not in last
    assert "走访率 100.0%（按时 1/应访 1）" in last  # 11-25 lies after the 23rd
    # t4's deadline (11-30) lies after the 23rd too: no campaign is due in these days.
    assert "专项任务完成率 —（按期 0/应完成 0）" in last


async def test_stats_in_english(tmp_path: Path) -> None:
    from tests.harness import make_harness

    h = await make_harness(tmp_path, locale="en")
    try:
        async with h.app.sessions() as db:
            await fill_rounds(db)
        await h.private(LEADER, "/stats 2026-10")
        text = _said(h, LEADER)
        assert "Patrols and care visits" in text
        assert "Visit rate 42.9% (3 on time of 7 due)" in text
        assert "Campaign completion 33.3% (1 on time of 3)" in text
    finally:
        await h.app.close()


# --- gridbot stats --json ---------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from bot.cli import main
    from storage.db import make_engine, make_sessionmaker
    from tests.harness import SAMPLE, fresh_database, isolate_env

    isolate_env(monkeypatch, tmp_path)
    url = asyncio.run(fresh_database(tmp_path, "cli.db"))
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", url)
    assert main(["registry", "load", str(SAMPLE)]) == 0

    async def fill() -> None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as db:
                await fill_rounds(db)
        finally:
            await engine.dispose()

    asyncio.run(fill())
    return url


def test_stats_json_has_the_rounds(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    capsys.readouterr()
    assert main(["stats", "--month", "2026-10", "--scope", "BSY", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["figures"]["received"] == 4  # the case figures are still there: k1 k4 k5 k6
    got = data["rounds"]["figures"]
    assert got == pytest.approx((OCT_01 + OCT_02).as_dict())
    assert got["visit_rate"] == pytest.approx(0.5) and got["tasks_done"] == 3
    assert [g["code"] for g in data["rounds"]["grids"]] == ["BSY-01", "BSY-02"]
    assert data["rounds"]["grids"][0]["figures"] == pytest.approx(OCT_01.as_dict())
    # A grid: its own figures, no list; a building: none.
    assert main(["stats", "--month", "2026-10", "--scope", "BSY-02", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rounds"] == {"figures": pytest.approx(OCT_02.as_dict()), "grids": []}
    assert main(["stats", "--month", "2026-10", "--scope", "BSY-02-12", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rounds"] == {"figures": None, "grids": []}
    # The text says it in one line.
    assert main(["stats", "--month", "2026-10", "--scope", "BSY-01"]) == 0
    out = capsys.readouterr().out
    assert ("rounds: 2 patrols, 3.5 h, coverage 50.0%, 1 found on patrol; visit rate 42.9% "
            "(3/7), 4 visits, 3 overdue; campaigns 33.3% (1/3), 0 late, 1 cannot, 1 overdue"
            ) in out


# --- the 台账 --------------------------------------------------------------------------------


async def _ledger(h: Harness, scope: str | None, fmt: str = "xlsx") -> bytes:
    from bot.ledger.export import write_ledger

    out = io.BytesIO()
    async with h.app.sessions() as db:
        await write_ledger(db, OCT, scope, out, fmt, "zh_CN",  # type: ignore[arg-type]
                           now=h.clock.now())
    return out.getvalue()


def _sheet(wb: Any, name: str) -> list[list[Any]]:
    return [list(r) for r in wb[name].iter_rows(values_only=True)]


async def test_the_ledger_has_a_sheet_each_for_patrols_visits_and_campaigns(
        filled: Harness) -> None:
    h = filled
    wb = openpyxl.load_workbook(io.BytesIO(await _ledger(h, "BSY-01")))
    assert wb.sheetnames == ["台账", "分网格统计", "巡查", "走访", "专项任务"]
    async with h.app.sessions() as db:
        k1 = await db.scalar(select(Case.id).where(Case.reported_at == L(10, 31, 23, 30)))

    header, *patrols = _sheet(wb, "巡查")
    assert header == ["网格", "巡查人", "开始时间", "结束时间", "时长（小时）", "覆盖楼栋",
                      "发现问题"]
    naive = {k: v.astimezone(ZONE).replace(tzinfo=None) for k, v in {
        "p1": L(10, 1, 0, 30), "p1e": L(10, 1, 2), "p3": L(10, 31, 23), "p3e": L(11, 1, 1),
    }.items()}
    assert patrols == [
        ["柏树郢第一网格", "网格员乙", naive["p1"], naive["p1e"], 1.5, "3号楼", None],
        ["柏树郢第一网格", "网格长甲", naive["p3"], naive["p3e"], 2, "3号楼", f"#{k1}"],
    ]

    header, *visits = _sheet(wb, "走访")
    assert header == ["网格", "楼栋", "单元门牌", "类别", "走访时间", "应访时间", "是否按时",
                      "走访人", "发现困难"]
    # Visits made or due in October in the order made, then those due and not made.
    assert [(r[2], r[6], r[8]) for r in visits] == [
        ("1 102", "是", "否"), ("1 101", "是", "否"), ("1 102", "否", "是"),
        ("1 102", "是", "否"), ("2 103", "否", "否"), ("1 102", "否", None),
        ("501", "否", None)]
    assert visits[1][:4] == ["柏树郢第一网格", "3号楼", "1 101", "独居老人"]
    assert visits[-1][4] is None and visits[-1][7] is None
    # Filtering the sheet finds the figures: 7 due (every row), 3 on time.
    assert sum(1 for r in visits if r[6] == "是") == OCT_01.visits_on_time
    assert len(visits) == OCT_01.visits_due
    # No one of the household is named, nor their phone or notes, anywhere in the file.
    cells = {str(c) for name in wb.sheetnames for row in _sheet(wb, name) for c in row}
    assert not any("张某某" in c or "13800138000" in c or "行动不便" in c for c in cells)

    header, *tasks = _sheet(wb, "专项任务")
    assert header == ["任务", "网格", "完成时限", "状态", "完成时间", "完成人"]
    assert [(r[0], r[3], r[5]) for r in tasks] == [
        ("防汛巡查", "按期完成", "网格长甲"), ("入户摸排", "逾期未完成", "网格长甲"),
        ("消防检查", "无法完成", "网格长甲")]

    # The whole district: both grids, each patrol's counted cases only (k3 was rejected).
    wb = openpyxl.load_workbook(io.BytesIO(await _ledger(h, None)))
    patrols = _sheet(wb, "巡查")[1:]
    assert [r[0] for r in patrols] == ["柏树郢第一网格", "柏树郢第二网格", "柏树郢第一网格"]
    assert patrols[1][5] == "12号楼" and str(patrols[1][6]).count("#") == 1
    assert len(_sheet(wb, "走访")) - 1 == OCT_01.visits_due + OCT_02.visits_due + 1
    assert len(_sheet(wb, "专项任务")) - 1 == 6


async def test_the_csv_ledger_is_the_cases_sheet_alone(filled: Harness) -> None:
    import csv

    from bot.ledger.export import COLUMNS

    rows = list(csv.reader(io.StringIO((await _ledger(filled, "BSY-01", "csv"))
                                       .decode("utf-8-sig"))))
    assert len(rows[0]) == len(COLUMNS) and rows[0][0] == "编号"
    assert all(len(r) == len(COLUMNS) for r in rows)


# --- the monthly score ------------------------------------------------------------------------


async def _score(h: Harness, assessment: str | None) -> str:
    from bot.cases.registry_edit import apply_registry
    from bot.context import begin
    from bot.ledger.digest import send_score
    from bot.org.directory import org_settings
    from bot.org.registry import parse_registry
    from tests.harness import SAMPLE

    text = SAMPLE.read_text("utf-8")
    if assessment is not None:
        text = text.replace("departments:\n", f"assessment:\n  {assessment}\n\ndepartments:\n")
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        row = await org_settings(db)
        assert row is not None
        await send_score(tx, OCT, Weights.from_settings(row.score_weights))
        await db.commit()
    await h.deliver()
    return h.texts(COMMUNITY_SUP)[-1]


async def test_the_score_without_the_rounds_weights_is_unchanged(filled: Harness) -> None:
    # October's cases: BSY-01 has k5 and k6 due and open (on time 0, closed 0, no rework,
    # nobody rated); BSY-02 has k4 closed on time. The default weights: 50 on time, 20
    # closed, 10 for no rework (satisfied has no denominator and drops out).
    plain = await _score(filled, None)
    assert "巡查覆盖率" not in plain
    assert "<b>12.5 分</b>" in plain and "<b>100.0 分</b>" in plain
    assert score(Figures(due=2), Weights()) == pytest.approx(12.5)


async def test_the_score_counts_the_rounds_with_their_weights(filled: Harness) -> None:
    h = filled
    weighted = await _score(h, "weights: {coverage: 20, visits: 20, campaigns: 10}")
    assert "巡查覆盖率 20，走访率 20，专项任务完成率 10" in weighted
    # BSY-01: coverage 1/2, visits 3/7, campaigns 1/3 over weights 80 + 50.
    one = 100 * (50 * 0 + 20 * 0 + 10 * 1 + 20 * 0.5 + 20 * 3 / 7 + 10 / 3) / 130
    # BSY-02: everything on time but campaigns 1/3.
    two = 100 * (50 + 20 + 10 + 20 + 20 + 10 / 3) / 130
    assert f"{one:.1f} 分" in weighted and f"{two:.1f} 分" in weighted
    assert "巡查覆盖率 50.0%｜走访率 42.9%｜专项任务完成率 33.3%" in weighted
    assert "巡查覆盖率 100.0%｜走访率 100.0%｜专项任务完成率 33.3%" in weighted
    # The registry keeps the rounds' weights a district set, and no others.
    async with h.app.sessions() as db:
        from bot.org.directory import org_settings

        row = await org_settings(db)
        assert row is not None and row.score_weights == {
            "on_time": 50, "closed": 20, "satisfied": 20, "rework": 10, "coverage": 20,
            "visits": 20, "campaigns": 10}


def test_round_weights_default_to_nothing() -> None:
    assert not RoundWeights.from_settings(None).any
    assert not RoundWeights.from_settings({"on_time": 40}).any
    w = RoundWeights.from_settings({"visits": 30})
    assert w == RoundWeights(visits=30) and w.any
    assert w.terms(None) == []
    # Extra terms at weight 0 change nothing.
    fig = Figures(due=4, closed=3, closed_on_time=2)
    assert score(fig, Weights(), RoundWeights().terms(OCT_01)) == score(fig, Weights())
