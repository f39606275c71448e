"""A generated month of cases with known figures, on the sample registry (issue 10).

`fill_month(db)` writes twenty cases around October 2026 (Asia/Shanghai) into a database
that holds the sample registry (a harness's), with their audit events and requests, as the
domain would have left them; it returns the case ids by name and the figures each scope and
period must give. C (ledger), D (/stats) and E (digest, score) tests reuse it.

The cases never wake the sweep (`next_check_at` is None), so a test may move the clock
without the domain changing them. Every answer below was counted by hand from the table in
the comments, not by code like the code under test.

    c1  BSY-01-03 facility   10-02 09:00  resolved 10-03 09:00, rated good: on time, 满意
    c2  BSY-01-03 sanitation 10-05 08:00  resolved 10-08 08:00 (deadline 10-07 08:00),
                                          rated fair: late ×1.5, 基本满意
    c3  BSY-01-05 facility   10-10 09:00  不满意 10-11 20:00 (返工), round 2 resolved
                                          10-13 20:00, rated good: on time, 满意
    c4  BSY-01-05 housing    10-12 10:00  check failed 10-13 15:00 (返工), round 2
                                          passed, rating timed out: on time, no feedback
    c5  BSY-02-12 security   10-15 09:00  auto-escalated to the community, 48h of 24h,
                                          rated good: late ×2, 满意
    c6  BSY-02-12 dispute    10-03 09:00  escalated to community, then street; deadline
                                          10-10 09:00, still open: open, overdue
    c7  BSY-01-03 other      10-20 14:00  resolved 10-21, rating timed out: no feedback
    c8  BSY-01-03 sanitation 10-22 09:00  rated good, then the reporter erased (reporter
                                          None, no description): on time, 满意
    c9  BSY-01-03 facility   09-30 23:30  September, resolved 10-02: on time, 满意
    c10 BSY-01-05 sanitation 10-31 23:30  15:30 UTC: October; open, due in November
    c11 BSY-01-05 other      11-01 00:30  10-31 16:30 UTC: November
    c12 BSY-01-03 other      10-08 10:00  rejected at verification: counts nowhere
    c13 BSY-02-12 facility   10-18 09:00  +48h approved, resolved after the first
                                          deadline: on time (by it), 基本满意
    c14 BSY-02-12 sanitation 10-24 09:00  +24h approved, still late (×4/3); result
                                          waits for the rating (status resolved)
    c15 BSY-01-03 facility   10-06 09:00  suspended (挂账) 10-07 until 12-01: open,
                                          not due, not overdue
    c16 BSY-01-05 other      10-30 20:00  waiting for verification: open
    c17 BSY-01-05 security   10-29 09:00  accepted, deadline 10-30 09:00: open, overdue
    c18 BSY-01-03 facility   10-28 09:00  deadline 10-31 09:00: October open, overdue;
                                          resolved 11-02 09:00: November late ×5/3, 满意
    c19 BSY-02-12 fire       10-25 22:00  urgent, resolved 23:50, rated good: on time
    c20 BSY-01-05 other      10-01 07:00  09-30 23:00 UTC: October; resolved 10-02
                                          07:00, rated fair: on time, 基本满意
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ledger.figures import Figures
from storage.models import Case, CaseEvent, CaseRequest, Category, Node, Person

TZ = "Asia/Shanghai"
ZONE = ZoneInfo(TZ)
LEADER, LEADER2, COMMUNITY_SUP, STREET_SUP, HEAD, HEAD5 = (
    920001, 920011, 910001, 900001, 930103, 930105)
REPORTERS = [5551001 + i for i in range(6)]


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A local (Shanghai) time of 2026, as aware UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE).astimezone(UTC)


@dataclass
class _Case:
    name: str
    building: str
    category: str
    reported: datetime
    reporter: int | None = REPORTERS[0]
    description: str = "楼道灯坏了"
    events: list[tuple[str, datetime, str | None, str | None, str | None, int | None]] = (
        field(default_factory=list))
    row: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: str = "open"

    def do(self, action: str, at: datetime, to: str | None = None, *, level: str | None = None,
           actor: int | None = LEADER) -> _Case:
        before = self.status
        if to is not None:
            self.status = to
        self.events.append((action, at, before, self.status, level, actor))
        return self


def _cases() -> list[_Case]:
    L = local
    out: list[_Case] = []

    def new(name: str, building: str, category: str, reported: datetime,
            **kw: Any) -> _Case:
        c = _Case(name, building, category, reported, **kw)
        c.events.append(("report", reported, None, "open", None, c.reporter))
        out.append(c)
        return c

    c = new("c1", "BSY-01-03", "facility", L(10, 2, 9))
    c.do("accept", L(10, 2, 10), "accepted").do("resolve", L(10, 3, 9), "resolved")
    c.do("rate", L(10, 3, 12), "closed", actor=c.reporter)
    c.row = dict(resolved_at=L(10, 3, 9), closed_at=L(10, 3, 12), close_reason="rated",
                 rating="good")

    c = new("c2", "BSY-01-03", "sanitation", L(10, 5, 8), reporter=REPORTERS[1])
    c.do("accept", L(10, 5, 12), "accepted").do("resolve", L(10, 8, 8), "resolved")
    c.do("rate", L(10, 8, 10), "closed", actor=c.reporter)
    c.row = dict(resolved_at=L(10, 8, 8), closed_at=L(10, 8, 10), close_reason="rated",
                 rating="fair")

    c = new("c3", "BSY-01-05", "facility", L(10, 10, 9), reporter=REPORTERS[2])
    c.do("accept", L(10, 10, 9, 30), "accepted").do("resolve", L(10, 11, 9), "resolved")
    c.do("rework", L(10, 11, 20), "open", actor=c.reporter)
    c.do("accept", L(10, 12, 8), "accepted").do("resolve", L(10, 13, 20), "resolved")
    c.do("rate", L(10, 14, 9), "closed", actor=c.reporter)
    c.row = dict(round=2, clock_started_at=L(10, 11, 20), resolved_at=L(10, 13, 20),
                 closed_at=L(10, 14, 9), close_reason="rated", rating="good")

    c = new("c4", "BSY-01-05", "housing", L(10, 12, 10), reporter=REPORTERS[3])
    c.do("accept", L(10, 12, 11), "accepted")
    c.do("resolve_check", L(10, 13, 10), "checking")
    c.do("rework", L(10, 13, 15), "open", actor=HEAD5)
    c.do("accept", L(10, 13, 16), "accepted")
    c.do("resolve_check", L(10, 15, 15), "checking")
    c.do("check_pass", L(10, 15, 18), "resolved", actor=HEAD5)
    c.do("rating_timeout", L(10, 18, 18), "closed", actor=None)
    c.row = dict(round=2, clock_started_at=L(10, 13, 15), resolved_at=L(10, 15, 15),
                 closed_at=L(10, 18, 18), close_reason="no_feedback", checked="passed",
                 checked_at=L(10, 15, 18))

    c = new("c5", "BSY-02-12", "security", L(10, 15, 9), reporter=REPORTERS[4])
    c.do("overdue", L(10, 16, 9), actor=None)
    c.do("auto_escalate", L(10, 16, 11), "open", level="community", actor=None)
    c.do("accept", L(10, 16, 12), "accepted", actor=COMMUNITY_SUP)
    c.do("resolve", L(10, 17, 9), "resolved", actor=COMMUNITY_SUP)
    c.do("rate", L(10, 17, 10), "closed", actor=c.reporter)
    c.row = dict(level="community", resolved_at=L(10, 17, 9), closed_at=L(10, 17, 10),
                 close_reason="rated", rating="good")

    c = new("c6", "BSY-02-12", "dispute", L(10, 3, 9), reporter=REPORTERS[5])
    c.do("escalate", L(10, 4, 9), "open", level="community", actor=LEADER2)
    c.do("escalate", L(10, 6, 9), "open", level="street", actor=COMMUNITY_SUP)
    c.do("accept", L(10, 6, 10), "accepted", actor=STREET_SUP)
    c.row = dict(level="street", accepted_by_id=STREET_SUP)

    c = new("c7", "BSY-01-03", "other", L(10, 20, 14))
    c.do("accept", L(10, 20, 15), "accepted").do("resolve", L(10, 21, 14), "resolved")
    c.do("rating_timeout", L(10, 24, 14), "closed", actor=None)
    c.row = dict(resolved_at=L(10, 21, 14), closed_at=L(10, 24, 14), close_reason="no_feedback")

    # The reporter's data was erased after the rating: the case stays, anonymised.
    c = new("c8", "BSY-01-03", "sanitation", L(10, 22, 9), reporter=None, description="")
    c.do("accept", L(10, 22, 9, 10), "accepted").do("resolve", L(10, 23, 9), "resolved")
    c.do("rate", L(10, 23, 18), "closed", actor=None)
    c.row = dict(resolved_at=L(10, 23, 9), closed_at=L(10, 23, 18), close_reason="rated",
                 rating="good")

    c = new("c9", "BSY-01-03", "facility", L(9, 30, 23, 30), reporter=REPORTERS[1])
    c.do("accept", L(10, 1, 8), "accepted").do("resolve", L(10, 2, 10), "resolved")
    c.do("rate", L(10, 2, 12), "closed", actor=c.reporter)
    c.row = dict(resolved_at=L(10, 2, 10), closed_at=L(10, 2, 12), close_reason="rated",
                 rating="good")

    c = new("c10", "BSY-01-05", "sanitation", L(10, 31, 23, 30), reporter=REPORTERS[2])
    c.do("accept", L(11, 1, 8), "accepted")

    new("c11", "BSY-01-05", "other", L(11, 1, 0, 30), reporter=REPORTERS[3])

    c = new("c12", "BSY-01-03", "other", L(10, 8, 10), reporter=REPORTERS[4])
    c.events[0] = ("report", L(10, 8, 10), None, "verifying", None, c.reporter)
    c.status = "verifying"
    c.do("reject", L(10, 8, 11), "rejected", actor=HEAD)
    c.row = dict(verified="rejected", closed_at=L(10, 8, 11), close_reason="rejected",
                 reject_reason="重复上报")

    c = new("c13", "BSY-02-12", "facility", L(10, 18, 9))
    c.do("accept", L(10, 18, 10), "accepted", actor=LEADER2)
    c.do("extension_request", L(10, 20, 9), actor=LEADER2)
    c.do("extension_approve", L(10, 20, 12), actor=COMMUNITY_SUP)
    c.do("resolve", L(10, 22, 9), "resolved", actor=LEADER2)
    c.do("rate", L(10, 22, 12), "closed", actor=c.reporter)
    c.row = dict(extended_seconds=48 * 3600, extension_count=1, resolved_at=L(10, 22, 9),
                 closed_at=L(10, 22, 12), close_reason="rated", rating="fair")
    c.requests.append(dict(kind="extension", status="approved", level="grid",
                           approver_level="community", requested_by_id=LEADER2,
                           requested_at=L(10, 20, 9), reason="材料未到", seconds=48 * 3600,
                           answered_by_id=COMMUNITY_SUP, answered_at=L(10, 20, 12)))

    c = new("c14", "BSY-02-12", "sanitation", L(10, 24, 9), reporter=REPORTERS[1])
    c.do("accept", L(10, 24, 9, 30), "accepted", actor=LEADER2)
    c.do("extension_request", L(10, 25, 8), actor=LEADER2)
    c.do("extension_approve", L(10, 25, 9), actor=COMMUNITY_SUP)
    c.do("resolve", L(10, 28, 9), "resolved", actor=LEADER2)
    c.row = dict(extended_seconds=24 * 3600, extension_count=1, resolved_at=L(10, 28, 9))
    c.requests.append(dict(kind="extension", status="approved", level="grid",
                           approver_level="community", requested_by_id=LEADER2,
                           requested_at=L(10, 25, 8), reason="等待物业", seconds=24 * 3600,
                           answered_by_id=COMMUNITY_SUP, answered_at=L(10, 25, 9)))

    c = new("c15", "BSY-01-03", "facility", L(10, 6, 9), reporter=REPORTERS[2])
    c.do("accept", L(10, 6, 10), "accepted")
    c.do("suspension_request", L(10, 6, 18))
    c.do("suspend", L(10, 7, 9), "suspended", actor=COMMUNITY_SUP)
    c.row = dict(review_at=L(12, 1, 9))
    c.requests.append(dict(kind="suspension", status="approved", level="grid",
                           approver_level="community", requested_by_id=LEADER,
                           requested_at=L(10, 6, 18), reason="需要维修资金",
                           review_at=L(12, 1, 9), answered_by_id=COMMUNITY_SUP,
                           answered_at=L(10, 7, 9)))

    c = new("c16", "BSY-01-05", "other", L(10, 30, 20), reporter=REPORTERS[3])
    c.events[0] = ("report", L(10, 30, 20), None, "verifying", None, c.reporter)
    c.status = "verifying"
    c.row = dict(verified="pending")

    c = new("c17", "BSY-01-05", "security", L(10, 29, 9), reporter=REPORTERS[4])
    c.do("accept", L(10, 29, 10), "accepted").do("overdue", L(10, 30, 9), actor=None)

    c = new("c18", "BSY-01-03", "facility", L(10, 28, 9), reporter=REPORTERS[5])
    c.do("accept", L(10, 28, 10), "accepted").do("overdue", L(10, 31, 9), actor=None)
    c.do("resolve", L(11, 2, 9), "resolved")
    c.do("rate", L(11, 2, 10), "closed", actor=c.reporter)
    c.row = dict(resolved_at=L(11, 2, 9), closed_at=L(11, 2, 10), close_reason="rated",
                 rating="good")

    c = new("c19", "BSY-02-12", "fire", L(10, 25, 22))
    c.do("accept", L(10, 25, 22, 10), "accepted", actor=LEADER2)
    c.do("resolve", L(10, 25, 23, 50), "resolved", actor=LEADER2)
    c.do("rate", L(10, 26, 8), "closed", actor=c.reporter)
    c.row = dict(urgent=True, verified="skipped", resolved_at=L(10, 25, 23, 50),
                 closed_at=L(10, 26, 8), close_reason="rated", rating="good")

    c = new("c20", "BSY-01-05", "other", L(10, 1, 7), reporter=REPORTERS[1])
    c.do("accept", L(10, 1, 7, 30), "accepted").do("resolve", L(10, 2, 7), "resolved")
    c.do("rate", L(10, 2, 9), "closed", actor=c.reporter)
    c.row = dict(resolved_at=L(10, 2, 7), closed_at=L(10, 2, 9), close_reason="rated",
                 rating="fair")
    return out


@dataclass(frozen=True)
class Month:
    ids: dict[str, int]  # case name (c1..c20) -> case id
    # (period label, scope code or None) -> the figures compute() must give
    expected: dict[tuple[str, str | None], Figures]
    # (period label, scope, by) -> {code: figures} that breakdown() must give (the groups
    # listed; others in the scope are all zeros)
    breakdowns: dict[tuple[str, str | None, str], dict[str, Figures]]
    # October's local days with something in them: day -> (received, closed, on time)
    october_days: dict[date, tuple[int, int, int]]


async def fill_month(db: AsyncSession) -> Month:
    """Writes the month into `db` (which holds the sample registry) and commits."""
    nodes = {code: node_id for code, node_id in
             (await db.execute(select(Node.code, Node.id))).all()}
    sla = {code: s for code, s in
           (await db.execute(select(Category.code, Category.sla_seconds))).all()}
    known = set((await db.scalars(select(Person.id).where(Person.id.in_(REPORTERS)))).all())
    for i, pid in enumerate(REPORTERS):
        if pid not in known:
            db.add(Person(id=pid, name=f"居民{i + 1}", created_at=local(9, 1, 9)))
    await db.flush()
    ids: dict[str, int] = {}
    for spec in _cases():
        row: dict[str, Any] = dict(
            status=spec.status, rev=len(spec.events), level="grid", category=spec.category,
            urgent=False, verified="unverified", building_id=nodes[spec.building],
            reporter_id=spec.reporter, submitted_by_id=spec.reporter,
            description=spec.description, reported_at=spec.reported,
            clock_started_at=spec.reported, round=1, next_check_at=None)
        row.update(spec.row)
        row["deadline_at"] = (row["clock_started_at"]
                              + timedelta(seconds=sla[spec.category]
                                          + row.get("extended_seconds", 0)))
        if row["status"] not in ("open", "verifying", "rejected"):
            row.setdefault("accepted_by_id", LEADER if spec.building != "BSY-02-12" else LEADER2)
        if row.get("resolved_at") is not None:
            row.setdefault("result", "已处理")
            row.setdefault("resolved_by_id", row["accepted_by_id"])
        case = Case(**row)
        db.add(case)
        await db.flush()
        ids[spec.name] = case.id
        for action, at, before, after, level, actor in spec.events:
            db.add(CaseEvent(case_id=case.id, at=at, actor_id=actor, action=action,
                             from_status=before, to_status=after, level=level))
        for req in spec.requests:
            db.add(CaseRequest(case_id=case.id, **req))
    await db.commit()
    return Month(ids=ids, expected=EXPECTED, breakdowns=BREAKDOWNS, october_days=OCTOBER_DAYS)


def assert_figures(got: Figures, want: Figures) -> None:
    """Counts equal; times and factors equal to within 1e-5 (SQLite's julianday arithmetic
    is exact to about a millisecond)."""
    for name, value in vars(want).items():
        actual = getattr(got, name)
        if isinstance(value, float):
            assert actual is not None and abs(actual - value) < 1e-5, (name, actual, value)
        else:
            assert actual == value, (name, actual, value)


DISTRICT_OCT = Figures(
    received=17, due=15, closed=12, closed_on_time=9, closed_late=3, open_at_end=6,
    overdue_at_end=3, reworked=2, escalated_community=2, escalated_street=1, rated=10,
    satisfied=6, fairly_satisfied=3, unsatisfied=1, no_feedback=2, resolved=11,
    accept_hours_median=1.0, accept_hours_p90=8.05,
    resolve_hours_median=41.25, resolve_hours_p90=94.7, overdue_factor=29 / 18)
GRID1_OCT = Figures(
    received=12, due=10, closed=8, closed_on_time=7, closed_late=1, open_at_end=5,
    overdue_at_end=2, reworked=2, escalated_community=0, escalated_street=0, rated=7,
    satisfied=4, fairly_satisfied=2, unsatisfied=1, no_feedback=2, resolved=7,
    accept_hours_median=1.0, accept_hours_p90=5.35,
    resolve_hours_median=29.25, resolve_hours_p90=78.8, overdue_factor=1.5)
GRID2_OCT = Figures(
    received=5, due=5, closed=4, closed_on_time=2, closed_late=2, open_at_end=1,
    overdue_at_end=1, reworked=0, escalated_community=2, escalated_street=1, rated=3,
    satisfied=2, fairly_satisfied=1, unsatisfied=0, no_feedback=0, resolved=4,
    accept_hours_median=0.75, accept_hours_p90=19.2,
    resolve_hours_median=72.0, resolve_hours_p90=96.0, overdue_factor=5 / 3)
BUILDING5_OCT = Figures(
    received=6, due=4, closed=3, closed_on_time=3, closed_late=0, open_at_end=3,
    overdue_at_end=1, reworked=2, escalated_community=0, escalated_street=0, rated=3,
    satisfied=1, fairly_satisfied=1, unsatisfied=1, no_feedback=1, resolved=3,
    # c3 0.5h / 83h, c4 1h / 77h, c20 0.5h / 24h
    accept_hours_median=0.5, accept_hours_p90=0.9,
    resolve_hours_median=77.0, resolve_hours_p90=81.8, overdue_factor=None)
FACILITY_OCT = Figures(
    received=5, due=5, closed=4, closed_on_time=4, closed_late=0, open_at_end=2,
    overdue_at_end=1, reworked=1, escalated_community=0, escalated_street=0, rated=5,
    satisfied=3, fairly_satisfied=1, unsatisfied=1, no_feedback=0, resolved=3,
    # c1 1h / 24h, c3 0.5h / 83h, c9 8.5h / 34.5h, c13 1h / 96h
    accept_hours_median=1.0, accept_hours_p90=6.25,
    resolve_hours_median=58.75, resolve_hours_p90=92.1, overdue_factor=None)
DISTRICT_NOV = Figures(
    received=1, due=4, closed=1, closed_on_time=0, closed_late=1, open_at_end=6,
    overdue_at_end=5, reworked=0, escalated_community=0, escalated_street=0, rated=1,
    satisfied=1, fairly_satisfied=0, unsatisfied=0, no_feedback=0, resolved=0,
    accept_hours_median=1.0, accept_hours_p90=1.0,
    resolve_hours_median=120.0, resolve_hours_p90=120.0, overdue_factor=5 / 3)
DISTRICT_SEP = Figures(received=1, open_at_end=1)

EXPECTED: dict[tuple[str, str | None], Figures] = {
    ("2026-10", None): DISTRICT_OCT,
    ("2026-10", "LHJD"): DISTRICT_OCT,
    ("2026-10", "BSY"): DISTRICT_OCT,
    ("2026-10", "BSY-01"): GRID1_OCT,
    ("2026-10", "BSY-02"): GRID2_OCT,
    ("2026-10", "BSY-02-12"): GRID2_OCT,
    ("2026-10", "BSY-01-05"): BUILDING5_OCT,
    ("2026-11", None): DISTRICT_NOV,
    ("2026-09", None): DISTRICT_SEP,
}
BREAKDOWNS: dict[tuple[str, str | None, str], dict[str, Figures]] = {
    ("2026-10", "BSY", "grid"): {"BSY-01": GRID1_OCT, "BSY-02": GRID2_OCT},
    ("2026-10", None, "community"): {"BSY": DISTRICT_OCT},
    ("2026-10", "BSY-01", "building"): {"BSY-01-05": BUILDING5_OCT},
    ("2026-10", None, "category"): {"facility": FACILITY_OCT},
}
OCTOBER_DAYS: dict[date, tuple[int, int, int]] = {
    date(2026, 10, 1): (1, 0, 0),  # c20 at 07:00 (still 09-30 in UTC)
    date(2026, 10, 2): (1, 2, 2),  # c1 reported; c9 and c20 resolved
    date(2026, 10, 25): (1, 1, 1),  # c19 reported 22:00 and resolved 23:50
    date(2026, 10, 28): (1, 1, 0),  # c18 reported; c14 resolved late
    date(2026, 10, 31): (1, 0, 0),  # c10 at 23:30
}
