"""What every report counts, defined once (issue 18, item 4; issue 19, defects 1, 3, 4, 5).

The figures (bot.ledger.figures: `gridbot stats`, `/stats`, the 台账's figures sheet, the
monthly score), the 台账's rows and its judged columns (bot.ledger.export) and the daily
digest (bot.ledger.digest) count with the expressions below and with nothing else, so
filtering the 台账's rows gives every figure again (tests/ledger/test_definitions.py checks
it on a generated month). They are SQLAlchemy expressions over `cases` (and `case_events`
joined to its case), for grouped statements on SQLite and PostgreSQL alike.

- **A period** is a half-open span of local days, [start, end); "in the period" means
  start <= t < end. **Its as-of** is min(now, end): a running period is measured as of
  now, an ended one as of its end.
- **A counted case**: not rejected at verification, not merged into another (合并: the
  main case counts for both). A case that is not counted counts in no figure, and neither
  do its events (its 上报, 返工, 不满意 before it was merged).
- **Received** (受理) in a period: a counted case reported in it.
- **Closed** (结案) in a period: a counted case whose standing result (`resolved_at`: set by
  办结, cleared by 返工) was recorded in it. **On time** (按期): resolved_at <= deadline_at
  (the round's deadline with its approved extensions); **late** (超期) otherwise.
- **Due** (应结案) in a period: a counted case closed in it, or whose deadline is in it while
  it is not suspended and was not already closed before the period began.
- **Open at a moment**: a counted case reported before it without a result recorded before
  it. **Overdue at a moment**: open then, not suspended (挂账 stops the clock: never
  overdue), its deadline before the moment. **Late as of a moment** (the 台账's 是否超期):
  closed before the moment after its deadline, or overdue at the moment.
- **Resolved** (办结) in a period: received in it and closed before its as-of.
- **Rework** (返工): a `rework` event of a counted case (不满意, or a failed check);
  **不满意**: a rework from status resolved. **Escalation** (上报) to the community or the
  street: an `escalate` or `auto_escalate` event of a counted case by the level it went
  to (none recorded, before revision 0005: the community). **Satisfied** (满意 / 基本满意):
  a `rate` event of a counted case rated good / fair; **no feedback** (未评价): a
  `rating_timeout` event. Events count in the period they happen in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, Select, and_, literal, or_, select
from sqlalchemy import case as when

from bot.cases.events import EventKind
from bot.cases.status import CaseStatus
from bot.org.roles import Level
from storage.models import Case, CaseEvent, UTCDateTime

S = CaseStatus
E = EventKind

# --- names ----------------------------------------------------------------------------------
# Events (`case_events.action`) are EventKind members, statuses CaseStatus members, levels
# Level members. The named sets of them the reports read:
ESCALATIONS = (E.ESCALATE, E.AUTO_ESCALATE)
# The handler's first act on a case, its 接单 (taken, handed to the building head, or done
# at once): the figures' hours to accept.
FIRST_ACTS = (E.ACCEPT, E.ASSIGN, E.RESOLVE, E.RESOLVE_CHECK)
# The events that count in the period they happen in.
COUNTED_EVENTS = (E.REWORK, *ESCALATIONS, E.RATE, E.RATING_TIMEOUT)
# `cases.rating` and `cases.close_reason` have no enum in bot.cases: these constants are
# their only spelling in bot.ledger.
GOOD, FAIR, BAD = "good", "fair", "bad"
RATINGS = (GOOD, FAIR, BAD)
NO_FEEDBACK = "no_feedback"

# Cases counted nowhere.
UNCOUNTED = (S.REJECTED, S.MERGED)
# The statuses of a counted case without a standing result: open now is exactly these.
# Queries about now (the digest) narrow on them for the status index; open_at() decides.
UNRESOLVED = (S.VERIFYING, S.OPEN, S.ACCEPTED, S.ASSIGNED, S.SUSPENDED)


# --- the period -----------------------------------------------------------------------------


def zone_of(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {tz!r}") from exc


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


# Years a period may name: local midnights far outside them do not fit a datetime in UTC
# (year 1 in Asia/Shanghai is year 0 in UTC), and no grid has data there.
FIRST_YEAR, LAST_YEAR = 1970, 2999


@dataclass(frozen=True)
class Period:
    start: datetime  # aware UTC, inclusive (local midnight of the first day in `tz`)
    end: datetime  # aware UTC, exclusive
    label: str  # "2026-10" or "2026-10-01..2026-10-15"
    tz: str

    @classmethod
    def parse(cls, text: str, tz: str) -> Period:
        """`2026-10` (a month) or `2026-10-01..2026-10-15` (both days included)."""
        zone = zone_of(tz)
        text = text.strip()
        try:
            if ".." in text:
                first_s, last_s = text.split("..", 1)
                first, last = date.fromisoformat(first_s), date.fromisoformat(last_s)
                if len(first_s) != 10 or len(last_s) != 10:
                    raise ValueError(text)
            else:
                year_s, month_s = text.split("-")
                if len(year_s) != 4 or len(month_s) != 2:
                    raise ValueError(text)
                first = date(int(year_s), int(month_s), 1)
                if not FIRST_YEAR <= first.year <= LAST_YEAR:
                    raise ValueError(text)
                return cls._month(first, zone, tz)
            if not (first.year >= FIRST_YEAR and last.year <= LAST_YEAR):
                raise ValueError(text)
        except (ValueError, OverflowError):
            raise ValueError(f"a period is a month YYYY-MM (e.g. 2026-10) or days "
                             f"YYYY-MM-DD..YYYY-MM-DD, not {text!r}") from None
        if last < first:
            raise ValueError(f"the period {text!r} ends before it starts")
        return cls(start=local_midnight(first, zone),
                   end=local_midnight(last + timedelta(days=1), zone),
                   label=f"{first.isoformat()}..{last.isoformat()}", tz=tz)

    @classmethod
    def _month(cls, first: date, zone: ZoneInfo, tz: str) -> Period:
        return cls(start=local_midnight(first, zone), end=local_midnight(_next_month(first), zone),
                   label=f"{first.year:04d}-{first.month:02d}", tz=tz)

    @classmethod
    def month_of(cls, when: datetime, tz: str) -> Period:
        """The month (in `tz`) holding the instant `when`."""
        zone = zone_of(tz)
        local = when.astimezone(zone)
        return cls._month(date(local.year, local.month, 1), zone, tz)

    def previous_month(self) -> Period:
        """The month before the one this period starts in."""
        zone = zone_of(self.tz)
        first = self.start.astimezone(zone).date().replace(day=1)
        before = (first - timedelta(days=1)).replace(day=1)
        return self._month(before, zone, self.tz)

    def days(self) -> list[date]:
        """The local days of the period, in order."""
        zone = zone_of(self.tz)
        day = self.start.astimezone(zone).date()
        out: list[date] = []
        while local_midnight(day, zone) < self.end:
            out.append(day)
            day += timedelta(days=1)
        return out

    def as_of(self, now: datetime | None = None) -> datetime:
        """The moment the period is measured at: `now` (default: the real clock) while it
        runs, its end once it has ended."""
        return min(self.end, now if now is not None else datetime.now(UTC))


def within(col: Any, period: Period) -> ColumnElement[bool]:
    """`col` in the period: start <= col < end."""
    return and_(col >= period.start, col < period.end)


def _moment(moment: datetime) -> ColumnElement[datetime]:
    return literal(moment, UTCDateTime())


# --- cases ----------------------------------------------------------------------------------


def counted() -> ColumnElement[bool]:
    """A case some figure may count: not rejected at verification, not merged."""
    return Case.status.notin_(UNCOUNTED)


def suspended() -> ColumnElement[bool]:
    """挂账: the clock is stopped, so the case is neither due nor overdue."""
    return Case.status == S.SUSPENDED


def received_in(period: Period) -> ColumnElement[bool]:
    """受理: a counted case reported in the period."""
    return and_(counted(), within(Case.reported_at, period))


def on_time() -> ColumnElement[bool]:
    """按期: the standing result recorded by the round's deadline (extensions included)."""
    return Case.resolved_at <= Case.deadline_at


def late() -> ColumnElement[bool]:
    """超期 (of a result): not on time, recorded after the round's deadline."""
    return ~on_time()


def closed_in(period: Period) -> ColumnElement[bool]:
    """结案: a counted case whose standing result was recorded in the period."""
    return and_(counted(), within(Case.resolved_at, period))


def closed_on_time_in(period: Period) -> ColumnElement[bool]:
    return and_(closed_in(period), on_time())


def closed_late_in(period: Period) -> ColumnElement[bool]:
    return and_(closed_in(period), late())


def due_in(period: Period) -> ColumnElement[bool]:
    """应结案: closed in the period, or due in it (its deadline in the period), not suspended
    and not already closed before the period began (issue 19, defect 1)."""
    return or_(closed_in(period), and_(
        counted(), within(Case.deadline_at, period), ~suspended(),
        or_(Case.resolved_at.is_(None), Case.resolved_at >= period.start)))


def open_at(moment: datetime) -> ColumnElement[bool]:
    """Open at `moment`: a counted case reported before it, without a result recorded
    before it (verifying, waiting, in hand or suspended then)."""
    at = _moment(moment)
    return and_(counted(), Case.reported_at < at,
                or_(Case.resolved_at.is_(None), Case.resolved_at >= at))


def running_at(moment: datetime) -> ColumnElement[bool]:
    """Open at `moment` with its clock running (not suspended)."""
    return and_(open_at(moment), ~suspended())


def overdue_at(moment: datetime) -> ColumnElement[bool]:
    """超期 (of an open case) at `moment`: running then, and past its deadline. A case due
    at 14:00 is not overdue at 10:05 (issue 19, defect 4)."""
    return and_(running_at(moment), Case.deadline_at < _moment(moment))


def late_at(moment: datetime) -> ColumnElement[bool]:
    """The 台账's 是否超期 as of `moment`: a result recorded before it after the deadline, or
    overdue at it. What happens after the moment does not change it (issue 19, defect 5)."""
    at = _moment(moment)
    return or_(and_(counted(), Case.resolved_at < at, late()), overdue_at(moment))


def late_until(moment: datetime) -> ColumnElement[datetime]:
    """Where the 台账's 超期时长 runs to (from the deadline), as of `moment`: the result, if
    recorded before the moment; the moment otherwise."""
    at = _moment(moment)
    return when((Case.resolved_at < at, Case.resolved_at), else_=at)


def resolved_in(period: Period, as_of: datetime) -> ColumnElement[bool]:
    """办结 (办结率's numerator): received in the period and closed before its as-of."""
    return and_(received_in(period), Case.resolved_at < _moment(as_of))


def touching(period: Period) -> ColumnElement[bool]:
    """An index-friendly superset of the cases any figure of the period counts (each term
    has an index of its own): reported, resolved or due in the period or later, or
    without a result. Statements narrow on it; the definitions above decide."""
    return or_(within(Case.reported_at, period), within(Case.deadline_at, period),
               Case.resolved_at >= period.start, Case.resolved_at.is_(None))


# --- events (case_events joined to their case) --------------------------------------------


def rework(ev: Any = CaseEvent) -> ColumnElement[bool]:
    """返工: 不满意 at the follow-up, or a failed check."""
    return and_(counted(), ev.action == E.REWORK)


def unsatisfied(ev: Any = CaseEvent) -> ColumnElement[bool]:
    """不满意: a rework from status resolved (a failed check leaves status checking)."""
    return and_(rework(ev), ev.from_status == S.RESOLVED)


def escalation(level: Level, ev: Any = CaseEvent) -> ColumnElement[bool]:
    """上报 to the community or the street, by a person or by the timer. Events recorded
    before revision 0005 carry no level and count as to the community."""
    if level == Level.STREET:
        to: ColumnElement[bool] = ev.level == Level.STREET
    elif level == Level.COMMUNITY:
        to = or_(ev.level == Level.COMMUNITY, ev.level.is_(None))
    else:
        raise ValueError(f"a case is escalated to the community or the street, not {level}")
    return and_(counted(), ev.action.in_(ESCALATIONS), to)


def rated(rating: str, ev: Any = CaseEvent) -> ColumnElement[bool]:
    """满意 (good) or 基本满意 (fair): the rating that closed the case."""
    return and_(counted(), ev.action == E.RATE, Case.rating == rating)


def no_feedback(ev: Any = CaseEvent) -> ColumnElement[bool]:
    """未评价: closed because nobody rated in time."""
    return and_(counted(), ev.action == E.RATING_TIMEOUT)


def with_counted_events(period: Period) -> Select[int]:
    """The ids of the cases with an event some figure of the period counts (whether the
    case counts is the enclosing statement's counted())."""
    return select(CaseEvent.case_id).where(CaseEvent.action.in_(COUNTED_EVENTS),
                                           within(CaseEvent.at, period))


def listed(period: Period, as_of: datetime) -> ColumnElement[bool]:
    """A row of the period's 台账: a case some figure of the period counts (received,
    closed, due, open at its as-of, or with a counted event in it), and no other."""
    # Each of those was reported before the period's end: the reports' index narrows.
    return and_(counted(), Case.reported_at < period.end, or_(
        received_in(period), closed_in(period), due_in(period), open_at(as_of),
        Case.id.in_(with_counted_events(period))))


__all__ = [
    "BAD", "COUNTED_EVENTS", "ESCALATIONS", "FAIR", "FIRST_ACTS", "GOOD", "NO_FEEDBACK",
    "RATINGS", "UNCOUNTED", "UNRESOLVED", "Period", "closed_in", "closed_late_in",
    "closed_on_time_in", "counted", "due_in", "escalation", "late", "late_at", "late_until",
    "listed", "local_midnight", "no_feedback", "on_time", "open_at", "overdue_at", "rated",
    "received_in", "resolved_in", "rework", "running_at", "suspended", "touching", "unsatisfied",
    "with_counted_events", "within", "zone_of",
]
