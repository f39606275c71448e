"""The assessment figures of a scope and a period (issue 10): counts, rates and times.

One set of figures, used by `gridbot stats`, the ledger's second sheet, `/stats` and the
monthly score. What each count counts (a counted case, 受理, 结案, 按期, 应结案, open and
overdue at the period's as-of, 返工, 上报, 满意…) is defined once, in bot.ledger.definitions,
which the 台账 and the digest use too; this module groups and counts with those
expressions. A running period is measured as of now, an ended one as of its end
(`Period.as_of`).

Everything is counted in SQL: each call runs a fixed number of grouped statements (one over
cases, one over events, one for the percentiles, plus the directory's check), whatever the
number of cases or groups. Percentiles come from window functions (row_number / count over
the group), which SQLite and PostgreSQL both have, so both give percentile_cont's answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Float, Select, and_, func, literal, or_, select, true
from sqlalchemy import case as when
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bot.ledger import definitions as defs
from bot.ledger.definitions import FAIR, GOOD, Period, local_midnight, within, zone_of
from bot.org.directory import Directory, Place, directory, org_settings
from bot.org.roles import Level
from storage.models import Case, CaseEvent, Node

Breakdown = Literal["grid", "community", "category", "building"]
SCOPE_KINDS = ("street", "community", "grid", "building")


class ScopeError(ValueError):
    """A scope code that names no street, community, grid or building of the registry."""


# --- the figures --------------------------------------------------------------------------


# The longest period asked for at once: a year, leap day included. Longer ones are refused
# rather than computed (a 40-year period once held a resident's report for 18 s).
MAX_PERIOD_DAYS = 366


class PeriodRefused(ValueError):
    """A period the figures are not computed for; `label` names the text that says why."""

    def __init__(self, label: str, message: str, **context: object) -> None:
        super().__init__(message)
        self.label = label
        self.context = context


async def askable(db: AsyncSession, period: Period, now: datetime) -> None:
    """Refuses a period longer than a year, one not yet begun, or one that ends before the
    first case was reported (one indexed query)."""
    days = (period.end - period.start) // timedelta(days=1)
    if days > MAX_PERIOD_DAYS:
        raise PeriodRefused("stats_period_too_long",
                            f"the period {period.label} is {days} days: at most a year "
                            f"({MAX_PERIOD_DAYS} days) at a time", code=period.label)
    if period.start > now:
        raise PeriodRefused("stats_period_not_begun",
                            f"the period {period.label} has not begun", code=period.label)
    first = await db.scalar(select(func.min(Case.reported_at)))
    if first is not None and period.end <= first:
        day = first.astimezone(zone_of(period.tz)).date().isoformat()
        raise PeriodRefused("stats_period_before_data",
                            f"no case was reported before {day}: the period {period.label} "
                            f"has no data", code=period.label, first=day)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class Figures:
    """Counts, rates (properties; None when the denominator is 0) and times in hours (None
    when no case was closed in the period)."""

    received: int = 0  # 受理数
    due: int = 0  # 应结案数
    closed: int = 0  # 结案数
    closed_on_time: int = 0  # 按期结案数
    closed_late: int = 0  # 超期结案数
    open_at_end: int = 0  # 待处置
    overdue_at_end: int = 0  # 超期待处置
    reworked: int = 0  # 返工数
    escalated_community: int = 0  # 上报社区
    escalated_street: int = 0  # 上报街道
    rated: int = 0
    satisfied: int = 0  # 满意
    fairly_satisfied: int = 0  # 基本满意
    unsatisfied: int = 0  # 不满意
    no_feedback: int = 0  # 未评价 (closed by the rating timeout)
    resolved: int = 0  # received in the period and closed by its end: 办结率's numerator
    accept_hours_median: float | None = None
    accept_hours_p90: float | None = None
    resolve_hours_median: float | None = None
    resolve_hours_p90: float | None = None
    overdue_factor: float | None = None  # 处置超时倍数: mean of took ÷ limit, late closures

    @property
    def close_rate(self) -> float | None:  # 结案率
        return _ratio(self.closed, self.due)

    @property
    def on_time_rate(self) -> float | None:  # 按期结案率
        return _ratio(self.closed_on_time, self.due)

    @property
    def rework_rate(self) -> float | None:  # 返工率
        return _ratio(self.reworked, self.due)

    @property
    def satisfaction_rate(self) -> float | None:  # 满意率
        return _ratio(self.satisfied + self.fairly_satisfied, self.rated)

    @property
    def resolve_rate(self) -> float | None:  # 办结率
        return _ratio(self.resolved, self.received)

    def as_dict(self) -> dict[str, Any]:
        """Every count, rate and time, for JSON."""
        out = asdict(self)
        for name in RATES:
            out[name] = getattr(self, name)
        return out


RATES = ("close_rate", "on_time_rate", "rework_rate", "satisfaction_rate", "resolve_rate")


@dataclass(frozen=True)
class DayCount:
    day: date
    received: int
    closed: int
    closed_on_time: int


@dataclass(frozen=True)
class Weights:
    """The monthly score's weights (registry `assessment.weights`); rework is a penalty."""

    on_time: float = 50
    closed: float = 20
    satisfied: float = 20
    rework: float = 10

    @classmethod
    def from_settings(cls, raw: dict[str, Any] | None) -> Weights:
        if not raw:
            return cls()
        base = cls()
        return cls(**{k: float(raw.get(k, getattr(base, k)))
                      for k in ("on_time", "closed", "satisfied", "rework")})


def score(fig: Figures, weights: Weights,
          extra: Sequence[tuple[float, float | None]] = ()) -> float:
    """The 100-point score: each weight times its rate, rework as 1 − 返工率 (at least 0),
    scaled so the weights sum to 100. A rate without a denominator (nothing due, nobody
    rated) leaves its weight out and the others are scaled up; nothing to assess at all is
    full marks. `extra`: more (weight, rate) terms, scored alike (the rounds' rates:
    bot.ledger.rounds.RoundWeights.terms)."""
    rework = fig.rework_rate
    terms = [
        (weights.on_time, fig.on_time_rate),
        (weights.closed, fig.close_rate),
        (weights.satisfied, fig.satisfaction_rate),
        (weights.rework, None if rework is None else max(0.0, 1.0 - rework)),
        *extra,
    ]
    counted = [(w, r) for w, r in terms if r is not None and w > 0]
    total = sum(w for w, _ in counted)
    if not total:
        return 100.0
    return round(100.0 * sum(w * min(1.0, r) for w, r in counted) / total, 2)


# --- SQL helpers --------------------------------------------------------------------------


class hours_between(FunctionElement[float]):
    """Hours from the first timestamp to the second, as a float, on SQLite and PostgreSQL
    (the figures' times; the digest's share of the way to a deadline)."""

    type = Float()
    inherit_cache = True
    name = "gridbot_hours"


@compiles(hours_between, "sqlite")
def _hours_sqlite(element: hours_between, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = list(element.clauses)
    return (f"((julianday({compiler.process(b, **kw)}) - "
            f"julianday({compiler.process(a, **kw)})) * 24.0)")


@compiles(hours_between)
def _hours_default(element: hours_between, compiler: SQLCompiler, **kw: Any) -> str:
    a, b = list(element.clauses)
    # The casts give a bound parameter (a `now`) its type on asyncpg.
    return (f"(EXTRACT(EPOCH FROM (CAST({compiler.process(b, **kw)} AS TIMESTAMPTZ) - "
            f"CAST({compiler.process(a, **kw)} AS TIMESTAMPTZ))) / 3600.0)")


def count_if(cond: ColumnElement[bool]) -> ColumnElement[int]:
    """How many rows of the group meet `cond` (0 for none)."""
    return func.coalesce(func.sum(when((cond, 1), else_=0)), 0)


class _Tree:
    """The case's building and the grid and community above it, joined by id."""

    def __init__(self) -> None:
        self.building = aliased(Node, name="fb")
        self.grid = aliased(Node, name="fg")
        self.community = aliased(Node, name="fc")

    def join(self, query: Select[Any] | Any) -> Any:
        return (query.join(self.building, self.building.id == Case.building_id)
                .join(self.grid, self.grid.id == self.building.parent_id)
                .join(self.community, self.community.id == self.grid.parent_id))

    def scope(self, place: Place | None) -> ColumnElement[bool]:
        if place is None:
            return true()
        column = {"building": Case.building_id, "grid": self.grid.id,
                  "community": self.community.id, "street": self.community.parent_id}
        return column[place.kind] == place.id

    def key(self, by: Breakdown | None) -> ColumnElement[Any]:
        if by is None:
            return literal("").label("k")
        column = {"building": Case.building_id, "grid": self.grid.id,
                  "community": self.community.id, "category": Case.category}[by]
        return column.label("k")


def place_for(d: Directory, scope: str | None) -> Place | None:
    """The place a scope code names in the directory (None: the whole registry); ScopeError
    unless it is a street, community, grid or building."""
    if scope is None:
        return None
    place = d.by_code.get(scope.strip())
    if place is None or place.kind not in SCOPE_KINDS:
        raise ScopeError(f"no street, community, grid or building has the code {scope!r}")
    return place


async def scope_place(db: AsyncSession, scope: str | None) -> Place | None:
    """The place a scope code names (None: the whole registry); ScopeError if none."""
    return place_for(await directory(db), scope)


# --- the queries --------------------------------------------------------------------------


async def _figures(db: AsyncSession, period: Period, place: Place | None,
                   by: Breakdown | None, now: datetime | None) -> dict[Any, Figures]:
    tree = _Tree()
    key = tree.key(by)
    as_of = period.as_of(now)
    closed_late = defs.closed_late_in(period)
    limit = func.nullif(hours_between(Case.clock_started_at, Case.deadline_at), 0)
    factor = hours_between(Case.clock_started_at, Case.resolved_at) / limit
    counts = tree.join(select(
        key,
        count_if(defs.received_in(period)).label("received"),
        count_if(defs.resolved_in(period, as_of)).label("resolved"),
        count_if(defs.closed_in(period)).label("closed"),
        count_if(defs.closed_on_time_in(period)).label("closed_on_time"),
        count_if(closed_late).label("closed_late"),
        count_if(defs.due_in(period)).label("due"),
        count_if(defs.open_at(as_of)).label("open_at_end"),
        count_if(defs.overdue_at(as_of)).label("overdue_at_end"),
        func.avg(when((closed_late, factor), else_=None)).label("overdue_factor"),
    ).select_from(Case)).where(
        tree.scope(place),
        # Only cases the period can concern: each term has an index of its own.
        defs.touching(period),
    ).group_by(key)
    out: dict[Any, dict[str, Any]] = {}
    for row in (await db.execute(counts)).mappings():
        values = dict(row)
        k = values.pop("k")
        values = {n: (int(v) if n != "overdue_factor" else
                      (float(v) if v is not None else None)) for n, v in values.items()}
        out[k] = values

    ev = CaseEvent
    events = tree.join(select(
        key,
        count_if(defs.rework(ev)).label("reworked"),
        count_if(defs.unsatisfied(ev)).label("unsatisfied"),
        count_if(defs.escalation(Level.COMMUNITY, ev)).label("esc_c"),
        count_if(defs.escalation(Level.STREET, ev)).label("esc_s"),
        count_if(defs.rated(GOOD, ev)).label("satisfied"),
        count_if(defs.rated(FAIR, ev)).label("fairly_satisfied"),
        count_if(defs.no_feedback(ev)).label("no_feedback"),
    ).select_from(ev).join(Case, Case.id == ev.case_id)).where(
        tree.scope(place),
        ev.action.in_(defs.COUNTED_EVENTS),
        within(ev.at, period),
    ).group_by(key)
    for row in (await db.execute(events)).mappings():
        values = dict(row)
        k = values.pop("k")
        target = out.setdefault(k, {})
        target.update({
            "reworked": int(values["reworked"]), "unsatisfied": int(values["unsatisfied"]),
            "escalated_community": int(values["esc_c"]),
            "escalated_street": int(values["esc_s"]),
            "satisfied": int(values["satisfied"]),
            "fairly_satisfied": int(values["fairly_satisfied"]),
            "no_feedback": int(values["no_feedback"]),
        })

    for k, times in (await _percentiles(db, period, place, tree, by)).items():
        out.setdefault(k, {}).update(times)

    figures: dict[Any, Figures] = {}
    for k, values in out.items():
        rated = (values.get("satisfied", 0) + values.get("fairly_satisfied", 0)
                 + values.get("unsatisfied", 0))
        figures[k] = Figures(rated=rated, **values)
    return figures


# Percentiles as percentile_cont computes them: position p × (n − 1) between the rows
# floor and ceil of it, interpolated. p = num / den, so positions stay integer arithmetic
# (integer division floors alike on both databases for what is never negative).
_PERCENTILES = {"median": (1, 2), "p90": (9, 10)}


async def _percentiles(db: AsyncSession, period: Period, place: Place | None, tree: _Tree,
                       by: Breakdown | None) -> dict[Any, dict[str, float]]:
    key = tree.key(by)
    # Filtered by case only, so the case's events are found by their case index (given the
    # choice, SQLite without statistics walks every accept event for each case).
    first_act = (select(func.min(when((CaseEvent.action.in_(defs.FIRST_ACTS), CaseEvent.at))))
                 .where(CaseEvent.case_id == Case.id)
                 .correlate(Case).scalar_subquery())
    closed = and_(tree.scope(place), defs.closed_in(period))
    measures = []
    for name, hours in (("accept", hours_between(Case.reported_at, first_act)),
                        ("resolve", hours_between(Case.reported_at, Case.resolved_at))):
        base = tree.join(select(key, literal(name).label("m"), hours.label("h"))
                         .select_from(Case)).where(closed)
        inner = base.subquery()
        hours_col = inner.c.h
        ranked = select(
            inner.c.k, inner.c.m, hours_col,
            func.row_number().over(partition_by=inner.c.k, order_by=hours_col).label("rn"),
            func.count().over(partition_by=inner.c.k).label("n"),
        ).where(hours_col.is_not(None))
        measures.append(ranked)
    union = measures[0].union_all(measures[1]).subquery()
    pos = union.c.n - 1
    wanted = []
    for num, den in _PERCENTILES.values():
        below = (pos * num) // den
        above = (pos * num + den - 1) // den
        wanted.append(and_(union.c.rn - 1 >= below, union.c.rn - 1 <= above))
    query = select(union.c.k, union.c.m, union.c.h, union.c.rn, union.c.n).where(or_(*wanted))
    rows: dict[tuple[Any, str], dict[int, float]] = {}
    sizes: dict[tuple[Any, str], int] = {}
    for k, m, h, rn, n in (await db.execute(query)).all():
        rows.setdefault((k, m), {})[int(rn) - 1] = float(h)
        sizes[(k, m)] = int(n)
    out: dict[Any, dict[str, float]] = {}
    for (k, m), values in rows.items():
        n = sizes[(k, m)]
        for label, (num, den) in _PERCENTILES.items():
            exact = (n - 1) * num / den
            lo, hi = (n - 1) * num // den, -(-(n - 1) * num // den)
            v = values[lo] + (values[hi] - values[lo]) * (exact - lo)
            out.setdefault(k, {})[f"{m}_hours_{label}"] = v
    return out


# --- the public calls ---------------------------------------------------------------------


async def compute(db: AsyncSession, period: Period, scope: str | None = None, *,
                  now: datetime | None = None) -> Figures:
    """The figures of `scope` (a street, community, grid or building code; None: every
    case) for `period`, as of `now` while it runs (default: the real clock) and as of its
    end once it has ended. Raises ScopeError for an unknown code."""
    place = place_for(await directory(db), scope)
    return (await _figures(db, period, place, None, now)).get("", Figures())


def _order(d: Directory) -> list[Place]:
    return sorted(d.places.values(), key=lambda p: (p.position, p.id))


def _within_scope(d: Directory, candidate: Place, scope: Place | None) -> bool:
    if scope is None:
        return True
    line = [candidate, *d.ancestors(candidate)]
    return any(p.id == scope.id for p in line) or any(
        p.id == candidate.id for p in d.ancestors(scope))


async def breakdown(db: AsyncSession, period: Period, scope: str | None,
                    by: Breakdown, *, now: datetime | None = None
                    ) -> list[tuple[str, str, Figures]]:
    """The figures of each grid, community, category or building in `scope` (as of `now`, as
    compute()): (code, name, figures) in the registry's order. Every active one is listed,
    with zeros if it had no case; an inactive one only if it has figures."""
    d = await directory(db)
    place = place_for(d, scope)
    found = await _figures(db, period, place, by, now)
    out: list[tuple[str, str, Figures]] = []
    if by == "category":
        settings = await org_settings(db)
        locale = settings.locale if settings is not None else "zh_CN"
        for cat in d.categories.values():
            if cat.active or cat.code in found:
                out.append((cat.code, cat.name(locale), found.get(cat.code, Figures())))
        for code in sorted(set(found) - set(d.categories)):
            out.append((str(code), str(code), found[code]))
        return out
    for p in _order(d):
        if p.kind != by or not _within_scope(d, p, place):
            continue
        if p.active or p.id in found:
            out.append((p.code, p.name, found.get(p.id, Figures())))
    return out


async def daily(db: AsyncSession, period: Period, scope: str | None) -> list[DayCount]:
    """Received, closed and closed on time per local day of the period (two grouped
    statements: the day is a CASE over the period's local midnights)."""
    place = place_for(await directory(db), scope)
    zone = zone_of(period.tz)
    days = period.days()
    bounds = [local_midnight(day + timedelta(days=1), zone) for day in days]

    def bucket(col: Any) -> ColumnElement[int]:
        return when(*[(col < b, i) for i, b in enumerate(bounds)], else_=len(bounds))

    tree = _Tree()
    got: dict[int, list[int]] = {i: [0, 0, 0] for i in range(len(days))}
    rb = bucket(Case.reported_at).label("d")
    received = tree.join(select(rb, func.count()).select_from(Case)).where(
        tree.scope(place), defs.received_in(period),
    ).group_by(rb)
    for i, n in (await db.execute(received)).all():
        if int(i) in got:
            got[int(i)][0] = int(n)
    cb = bucket(Case.resolved_at).label("d")
    closed = tree.join(select(cb, func.count(), count_if(defs.on_time()))
                       .select_from(Case)).where(
        tree.scope(place), defs.closed_in(period),
    ).group_by(cb)
    for i, n, ok in (await db.execute(closed)).all():
        if int(i) in got:
            got[int(i)][1:] = [int(n), int(ok)]
    return [DayCount(day=day, received=got[i][0], closed=got[i][1], closed_on_time=got[i][2])
            for i, day in enumerate(days)]


__all__ = ["RATES", "Breakdown", "DayCount", "Figures", "Period", "ScopeError", "Weights",
           "breakdown", "compute", "daily", "local_midnight", "scope_place", "score"]
