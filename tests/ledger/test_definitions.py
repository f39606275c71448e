"""Each figure defined once (issue 18, item 4; issue 19, defects 1, 3, 4 and 5).

bot/ledger/definitions.py holds what the figures, the 台账, /stats, the digest and the score
count. Here: the defects of issue 19 that lived in those definitions, each on the smallest
case that shows it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ledger.export import COLUMNS, FIGURE_COLUMNS, write_ledger
from bot.ledger.figures import Period, Weights, breakdown, compute, score
from storage.models import Case, CaseEvent, Category, Node
from tests.figures_month import fill_month
from tests.harness import COMMUNITY_SUP, LEADER, Harness

TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
KEYS = [c.key for c in COLUMNS]


def local(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE).astimezone(UTC)


# --- writing cases as the domain leaves them ---------------------------------------------

Event = tuple[str, datetime, str | None, str | None, str | None]  # action, at, from, to, level


async def _ids(db: AsyncSession) -> tuple[dict[str, int], dict[str, int]]:
    nodes = {code: i for code, i in (await db.execute(select(Node.code, Node.id))).all()}
    sla = {code: s for code, s in
           (await db.execute(select(Category.code, Category.sla_seconds))).all()}
    return nodes, sla


async def add_case(db: AsyncSession, building: str, category: str, reported: datetime,
                   events: Iterable[Event], **row: Any) -> int:
    """One case with its events; its deadline is its clock start + its category's SLA +
    its approved extensions unless given."""
    nodes, sla = await _ids(db)
    values: dict[str, Any] = dict(
        status="open", rev=1, level="grid", category=category, urgent=False,
        verified="unverified", building_id=nodes[building], reporter_id=None,
        description="楼道灯坏了", reported_at=reported, clock_started_at=reported, round=1,
        next_check_at=None)
    values.update(row)
    values.setdefault("deadline_at", values["clock_started_at"] + timedelta(
        seconds=sla[values["category"]] + values.get("extended_seconds", 0)))
    case = Case(**values)
    db.add(case)
    await db.flush()
    for action, at, before, after, level in events:
        db.add(CaseEvent(case_id=case.id, at=at, action=action, from_status=before,
                         to_status=after, level=level))
    await db.commit()
    return case.id


# --- reading the 台账 back ------------------------------------------------------------------


async def ledger_rows(db: AsyncSession, period: Period, scope: str | None,
                      now: datetime) -> list[dict[str, str]]:
    out = io.BytesIO()
    await write_ledger(db, period, scope, out, "csv", now=now)
    rows = list(csv.reader(io.StringIO(out.getvalue().decode("utf-8-sig"))))
    return [dict(zip(KEYS, r, strict=True)) for r in rows[1:]]


def when(cell: str) -> datetime | None:
    """A CSV time (local, to the minute) as aware UTC; None for an empty cell."""
    if not cell:
        return None
    return datetime.strptime(cell, "%Y-%m-%d %H:%M").replace(tzinfo=ZONE).astimezone(UTC)


def escalations(cell: str) -> dict[str, int]:
    """社区、街道×2 -> {社区: 1, 街道: 2}."""
    out: dict[str, int] = {}
    for part in filter(None, cell.split("、")):
        name, _, times = part.partition("×")
        out[name] = out.get(name, 0) + (int(times) if times else 1)
    return out


# --- defect 1: 应结案 counts a case closed before the period began ------------------------


async def test_a_case_closed_before_the_period_is_not_due_in_it(h: Harness) -> None:
    """Issue 19, defect 1: reported 11-29, due 12-02, closed 11-30 (on time, in November).
    December has nothing due: no 0 % closure and no 12.5 score for a grid that did
    everything early. November has it due, closed and on time."""
    async with h.app.sessions() as db:
        case_id = await add_case(
            db, "BSY-01-03", "other", local(11, 29, 9), [
                ("report", local(11, 29, 9), None, "open", None),
                ("accept", local(11, 29, 10), "open", "accepted", None),
                ("resolve", local(11, 30, 9), "accepted", "resolved", None),
                ("rate", local(11, 30, 12), "resolved", "closed", None)],
            status="closed", accepted_by_id=LEADER, resolved_by_id=LEADER, result="已修好",
            resolved_at=local(11, 30, 9), closed_at=local(11, 30, 12), close_reason="rated",
            rating="good")
        later = local(1, 5, 9, year=2027)
        dec = await compute(db, Period.parse("2026-12", TZ), "BSY-01", now=later)
        nov = await compute(db, Period.parse("2026-11", TZ), "BSY-01", now=later)
        dec_rows = await ledger_rows(db, Period.parse("2026-12", TZ), "BSY-01", later)
        [(_, _, grid)] = await breakdown(db, Period.parse("2026-12", TZ), "BSY-01", "grid",
                                         now=later)
    assert (dec.due, dec.closed, dec.closed_on_time) == (0, 0, 0)
    assert dec.close_rate is None and dec.on_time_rate is None
    assert score(dec, Weights()) == 100.0 and score(grid, Weights()) == 100.0
    assert (nov.due, nov.closed, nov.closed_on_time, nov.satisfied) == (1, 1, 1, 1)
    assert score(nov, Weights()) == 100.0
    # December's 台账 does not list it: no figure of December is about it.
    assert f"#{case_id}" not in {r["number"] for r in dec_rows}


# --- defect 3: a merged case still counts ---------------------------------------------------


async def test_a_merged_cases_events_count_nowhere(h: Harness) -> None:
    """Issue 19, defect 3: a case escalated, resolved, rated 不满意 (返工) and then merged
    into another counts in no figure, its events neither: the main case's 满意 makes
    满意率 100 %, not 50 % (or 0 % alone)."""
    async with h.app.sessions() as db:
        main = await add_case(
            db, "BSY-01-03", "facility", local(10, 5, 9), [
                ("report", local(10, 5, 9), None, "open", None),
                ("accept", local(10, 5, 10), "open", "accepted", None),
                ("resolve", local(10, 6, 9), "accepted", "resolved", None),
                ("rate", local(10, 6, 12), "resolved", "closed", None)],
            status="closed", accepted_by_id=LEADER, resolved_by_id=LEADER, result="已修好",
            resolved_at=local(10, 6, 9), closed_at=local(10, 6, 12), close_reason="rated",
            rating="good", followers=1)
        merged = await add_case(
            db, "BSY-01-03", "facility", local(10, 5, 8), [
                ("report", local(10, 5, 8), None, "open", None),
                ("accept", local(10, 5, 8, 30), "open", "accepted", None),
                ("escalate", local(10, 5, 9), "accepted", "open", "community"),
                ("auto_escalate", local(10, 5, 9, 30), "open", "open", "street"),
                ("accept", local(10, 5, 10), "open", "accepted", None),
                ("resolve", local(10, 5, 11), "accepted", "resolved", None),
                ("rework", local(10, 5, 12), "resolved", "open", None),
                ("merge", local(10, 5, 14), "open", "merged", None)],
            status="merged", level="street", clock_started_at=local(10, 5, 12), round=2,
            rating="bad", closed_at=local(10, 5, 14), close_reason="merged",
            merged_into_id=main)
        later = local(11, 20, 9)
        fig = await compute(db, Period.parse("2026-10", TZ), now=later)
        rows = await ledger_rows(db, Period.parse("2026-10", TZ), None, later)
    assert (fig.received, fig.due, fig.closed) == (1, 1, 1)
    assert (fig.reworked, fig.unsatisfied, fig.no_feedback) == (0, 0, 0)
    assert (fig.escalated_community, fig.escalated_street) == (0, 0)
    assert (fig.rated, fig.satisfied) == (1, 1) and fig.satisfaction_rate == 1.0
    assert [r["number"] for r in rows] == [f"#{main}"]
    assert f"#{merged}" not in {r["number"] for r in rows}


# --- defect 4: 超期 in a running period ----------------------------------------------------

# 2026-11-23 10:05 in Shanghai: the harness's Monday morning, five minutes on.
TEN_OH_FIVE = local(11, 23, 10, 5)


async def _due_at_two(h: Harness) -> tuple[int, int]:
    """An open case due at 14:00 today, and one overdue since yesterday."""
    async with h.app.sessions() as db:
        later = await add_case(
            db, "BSY-01-03", "security", local(11, 22, 14), [
                ("report", local(11, 22, 14), None, "open", None),
                ("accept", local(11, 22, 15), "open", "accepted", None)],
            status="accepted", accepted_by_id=LEADER)
        late = await add_case(
            db, "BSY-01-03", "security", local(11, 21, 9), [
                ("report", local(11, 21, 9), None, "open", None),
                ("accept", local(11, 21, 10), "open", "accepted", None)],
            status="accepted", accepted_by_id=LEADER)
    return later, late


async def test_a_running_period_is_overdue_as_of_now(h: Harness) -> None:
    """Issue 19, defect 4: asked at 10:05, a case due at 14:00 is open but not overdue, in
    this month so far, in this month, and on the 台账's figures sheet, as on its row."""
    later, late = await _due_at_two(h)
    async with h.app.sessions() as db:
        for label in ("2026-11", "2026-11-01..2026-11-23"):
            fig = await compute(db, Period.parse(label, TZ), "BSY-01", now=TEN_OH_FIVE)
            assert (fig.open_at_end, fig.overdue_at_end) == (2, 1), label
        # The period, once ended, is measured at its end: both overdue then.
        fig = await compute(db, Period.parse("2026-11-01..2026-11-23", TZ), "BSY-01",
                            now=local(11, 30, 9))
        assert (fig.open_at_end, fig.overdue_at_end) == (2, 2)
        out = io.BytesIO()
        await write_ledger(db, Period.parse("2026-11", TZ), "BSY-01", out, "xlsx",
                           now=TEN_OH_FIVE)
    book = openpyxl.load_workbook(io.BytesIO(out.getvalue()))
    cases, figures = book.worksheets
    flags = {r[0]: r[KEYS.index("overdue")] for r in cases.iter_rows(min_row=2, values_only=True)}
    assert flags == {f"#{later}": "否", f"#{late}": "是"}
    total = dict(zip(FIGURE_COLUMNS, list(figures.iter_rows(values_only=True))[-1],
                     strict=True))
    assert (total["open_at_end"], total["overdue_at_end"]) == (2, 1)


async def test_stats_this_month_so_far_counts_overdue_now(h: Harness) -> None:
    """The same through /stats at 10:05: this month so far, and the month asked by name."""
    await _due_at_two(h)
    h.clock.set(TEN_OH_FIVE)
    await h.private(LEADER, "/stats")
    await h.private(LEADER, "/stats 2026-11")
    so_far, month = h.api.files_to(LEADER)
    for sent in (so_far, month):
        assert "待处置 2 件，其中超期 1 件" in sent.text, sent.text
    await h.private(COMMUNITY_SUP, "/stats")
    [sent] = h.api.files_to(COMMUNITY_SUP)
    assert "其中超期 1 件" in sent.text and "超期待处置 1" in sent.text, sent.text


# --- defect 5: a past month's 台账 changes after the fact ---------------------------------

JUDGED = ("overdue", "overdue_by", "rework", "escalation")


async def test_a_past_months_ledger_is_judged_at_its_end(h: Harness) -> None:
    """Issue 19, defect 5: October's 台账, made in November, judges each case as of
    October's end, and what happens in November changes none of its judgements (是否超期,
    超期时长, 返工次数, 上报层级): it agrees with October's figures whenever it is made."""
    async with h.app.sessions() as db:
        month = await fill_month(db)
    oct_ = Period.parse("2026-10", TZ)
    names = {f"#{v}": k for k, v in month.ids.items()}

    async def judged(now: datetime) -> dict[str, tuple[str, ...]]:
        async with h.app.sessions() as db:
            rows = await ledger_rows(db, oct_, None, now)
        return {names[r["number"]]: tuple(r[k] for k in JUDGED) for r in rows}

    first = await judged(local(11, 2, 12))
    # c18, open and overdue at October's end (deadline 10-31 09:00), resolved 11-02 09:00:
    # overdue by 15 hours at October's end, not by its November lateness (2 days).
    assert first["c18"][:2] == ("是", "15小时")
    # c6 (deadline 10-10 09:00) still open: overdue to October's end.
    assert first["c6"][:2] == ("是", "21天15小时")
    # November: c10 (due 11-02 23:30, not overdue in October) resolved late and sent back
    # by 不满意; c17 (overdue at October's end) resolved four days late; c6 escalated once
    # more.
    c10, c17, c6 = (month.ids[n] for n in ("c10", "c17", "c6"))
    async with h.app.sessions() as db:
        await db.execute(update(Case).where(Case.id == c10).values(
            status="open", round=2, clock_started_at=local(11, 4, 9),
            deadline_at=local(11, 6, 9), rating="bad"))
        await db.execute(update(Case).where(Case.id == c17).values(
            status="resolved", resolved_at=local(11, 3, 9), resolved_by_id=LEADER,
            result="已处理"))
        db.add_all([
            CaseEvent(case_id=c10, at=local(11, 3, 9), action="resolve",
                      from_status="accepted", to_status="resolved"),
            CaseEvent(case_id=c10, at=local(11, 4, 9), action="rework",
                      from_status="resolved", to_status="open"),
            CaseEvent(case_id=c17, at=local(11, 3, 9), action="resolve",
                      from_status="accepted", to_status="resolved"),
            CaseEvent(case_id=c6, at=local(11, 6, 9), action="escalate",
                      from_status="accepted", to_status="open", level="street")])
        await db.commit()
    second = await judged(local(11, 20, 9))
    assert second["c10"] == first["c10"] == ("否", "", "0", "")
    assert second["c17"] == first["c17"] == ("是", "1天15小时", "0", "")
    assert second["c6"] == first["c6"] == ("是", "21天15小时", "0", "社区、街道")
    assert second == first
