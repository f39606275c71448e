"""Each figure defined once (issue 18, item 4; issue 19, defects 1, 3, 4 and 5).

bot/ledger/definitions.py holds what the figures, the 台账, /stats, the digest and the score
count. Here: the defects of issue 19 that lived in those definitions, each on the smallest
case that shows it, and a generated month reconciled both ways: filtering the 台账's rows
(its CSV, read back as a supervisor's spreadsheet filter would) gives every count of the
figures, for a past month, a running month, ranges of days, every grid and every category.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ledger.export import COLUMNS, FIGURE_COLUMNS, write_ledger
from bot.ledger.figures import Figures, Period, Weights, breakdown, compute, score
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
    cases, figures, *_rounds = book.worksheets
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


# --- the reconciliation ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    period: Period
    now: datetime

    @property
    def as_of(self) -> datetime:
        return min(self.now, self.period.end)


def _in(t: datetime | None, p: Period) -> bool:
    return t is not None and p.start <= t < p.end


def counts_from_rows(rows: list[dict[str, str]], ask: Ask) -> dict[str, int]:
    """Every count of the figures, by filtering the 台账's columns as a supervisor would
    (the test's own reading of the definitions, not the code's). A rating or a rating
    timeout is read at 结案时间: the domain records the event at the moment it closes the
    case. 不满意 (and so 评价) has no column: see assert_reconciled."""
    p, as_of = ask.period, ask.as_of
    got = dict.fromkeys(("received", "due", "closed", "closed_on_time", "closed_late",
                         "open_at_end", "overdue_at_end", "resolved", "reworked",
                         "escalated_community", "escalated_street", "satisfied",
                         "fairly_satisfied", "no_feedback"), 0)
    for r in rows:
        reported, resolved = when(r["received_at"]), when(r["resolved_at"])
        deadline, closed_at = when(r["deadline"]), when(r["closed_at"])
        assert reported is not None and deadline is not None
        late = r["overdue"] == "是"
        # 是否超期, read from the row's other columns: a result recorded before the as-of
        # after the deadline, or open then, not suspended (已挂账) and past the deadline.
        if resolved is not None and resolved < as_of:
            assert late == (resolved > deadline), r
        else:
            assert late == (r["status"] != "已挂账" and deadline < as_of), r
        counted: list[str] = []
        if _in(reported, p):
            counted.append("received")
            if resolved is not None and resolved < as_of:
                counted.append("resolved")
        if _in(resolved, p):
            counted += ["closed", "closed_late" if late else "closed_on_time"]
        if _in(resolved, p) or (_in(deadline, p) and r["status"] != "已挂账"
                                and not (resolved is not None and resolved < p.start)):
            counted.append("due")
        if reported < as_of and (resolved is None or resolved >= as_of):
            counted.append("open_at_end")
            if late:
                counted.append("overdue_at_end")
        if _in(closed_at, p):
            kind = {"满意": "satisfied", "基本满意": "fairly_satisfied",
                    "无反馈": "no_feedback"}.get(r["rating"])
            if kind is not None:
                counted.append(kind)
        for name in counted:
            got[name] += 1
        got["reworked"] += int(r["rework"])
        levels = escalations(r["escalation"])
        got["escalated_community"] += levels.get("社区", 0)
        got["escalated_street"] += levels.get("街道", 0)
        # Every row is there for a figure of the period; none is listed for nothing.
        assert counted or int(r["rework"]) or levels, r
    return got


def assert_reconciled(fig: Figures, rows: list[dict[str, str]], ask: Ask,
                      what: str) -> dict[str, int]:
    from_rows = counts_from_rows(rows, ask)
    from_figures = {k: getattr(fig, k) for k in from_rows}
    assert from_rows == from_figures, (what, ask.period.label, ask.now)
    # 不满意 (a rework from status resolved) and 评价 have no column of their own: the
    # figures' 不满意 are at most the rows' 返工.
    assert fig.unsatisfied <= from_rows["reworked"], what
    assert fig.rated == fig.satisfied + fig.fairly_satisfied + fig.unsatisfied, what
    return from_rows


# --- a generated month ----------------------------------------------------------------------

# The clock of the running month: Wednesday 2026-11-18 10:05 in Shanghai. Nothing in the
# generated month happens after it.
NOW = local(11, 18, 10, 5)
CATEGORIES = ("facility", "sanitation", "fire", "security", "dispute", "housing", "other")
BUILDINGS = ("BSY-01-03", "BSY-01-05", "BSY-02-12")
GENERATED = 240


@dataclass
class Sim:
    """One case lived step by step, as the domain would leave its row and its events, until
    its next step would fall after NOW."""

    rng: random.Random
    sla: dict[str, int]
    building: str
    t: datetime
    row: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    status: str = "open"
    alive: bool = True
    kinds: set[str] = field(default_factory=set)

    def later(self, max_hours: float, min_minutes: int = 5) -> bool:
        """The clock moves on by whole minutes, up to `max_hours`; False (and the case stays
        as it is) once that would pass NOW."""
        if not self.alive:
            return False
        t = self.t + timedelta(minutes=self.rng.randint(
            min_minutes, max(min_minutes, int(max_hours * 60))))
        if t > NOW:
            self.alive = False
            return False
        self.t = t
        return True

    def do(self, action: str, to: str | None = None, level: str | None = None) -> None:
        before = self.status
        if to is not None:
            self.status = to
        self.events.append((action, self.t, before, self.status, level))
        self.kinds.add(action)

    def deadline(self) -> None:
        self.row["deadline_at"] = self.row["clock_started_at"] + timedelta(
            seconds=self.sla[self.row["category"]] + self.row.get("extended_seconds", 0))

    def restart_clock(self) -> None:
        self.row["clock_started_at"] = self.t
        self.row["extended_seconds"] = 0
        self.deadline()

    def reopen(self) -> None:
        self.row.update(round=self.row["round"] + 1, level="grid", result=None,
                        resolved_at=None, resolved_by_id=None)
        self.restart_clock()


def simulate(rng: random.Random, sla: dict[str, int], reported: datetime) -> Sim:
    """A case reported at `reported` and lived on at random: verified or rejected,
    re-categorised, escalated (with a level, or none as before revision 0005), extended,
    suspended (and resumed), merged, resolved on time or late, checked, rated (满意, 基本满意,
    不满意 and reworked), or closed for no feedback; up to three rounds."""
    s = Sim(rng, sla, rng.choice(BUILDINGS), reported)
    s.row = dict(category=rng.choice(CATEGORIES), reported_at=reported,
                 clock_started_at=reported, round=1, level="grid")
    s.deadline()
    verifying = rng.random() < 0.3
    s.status = "verifying" if verifying else "open"
    s.events.append(("report", reported, None, s.status, None))
    if verifying:
        if not s.later(6):
            return s
        if rng.random() < 0.15:
            s.do("reject", "rejected")
            s.row.update(closed_at=s.t, close_reason="rejected", verified="rejected")
            return s
        s.do("confirm", "open")
        s.row["verified"] = "confirmed"
    if rng.random() < 0.2 and s.later(8):  # 改类别: the deadline follows the new SLA
        s.row["category"] = rng.choice([c for c in CATEGORIES if c != s.row["category"]])
        s.do("category")
        s.deadline()
    for _round in range(3):
        if not s.later(10):
            return s
        s.do("accept", "accepted")
        s.row["accepted_by_id"] = LEADER
        if rng.random() < 0.25 and s.later(30):
            level = rng.choice(["community", "community", "street", None])
            s.do(rng.choice(["escalate", "auto_escalate"]), "open", level=level)
            s.row["level"] = level or "community"
            if not s.later(4):
                return s
            s.do("accept", "accepted")
        if rng.random() < 0.15 and s.later(20):
            s.do("extension_approve")
            s.row["extended_seconds"] = s.row.get("extended_seconds", 0) + 24 * 3600
            s.row["extension_count"] = s.row.get("extension_count", 0) + 1
            s.deadline()
        if rng.random() < 0.1 and s.later(20):
            s.do("suspend", "suspended")
            s.row["review_at"] = s.t + timedelta(days=30)
            if rng.random() < 0.5 or not s.later(24 * 20):
                return s
            s.do("resume", "accepted")
            s.row["review_at"] = None
            s.restart_clock()
        if rng.random() < 0.08 and s.later(20):
            s.do("merge", "merged")
            s.row.update(closed_at=s.t, close_reason="merged")
            return s
        if not s.later(s.sla[s.row["category"]] / 3600 * 1.6):
            return s
        check = rng.random() < 0.25
        s.do("resolve_check" if check else "resolve", "checking" if check else "resolved")
        s.row.update(resolved_at=s.t, resolved_by_id=LEADER, result="已处理")
        if check:
            if not s.later(24):
                return s
            if rng.random() < 0.3:
                s.do("rework", "open")  # the check failed
                s.reopen()
                continue
            s.do("check_pass", "resolved")
        if not s.later(72):
            return s
        roll = rng.random()
        if roll < 0.55:
            s.do("rate", "closed")
            s.row.update(rating=rng.choice(["good", "good", "fair"]), closed_at=s.t,
                         close_reason="rated")
            return s
        if roll < 0.8:
            s.do("rework", "open")  # 不满意
            s.row["rating"] = "bad"
            s.reopen()
            continue
        s.do("rating_timeout", "closed")
        s.row.update(closed_at=s.t, close_reason="no_feedback")
        return s
    return s


def _minute(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(minutes=rng.randrange(int((end - start).total_seconds() // 60)))


async def generate(db: AsyncSession, seed: int = 18) -> set[str]:
    """The generated cases, reported from 09-20 to the running month's morning, written as
    their simulation left them, and some placed by hand: one closed before November though
    due in it, one resolved at its deadline to the minute, one due at October's end to the
    minute, and three due today: at 14:00, at 10:05 (now) and at 09:00. Returns the kinds
    of steps the month holds."""
    rng = random.Random(seed)
    _, sla = await _ids(db)
    kinds: set[str] = set()
    first: int | None = None
    for _ in range(GENERATED):
        s = simulate(rng, sla, _minute(rng, local(9, 20, 0), NOW))
        row = dict(s.row, status=s.status)
        if s.status == "merged":
            row["merged_into_id"] = first
            if len(s.events) > 3:
                kinds.add("merged_after_events")
        if s.status not in ("verifying", "open", "rejected"):
            row.setdefault("accepted_by_id", LEADER)
        if s.row.get("category") and any(e[0] == "category" for e in s.events):
            kinds.add("recategorised")
        kinds |= s.kinds
        if any(e[0] in ("escalate", "auto_escalate") and e[4] is None for e in s.events):
            kinds.add("escalated_without_level")
        case_id = await add_case(db, s.building, row.pop("category"), row.pop("reported_at"),
                                 s.events, **row)
        first = first or case_id
    done = [("accept", local(10, 29, 13), "open", "accepted", None),
            ("resolve", local(10, 30, 9), "accepted", "resolved", None),
            ("rate", local(10, 30, 12), "resolved", "closed", None)]
    await add_case(db, "BSY-01-05", "facility", local(10, 29, 12),
                   [("report", local(10, 29, 12), None, "open", None), *done],
                   status="closed", accepted_by_id=LEADER, resolved_by_id=LEADER,
                   result="已修好", resolved_at=local(10, 30, 9), closed_at=local(10, 30, 12),
                   close_reason="rated", rating="good")
    # Resolved at its deadline to the minute: on time.
    at_deadline = local(10, 12, 9) + timedelta(seconds=sla["security"])
    await add_case(db, "BSY-01-03", "security", local(10, 12, 9),
                   [("report", local(10, 12, 9), None, "open", None),
                    ("accept", local(10, 12, 10), "open", "accepted", None),
                    ("resolve", at_deadline, "accepted", "resolved", None)],
                   status="resolved", accepted_by_id=LEADER, resolved_by_id=LEADER,
                   result="已处理", resolved_at=at_deadline)
    # Due at October's end to the minute, resolved the next morning: not overdue at
    # October's end (its deadline is not before it), late when resolved.
    await add_case(db, "BSY-01-05", "security", local(10, 31, 0),
                   [("report", local(10, 31, 0), None, "open", None),
                    ("accept", local(10, 31, 1), "open", "accepted", None),
                    ("resolve", local(11, 1, 8), "accepted", "resolved", None)],
                   status="resolved", accepted_by_id=LEADER, resolved_by_id=LEADER,
                   result="已处理", resolved_at=local(11, 1, 8))
    # Due 14:00, 10:05 (the running month's now, to the minute) and 09:00 today.
    for reported in (local(11, 17, 14), local(11, 17, 10, 5), local(11, 17, 9)):
        await add_case(db, "BSY-02-12", "security", reported,
                       [("report", reported, None, "open", None),
                        ("accept", reported + timedelta(hours=1), "open", "accepted", None)],
                       status="accepted", accepted_by_id=LEADER)
    return kinds


ASKS = [
    Ask(Period.parse("2026-10", TZ), NOW),  # a past month
    Ask(Period.parse("2026-09", TZ), NOW),
    Ask(Period.parse("2026-10-10..2026-10-20", TZ), NOW),  # past days
    Ask(Period.parse("2026-11", TZ), NOW),  # the running month
    Ask(Period.parse("2026-11-01..2026-11-18", TZ), NOW),  # this month so far (/stats)
    Ask(Period.parse("2026-11-18..2026-11-18", TZ), NOW),  # today so far
]


async def test_filtering_the_ledger_gives_every_figure(h: Harness) -> None:
    """The generated month and the hand-counted one together: for each period (past,
    running, days), each scope (everything, each grid, a building) and each breakdown (by
    grid, by category, re-categorised cases under their category now), the counts the
    figures give are the counts of the 台账's rows filtered by its columns."""
    async with h.app.sessions() as db:
        await fill_month(db)
        kinds = await generate(db)
    # The month has what the definitions are about.
    assert {"merge", "merged_after_events", "rework", "suspend", "resume", "extension_approve",
            "recategorised", "escalate", "auto_escalate", "escalated_without_level",
            "resolve_check", "check_pass", "rate", "rating_timeout", "reject"} <= kinds
    seen: dict[str, int] = {}
    for ask in ASKS:
        async with h.app.sessions() as db:
            for scope in (None, "BSY-01", "BSY-02", "BSY-01-05"):
                fig = await compute(db, ask.period, scope, now=ask.now)
                rows = await ledger_rows(db, ask.period, scope, ask.now)
                got = assert_reconciled(fig, rows, ask, f"scope {scope}")
                for k, v in got.items():
                    seen[k] = seen.get(k, 0) + v
            rows = await ledger_rows(db, ask.period, None, ask.now)
            for by, column in (("grid", "grid"), ("category", "category")):
                groups = await breakdown(db, ask.period, None, by, now=ask.now)  # type: ignore[arg-type]
                for _code, name, fig in groups:
                    assert_reconciled(fig, [r for r in rows if r[column] == name], ask,
                                      f"{by} {name}")
                listed = {r[column] for r in rows}
                assert listed <= {name for _, name, _ in groups}, by
    # Every count was exercised, more than once.
    assert all(v > 1 for v in seen.values()), seen


async def test_the_running_month_sees_today_as_it_is(h: Harness) -> None:
    """In the running month at 10:05, the cases due at 14:00 and at 10:05 are open and not
    overdue; the one due at 09:00 is overdue by an hour and five minutes."""
    async with h.app.sessions() as db:
        await generate(db)
        nov = Period.parse("2026-11", TZ)
        rows = {(r["received_at"], r["deadline"]): r
                for r in await ledger_rows(db, nov, "BSY-02-12", NOW)}
    assert rows[("2026-11-17 14:00", "2026-11-18 14:00")]["overdue"] == "否"
    assert rows[("2026-11-17 10:05", "2026-11-18 10:05")]["overdue"] == "否"
    due_nine = rows[("2026-11-17 09:00", "2026-11-18 09:00")]
    assert (due_nine["overdue"], due_nine["overdue_by"]) == ("是", "1小时5分钟")


def _drifted(fig: Figures, **change: int) -> Figures:
    return Figures(**{**vars(fig), **change})


async def test_a_drift_of_either_side_is_caught(h: Harness) -> None:
    """The check is not blind: any count of the figures off by one fails it."""
    async with h.app.sessions() as db:
        await fill_month(db)
        ask = ASKS[0]
        fig = await compute(db, ask.period, None, now=ask.now)
        rows = await ledger_rows(db, ask.period, None, ask.now)
    names = list(assert_reconciled(fig, rows, ask, "as it is"))
    assert len(names) == 14
    for name in names:
        with pytest.raises(AssertionError):
            assert_reconciled(_drifted(fig, **{name: getattr(fig, name) + 1}), rows, ask, name)
