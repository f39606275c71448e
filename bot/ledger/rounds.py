"""The figures of the grid's own rounds (issue 22, point 4): patrols (巡查), care visits (走访)
and campaigns (专项任务), per grid and period, rolled up to a community, a street, everything.

Counted from the tables alone (`patrols`, `patrol_buildings`, `cases.source`,
`care_households`, `care_visits`, `campaigns`, `campaign_grids`), never through bot.rounds:
the rounds record, the ledger counts. Each figure is defined once, here, for `/stats`,
`gridbot stats --json`, the 台账's three sheets (bot.ledger.export) and the monthly score
(bot.ledger.digest.send_score), and documented in docs/figures.md ("The grid's rounds").

A period and its as-of are the cases' (bot.ledger.definitions.Period: local days [start, end),
as of min(now, end)). Per grid:

- **巡查次数 patrols**: ended patrols (`ended_at` set, by 结束巡查 or the sweep's timeout) that
  started in the period. A patrol under way counts nowhere until it ends; then in the period
  it started in. **巡查时长 patrol hours**: the sum of their ended_at − started_at.
- **巡查覆盖率 coverage**: the grid's active buildings that some counted patrol of the grid
  came near (`patrol_buildings`), each once, ÷ the grid's active buildings.
- **巡查发现问题 found on patrol**: counted cases (not rejected nor merged) with source
  'patrol' reported in the period, by the grid of their building (as the case figures).
- **Due visits (应访)**: a household's due moments are the `due_at` of its visits (each visit
  settles the moment it was due, and keeps it) and, while it is active, its `next_due_at`
  (not visited yet). One is due in the period when it falls in the period; a household due
  twice (weekly) counts twice. **按时走访 on time**: settled by a visit with at ≤ due_at.
  **走访率 visit rate** = on time ÷ due. **走访次数 visits**: visits made in the period.
  **逾期未访 overdue**: households whose due moment passed before the as-of without a visit
  by then (a visit after the as-of, or none yet), one per household.
  A household counts only once it was on the roster at the as-of (`created_at` before it),
  so a roster loaded later does not change a past period.
- **Campaign parts due (应完成)**: the campaign grids whose campaign's deadline is in the
  period. Of those, judged as of the as-of: **按期完成 on time** done with done_at ≤ the
  deadline; **逾期完成 late** done after it (before the as-of); **无法完成 cannot** reported
  cannot be done (before the as-of); **逾期未完成 overdue** the deadline passed before the
  as-of and neither done nor cannot by then; the rest are still open, not yet due.
  **专项任务完成率 completion** = on time ÷ due.

Rates are None (—) without a denominator. Every count adds up over grids (a building has one
grid), so a community's, a street's or the whole district's figures are the sums of their
grids' and the rates are worked out from the sums. Six grouped statements whatever the number
of grids or rows (patrols, their buildings, cases found, visits, households, campaign parts);
the grids and their buildings come from the directory in memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy import case as when
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.ledger import definitions as defs
from bot.ledger.definitions import Period, within
from bot.ledger.figures import count_if, hours_between, place_for
from bot.org.directory import Directory, Place, directory
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

# `cases.source` of a case found on patrol (bot.cases.lifecycle.ReportInput.source).
PATROL = "patrol"
# `campaign_grids.status` as bot.rounds.campaigns.TaskStatus stores it (its only spelling in
# bot.ledger; tests/ledger/test_rounds_figures.py checks they agree).
TASK_DONE, TASK_CANNOT = "done", "cannot"

RATES = ("coverage_rate", "visit_rate", "task_rate")
RollUp = Literal["grid", "community"]


@dataclass(frozen=True)
class RoundFigures:
    """The rounds' figures of a grid, or the sums of several grids'."""

    patrols: int = 0  # 巡查次数
    patrol_hours: float = 0.0  # 巡查时长
    buildings: int = 0  # active buildings of the grid(s)
    buildings_patrolled: int = 0  # of those, patrolled in the period
    found_on_patrol: int = 0  # 巡查发现问题
    visits: int = 0  # 走访次数
    visits_due: int = 0  # 应访
    visits_on_time: int = 0  # 按时走访
    visits_overdue: int = 0  # 逾期未访 (at the as-of)
    tasks: int = 0  # 应完成 (campaign parts due in the period)
    tasks_on_time: int = 0  # 按期完成
    tasks_late: int = 0  # 逾期完成
    tasks_cannot: int = 0  # 无法完成
    tasks_overdue: int = 0  # 逾期未完成 (at the as-of)

    def __add__(self, other: RoundFigures) -> RoundFigures:
        return RoundFigures(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                               for f in fields(self)})

    @property
    def coverage_rate(self) -> float | None:  # 巡查覆盖率
        return _ratio(self.buildings_patrolled, self.buildings)

    @property
    def visit_rate(self) -> float | None:  # 走访率
        return _ratio(self.visits_on_time, self.visits_due)

    @property
    def task_rate(self) -> float | None:  # 专项任务完成率
        return _ratio(self.tasks_on_time, self.tasks)

    @property
    def anything(self) -> bool:
        """Something happened or was due (the buildings alone are no figure)."""
        return any(getattr(self, f.name) for f in fields(self) if f.name != "buildings")

    @property
    def tasks_done(self) -> int:  # 已完成, on time or late
        return self.tasks_on_time + self.tasks_late

    def as_dict(self) -> dict[str, Any]:
        """Every count and rate, for JSON (hours to two decimals)."""
        out = asdict(self)
        out["patrol_hours"] = round(self.patrol_hours, 2)
        out["tasks_done"] = self.tasks_done
        for name in RATES:
            out[name] = getattr(self, name)
        return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class RoundWeights:
    """The monthly score's weights for the rounds (registry `assessment.weights`: coverage
    巡查覆盖率, visits 走访率, campaigns 专项任务完成率); 0 by default, so a district's score
    counts them only once it sets them."""

    coverage: float = 0
    visits: float = 0
    campaigns: float = 0

    @classmethod
    def from_settings(cls, raw: dict[str, Any] | None) -> RoundWeights:
        raw = raw or {}
        return cls(**{k: float(raw.get(k) or 0) for k in ("coverage", "visits", "campaigns")})

    @property
    def any(self) -> bool:
        return self.coverage > 0 or self.visits > 0 or self.campaigns > 0

    def terms(self, fig: RoundFigures | None) -> list[tuple[float, float | None]]:
        """The (weight, rate) terms bot.ledger.figures.score adds (none for no figures)."""
        if fig is None:
            return []
        return [(self.coverage, fig.coverage_rate), (self.visits, fig.visit_rate),
                (self.campaigns, fig.task_rate)]


# --- the definitions ------------------------------------------------------------------------


def counted_patrol(period: Period) -> ColumnElement[bool]:
    """巡查次数: an ended patrol that started in the period."""
    return and_(Patrol.ended_at.is_not(None), within(Patrol.started_at, period))


def found_on_patrol(period: Period) -> ColumnElement[bool]:
    """巡查发现问题: a counted case found on patrol, reported in the period."""
    return and_(defs.received_in(period), Case.source == PATROL)


def on_roster(as_of: datetime) -> ColumnElement[bool]:
    """A household on the roster at the as-of: counted in that period's figures."""
    return CareHousehold.created_at < as_of


def visited_on_time() -> ColumnElement[bool]:
    """按时走访: the visit came no later than the moment it settled."""
    return and_(CareVisit.due_at.is_not(None), CareVisit.at <= CareVisit.due_at)


def visit_due_in(period: Period) -> ColumnElement[bool]:
    """应访 (of a visit row): the moment the visit settled is in the period."""
    return and_(CareVisit.due_at.is_not(None), within(CareVisit.due_at, period))


def visit_overdue_at(moment: datetime) -> ColumnElement[bool]:
    """逾期未访 (of a visit row): the moment it settled had passed at `moment`, and the visit
    came only at or after it."""
    return and_(CareVisit.due_at < moment, CareVisit.at >= moment)


def outstanding() -> ColumnElement[bool]:
    """A household's next visit, not made yet: it is active and has a due moment."""
    return and_(CareHousehold.active.is_(True), CareHousehold.next_due_at.is_not(None))


def household_due_in(period: Period) -> ColumnElement[bool]:
    """应访 (of a household): its next visit, not made yet, falls in the period."""
    return and_(outstanding(), within(CareHousehold.next_due_at, period))


def household_overdue_at(moment: datetime) -> ColumnElement[bool]:
    """逾期未访 (of a household): its next visit, not made yet, was due before `moment`."""
    return and_(outstanding(), CareHousehold.next_due_at < moment)


def task_due_in(period: Period) -> ColumnElement[bool]:
    """应完成: a campaign part whose campaign's deadline is in the period."""
    return within(Campaign.deadline_at, period)


def task_settled(status: str, moment: datetime) -> ColumnElement[bool]:
    """Done (or cannot) before `moment`."""
    return and_(CampaignGrid.status == status, CampaignGrid.done_at < moment)


def task_on_time(moment: datetime) -> ColumnElement[bool]:
    """按期完成: done by the deadline."""
    return and_(task_settled(TASK_DONE, moment), CampaignGrid.done_at <= Campaign.deadline_at)


def task_late(moment: datetime) -> ColumnElement[bool]:
    """逾期完成: done before `moment`, after the deadline."""
    return and_(task_settled(TASK_DONE, moment), CampaignGrid.done_at > Campaign.deadline_at)


def task_overdue_at(moment: datetime) -> ColumnElement[bool]:
    """逾期未完成 at `moment`: the deadline passed before it, and the part was neither done nor
    reported cannot before it."""
    return and_(Campaign.deadline_at < moment,
                or_(CampaignGrid.done_at.is_(None), CampaignGrid.done_at >= moment))


# --- the statements -------------------------------------------------------------------------


def _grids(d: Directory, place: Place | None) -> list[Place]:
    """The grids in `place` (every grid for None), in the registry's order."""
    out = []
    for p in sorted(d.places.values(), key=lambda p: (p.position, p.id)):
        if p.kind != "grid":
            continue
        if place is None or p.id == place.id or any(a.id == place.id for a in d.ancestors(p)):
            out.append(p)
    return out


def _active_buildings(d: Directory) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in d.places.values():
        if p.kind == "building" and p.active and p.parent_id is not None:
            counts[p.parent_id] = counts.get(p.parent_id, 0) + 1
    return counts


async def by_grid(db: AsyncSession, period: Period, scope: str | None = None, *,
                  now: datetime | None = None) -> dict[int, RoundFigures]:
    """The figures of each grid in `scope` (a street, community or grid code; None:
    everything), by grid id, as of min(now, the period's end). Six grouped statements."""
    d = await directory(db)
    place = place_for(d, scope)
    return await _by_grid(db, d, period, _grids(d, place), now)


async def _by_grid(db: AsyncSession, d: Directory, period: Period, grids: list[Place],
                   now: datetime | None) -> dict[int, RoundFigures]:
    as_of = period.as_of(now if now is not None else datetime.now(UTC))
    ids = [g.id for g in grids]
    if not ids:
        return {}
    values: dict[int, dict[str, Any]] = {g: {} for g in ids}

    def put(rows: Any, names: tuple[str, ...]) -> None:
        for grid_id, *got in rows:
            if grid_id in values:
                values[grid_id].update(zip(names, got, strict=True))

    # Patrols and their hours.
    put((await db.execute(
        select(Patrol.grid_id, func.count(),
               func.coalesce(func.sum(hours_between(Patrol.started_at, Patrol.ended_at)), 0.0))
        .where(counted_patrol(period), Patrol.grid_id.in_(ids))
        .group_by(Patrol.grid_id))).all(), ("patrols", "patrol_hours"))
    # The grid's active buildings its counted patrols came near, each once.
    building = aliased(Node, name="rb")
    put((await db.execute(
        select(Patrol.grid_id, func.count(func.distinct(PatrolBuilding.building_id)))
        .select_from(Patrol)
        .join(PatrolBuilding, PatrolBuilding.patrol_id == Patrol.id)
        .join(building, building.id == PatrolBuilding.building_id)
        .where(counted_patrol(period), Patrol.grid_id.in_(ids),
               building.parent_id == Patrol.grid_id, building.active.is_(True))
        .group_by(Patrol.grid_id))).all(), ("buildings_patrolled",))
    # Cases found on patrol, by the grid of their building.
    case_building = aliased(Node, name="rcb")
    put((await db.execute(
        select(case_building.parent_id, func.count())
        .select_from(Case).join(case_building, case_building.id == Case.building_id)
        .where(found_on_patrol(period), case_building.parent_id.in_(ids))
        .group_by(case_building.parent_id))).all(), ("found_on_patrol",))
    # Visits: made in the period, due in it (and on time), overdue at the as-of.
    hb = aliased(Node, name="rhb")
    due = visit_due_in(period)
    put((await db.execute(
        select(hb.parent_id,
               count_if(within(CareVisit.at, period)),
               count_if(due),
               count_if(and_(due, visited_on_time())),
               count_if(visit_overdue_at(as_of)))
        .select_from(CareVisit)
        .join(CareHousehold, CareHousehold.id == CareVisit.household_id)
        .join(hb, hb.id == CareHousehold.building_id)
        .where(on_roster(as_of), hb.parent_id.in_(ids),
               or_(within(CareVisit.at, period), due, visit_overdue_at(as_of)))
        .group_by(hb.parent_id))).all(),
        ("visits", "visits_due", "visits_on_time", "visits_overdue_v"))
    # Households whose next visit is not made yet: due in the period, overdue at the as-of.
    put((await db.execute(
        select(hb.parent_id, count_if(household_due_in(period)),
               count_if(household_overdue_at(as_of)))
        .select_from(CareHousehold)
        .join(hb, hb.id == CareHousehold.building_id)
        .where(on_roster(as_of), hb.parent_id.in_(ids), outstanding(),
               CareHousehold.next_due_at < period.end)
        .group_by(hb.parent_id))).all(), ("visits_due_h", "visits_overdue_h"))
    # Campaign parts due in the period, judged at the as-of.
    put((await db.execute(
        select(CampaignGrid.grid_id, func.count(), count_if(task_on_time(as_of)),
               count_if(task_late(as_of)), count_if(task_settled(TASK_CANNOT, as_of)),
               count_if(task_overdue_at(as_of)))
        .select_from(CampaignGrid).join(Campaign, Campaign.id == CampaignGrid.campaign_id)
        .where(task_due_in(period), CampaignGrid.grid_id.in_(ids))
        .group_by(CampaignGrid.grid_id))).all(),
        ("tasks", "tasks_on_time", "tasks_late", "tasks_cannot", "tasks_overdue"))

    active = _active_buildings(d)
    out: dict[int, RoundFigures] = {}
    for grid_id, v in values.items():
        out[grid_id] = RoundFigures(
            patrols=int(v.get("patrols", 0)),
            patrol_hours=float(v.get("patrol_hours", 0.0) or 0.0),
            buildings=active.get(grid_id, 0),
            buildings_patrolled=int(v.get("buildings_patrolled", 0)),
            found_on_patrol=int(v.get("found_on_patrol", 0)),
            visits=int(v.get("visits", 0)),
            visits_due=int(v.get("visits_due", 0)) + int(v.get("visits_due_h", 0)),
            visits_on_time=int(v.get("visits_on_time", 0)),
            visits_overdue=int(v.get("visits_overdue_v", 0)) + int(v.get("visits_overdue_h", 0)),
            tasks=int(v.get("tasks", 0)),
            tasks_on_time=int(v.get("tasks_on_time", 0)),
            tasks_late=int(v.get("tasks_late", 0)),
            tasks_cannot=int(v.get("tasks_cannot", 0)),
            tasks_overdue=int(v.get("tasks_overdue", 0)),
        )
    return out


def total(figs: Any) -> RoundFigures:
    """The sum of several grids' figures (their rates worked out from the sums)."""
    out = RoundFigures()
    for f in figs:
        out = out + f
    return out


async def compute(db: AsyncSession, period: Period, scope: str | None = None, *,
                  now: datetime | None = None) -> RoundFigures | None:
    """The figures of `scope` (a street, community or grid code; None: everything), rolled
    up from its grids; None for a scope without grids (a building). ScopeError for an
    unknown code."""
    d = await directory(db)
    place = place_for(d, scope)
    grids = _grids(d, place)
    if not grids:
        return None
    return total((await _by_grid(db, d, period, grids, now)).values())


async def breakdown(db: AsyncSession, period: Period, scope: str | None, by: RollUp, *,
                    now: datetime | None = None) -> list[tuple[str, str, RoundFigures]]:
    """The figures of each grid (or community) in `scope`, in the registry's order: (code,
    name, figures). Active ones always, inactive ones only with something to count."""
    d = await directory(db)
    place = place_for(d, scope)
    grids = _grids(d, place)
    found = await _by_grid(db, d, period, grids, now)
    if by == "grid":
        return [(g.code, g.name, found[g.id]) for g in grids
                if g.active or found[g.id].anything]
    sums: dict[int, RoundFigures] = {}
    for g in grids:
        parent = d.place(g.parent_id)
        if parent is not None and parent.kind == "community":
            sums[parent.id] = sums.get(parent.id, RoundFigures()) + found[g.id]
    out = []
    for c in sorted(d.places.values(), key=lambda p: (p.position, p.id)):
        if c.id in sums and (c.active or sums[c.id].anything):
            out.append((c.code, c.name, sums[c.id]))
    return out


# --- the 台账's rows ---------------------------------------------------------------------------
# One statement per sheet and one for the patrols' buildings and one for their cases: the
# rows the figures count, judged by the same definitions (bot.ledger.export writes them).


@dataclass(frozen=True)
class PatrolRow:
    id: int
    grid_id: int
    person_id: int
    person: str | None
    started_at: datetime
    ended_at: datetime | None
    hours: float
    building_ids: tuple[int, ...]
    case_ids: tuple[int, ...]


@dataclass(frozen=True)
class VisitRow:
    """A visit made or due in the period, or a household due in it and not visited yet
    (`at` None). No names or phone numbers of the household: its place and kind only."""

    grid_id: int | None
    building_id: int
    unit: str
    door: str
    kind: str
    at: datetime | None
    due_at: datetime | None
    on_time: bool | None  # None: nothing was due
    person: str | None
    need_found: bool


@dataclass(frozen=True)
class TaskRow:
    title: str
    grid_id: int
    deadline_at: datetime
    state: str  # on_time, late, cannot, overdue, open (as of the period's as-of)
    done_at: datetime | None
    person: str | None


def _scope_ids(d: Directory, place: Place | None) -> tuple[list[int], int | None]:
    """The grids of the scope, and the building when the scope is one (its visits)."""
    if place is not None and place.kind == "building":
        return ([place.parent_id] if place.parent_id is not None else []), place.id
    return [g.id for g in _grids(d, place)], None


async def patrol_rows(db: AsyncSession, d: Directory, period: Period,
                      place: Place | None) -> list[PatrolRow]:
    """The counted patrols of the period (巡查次数), in the order they started, with the
    grid's buildings each came near and the counted cases filed on it. Three statements."""
    ids, building_only = _scope_ids(d, place)
    if not ids or building_only is not None:
        return []
    person = aliased(Person, name="rp")
    chosen = and_(counted_patrol(period), Patrol.grid_id.in_(ids))
    rows = (await db.execute(
        select(Patrol.id, Patrol.grid_id, Patrol.person_id, person.name, Patrol.started_at,
               Patrol.ended_at, hours_between(Patrol.started_at, Patrol.ended_at))
        .select_from(Patrol).outerjoin(person, person.id == Patrol.person_id)
        .where(chosen).order_by(Patrol.started_at, Patrol.id))).all()
    patrol_ids = select(Patrol.id).where(chosen)
    building = aliased(Node, name="rpb")
    near: dict[int, list[int]] = {}
    for pid, bid in (await db.execute(
            select(PatrolBuilding.patrol_id, PatrolBuilding.building_id)
            .join(Patrol, Patrol.id == PatrolBuilding.patrol_id)
            .join(building, building.id == PatrolBuilding.building_id)
            .where(PatrolBuilding.patrol_id.in_(patrol_ids),
                   building.parent_id == Patrol.grid_id)
            .order_by(PatrolBuilding.patrol_id, PatrolBuilding.at, PatrolBuilding.building_id)
    )).all():
        near.setdefault(pid, []).append(bid)
    found: dict[int | None, list[int]] = {}
    for case_patrol, cid in (await db.execute(
            select(Case.patrol_id, Case.id)
            .where(Case.patrol_id.in_(patrol_ids), defs.counted(), Case.source == PATROL)
            .order_by(Case.patrol_id, Case.id))).all():
        found.setdefault(case_patrol, []).append(cid)
    return [PatrolRow(id=r[0], grid_id=r[1], person_id=r[2], person=r[3], started_at=r[4],
                      ended_at=r[5], hours=float(r[6] or 0.0),
                      building_ids=tuple(near.get(r[0], ())), case_ids=tuple(found.get(r[0], ())))
            for r in rows]


async def visit_rows(db: AsyncSession, d: Directory, period: Period, place: Place | None, *,
                     now: datetime | None = None) -> list[VisitRow]:
    """The visits made in the period or settling a moment due in it, in the order they were
    made, then the households due in it not visited yet, by due moment. Two statements."""
    as_of = period.as_of(now if now is not None else datetime.now(UTC))
    ids, building_only = _scope_ids(d, place)
    if not ids:
        return []
    hb = aliased(Node, name="rvb")
    person = aliased(Person, name="rvp")
    where = [on_roster(as_of), hb.parent_id.in_(ids)]
    if building_only is not None:
        where.append(hb.id == building_only)
    due = visit_due_in(period)
    out = [VisitRow(grid_id=r[0], building_id=r[1], unit=r[2], door=r[3], kind=r[4], at=r[5],
                    due_at=r[6], on_time=bool(r[7]) if r[6] is not None else None,
                    person=r[8], need_found=bool(r[9]))
           for r in (await db.execute(
               select(hb.parent_id, CareHousehold.building_id, CareHousehold.unit,
                      CareHousehold.door, CareHousehold.kind, CareVisit.at, CareVisit.due_at,
                      visited_on_time().label("ok"), person.name, CareVisit.need_found)
               .select_from(CareVisit)
               .join(CareHousehold, CareHousehold.id == CareVisit.household_id)
               .join(hb, hb.id == CareHousehold.building_id)
               .outerjoin(person, person.id == CareVisit.person_id)
               .where(*where, or_(within(CareVisit.at, period), due))
               .order_by(CareVisit.at, CareVisit.id))).all()]
    out += [VisitRow(grid_id=r[0], building_id=r[1], unit=r[2], door=r[3], kind=r[4], at=None,
                     due_at=r[5], on_time=False, person=None, need_found=False)
            for r in (await db.execute(
                select(hb.parent_id, CareHousehold.building_id, CareHousehold.unit,
                       CareHousehold.door, CareHousehold.kind, CareHousehold.next_due_at)
                .select_from(CareHousehold)
                .join(hb, hb.id == CareHousehold.building_id)
                .where(*where, household_due_in(period))
                .order_by(CareHousehold.next_due_at, CareHousehold.id))).all()]
    return out


async def task_rows(db: AsyncSession, d: Directory, period: Period, place: Place | None, *,
                    now: datetime | None = None) -> list[TaskRow]:
    """The campaign parts due in the period (应完成), by deadline, each with its state as
    of the period's as-of. One statement."""
    as_of = period.as_of(now if now is not None else datetime.now(UTC))
    ids, building_only = _scope_ids(d, place)
    if not ids or building_only is not None:
        return []
    person = aliased(Person, name="rtp")
    state = when((task_on_time(as_of), "on_time"), (task_late(as_of), "late"),
                 (task_settled(TASK_CANNOT, as_of), "cannot"),
                 (task_overdue_at(as_of), "overdue"), else_="open")
    rows = (await db.execute(
        select(Campaign.title, CampaignGrid.grid_id, Campaign.deadline_at, state,
               CampaignGrid.done_at, person.name)
        .select_from(CampaignGrid).join(Campaign, Campaign.id == CampaignGrid.campaign_id)
        .outerjoin(person, person.id == CampaignGrid.done_by_id)
        .where(task_due_in(period), CampaignGrid.grid_id.in_(ids))
        .order_by(Campaign.deadline_at, Campaign.id, CampaignGrid.id))).all()
    return [TaskRow(title=r[0], grid_id=r[1], deadline_at=r[2], state=str(r[3]),
                    done_at=r[4], person=r[5]) for r in rows]


def has_grids(d: Directory, place: Place | None) -> bool:
    """A scope with grids (a street, a community, a grid, everything): the rounds' figures
    are shown for it."""
    return bool(_grids(d, place))


__all__ = [
    "PATROL", "RATES", "TASK_CANNOT", "TASK_DONE", "PatrolRow", "RoundFigures",
    "RoundWeights", "TaskRow",
    "VisitRow", "breakdown", "by_grid", "compute", "counted_patrol", "found_on_patrol",
    "has_grids", "household_due_in",
    "household_overdue_at", "on_roster", "patrol_rows", "task_due_in", "task_late",
    "task_on_time", "task_overdue_at", "task_rows", "task_settled", "total", "visit_due_in",
    "visit_overdue_at", "visit_rows", "visited_on_time",
]
