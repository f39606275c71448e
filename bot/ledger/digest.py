"""The daily digest and the monthly score (issue 10): periodic messages, each sent once.

At the registry's `policy.digest_at` (local time in the registry's timezone; default 08:30,
null: no digest) each grid leader gets their grid's open cases by light, what falls due
today and what was rated 不满意 yesterday; each community supervisor gets the same counts
per grid of their community, grids ranked by overdue count. On the 1st of a month, at the
same time (08:30 when the digest is off), community supervisors get the previous month's
score of each grid of their community and street supervisors that of every grid of their
street, ranked, with the figures behind each score.

Once only, whatever the number of workers and restarts: a job claims its (name, period) in
`periodic_runs` with an insert in the transaction that writes its messages; a second worker's
insert finds the row and writes nothing. A day the bot was down at the digest time gets its
digest when the bot starts later that day; past days never do. A month's score is owed
during the first SCORE_CATCH_UP_DAYS days of the next month (a stop over the 1st does not
lose it; a fresh install mid-month sends no stale one).

Late, not stale: a digest or a score sent more than LATE_AFTER (two hours) after its moment
(the bot was down) goes once, dated and marked 补发, without the morning greeting; a digest
whose day is over is never sent (the next day's goes on time).

Cheap when nothing is due: the sweep hands over the transaction where it has already read
the org_settings row, and what was done is kept in memory per worker (`Ctx.extra`): no
statement at all once today's jobs are done or before their time, one claim statement the
first time a worker finds them due (another worker or an earlier run may have done them).
Each job is a fixed number of grouped statements whatever the number of grids and cases,
plus one outbox insert per message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, false, func, literal, select
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.cases.deadlines import due_soon_at
from bot.cases.notify import names_of, send_to_person
from bot.context import Tx
from bot.ledger import definitions as defs
from bot.ledger import rounds
from bot.ledger.definitions import UNRESOLVED, Period, local_midnight
from bot.ledger.figures import Figures, Weights, breakdown, count_if, hours_between, score
from bot.ledger.rounds import RoundFigures, RoundWeights
from bot.org.directory import Directory, Place, directory, org_settings
from bot.org.roles import RoleName
from bot.rounds import care
from bot.rounds.campaigns import TaskStatus
from storage.models import (
    Campaign,
    CampaignGrid,
    Case,
    CaseEvent,
    Node,
    OrgSettings,
    Patrol,
    PeriodicRun,
    UTCDateTime,
)

log = logging.getLogger(__name__)

DEFAULT_AT = time(8, 30)
# Cases listed per grid (due today, 不满意 yesterday); the rest are counted ("…and N more").
LIST_CAP = 10
SCORE_CATCH_UP_DAYS = 7
# Sent later than this after its moment, a digest or score says it is late (补发) and when it
# was due, instead of greeting the morning.
LATE_AFTER = timedelta(hours=2)
_STATE_KEY = "gridbot.periodic"
# Set in a worker's `Ctx.extra` to keep it from sending periodic messages: the test harness
# does, so only the tests that ask for them see digests among the messages they count.
OFF = "gridbot.periodic.off"


@dataclass
class _Done:
    """What this worker knows to be done (by it or anyone): no statement to ask again."""

    digest_day: date | None = None
    score_month: str | None = None


@dataclass(frozen=True)
class Job:
    name: str  # "digest" | "score"
    period: str  # "2026-11-24" | "2026-10"
    # The moment it was owed (today's digest time; the 1st's for the score). None: unknown,
    # taken as on time.
    due_at: datetime | None = field(default=None, compare=False)

    def late(self, now: datetime) -> bool:
        return self.due_at is not None and now - self.due_at > LATE_AFTER


# --- when ---------------------------------------------------------------------------------


def _at(value: str | None) -> time | None:
    if not value:
        return None
    try:
        return time.fromisoformat(value)
    except ValueError:
        log.warning("policy.digest_at %r is not HH:MM; using %s", value, DEFAULT_AT)
        return DEFAULT_AT


def _previous_month(day: date) -> str:
    first = day.replace(day=1) - timedelta(days=1)
    return f"{first.year:04d}-{first.month:02d}"


def jobs_due(row: OrgSettings, now: datetime, done: _Done) -> list[Job]:
    """The jobs owed at `now` that this worker has not seen done: pure, no statement."""
    zone = ZoneInfo(row.timezone)
    local = now.astimezone(zone)
    at = _at(row.digest_at)
    if local.time() < (at or DEFAULT_AT):
        return []
    today = local.date()
    jobs = []
    if at is not None and done.digest_day != today:
        jobs.append(Job("digest", today.isoformat(),
                        datetime.combine(today, at, tzinfo=zone).astimezone(UTC)))
    if today.day <= SCORE_CATCH_UP_DAYS:
        month = _previous_month(today)
        if done.score_month != month:
            first = datetime.combine(today.replace(day=1), at or DEFAULT_AT, tzinfo=zone)
            jobs.append(Job("score", month, first.astimezone(UTC)))
    return jobs


async def run_due(tx: Tx) -> int:
    """The sweep's periodic step, in its first transaction (the org_settings row read,
    nothing written yet): claims and writes the jobs due, commits; returns how many messages
    were written. A failure rolls back (the claim too) and is retried at the next sweep."""
    if tx.ctx.extra.get(OFF):
        return 0
    row = await org_settings(tx.db)  # held by begin(): no statement
    if row is None:
        return 0
    done = cast(_Done, tx.ctx.extra.setdefault(_STATE_KEY, _Done()))
    jobs = jobs_due(row, tx.now, done)
    if not jobs:
        return 0
    sent = 0
    try:
        claimed = await _claim(tx.db, jobs, tx.now)
        for job in claimed:
            late = _late(job, tx.now, row.timezone)
            if job.name == "digest":
                sent += await send_digest(tx, date.fromisoformat(job.period), late=late)
            else:
                sent += await send_score(tx, Period.parse(job.period, row.timezone),
                                         Weights.from_settings(row.score_weights),
                                         late=late)
        if claimed:
            await tx.db.commit()
            log.info("periodic: %s (%d messages)",
                     ", ".join(f"{j.name} {j.period}" for j in claimed), sent)
    except Exception:
        await tx.db.rollback()
        log.exception("periodic jobs %s failed; retried at the next sweep", jobs)
        return 0
    for job in jobs:  # claimed and written, or found done by someone else
        if job.name == "digest":
            done.digest_day = date.fromisoformat(job.period)
        else:
            done.score_month = job.period
    return sent


def _late(job: Job, now: datetime, timezone: str) -> dict[str, Any] | None:
    """When a late job was owed, as its template names it (month, day, HH:MM, local);
    None when it goes on time."""
    if job.due_at is None or not job.late(now):
        return None
    owed = job.due_at.astimezone(ZoneInfo(timezone))
    return {"month": owed.month, "day": owed.day, "at": owed.strftime("%H:%M")}


async def _claim(db: AsyncSession, jobs: Sequence[Job], now: datetime) -> list[Job]:
    """Insert the jobs' rows in one statement; the ones inserted are ours to do."""
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(PeriodicRun).values(
        [{"name": j.name, "period": j.period, "done_at": now} for j in jobs]
    ).on_conflict_do_nothing(index_elements=["name", "period"]).returning(
        PeriodicRun.name, PeriodicRun.period)
    got = {(name, period) for name, period in (await db.execute(stmt)).all()}
    return [j for j in jobs if (j.name, j.period) in got]


# --- SQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridDay:
    """One grid's digest: counts, and the first LIST_CAP cases of each list."""

    place: Place
    red: int = 0
    yellow: int = 0
    green: int = 0
    paused: int = 0
    due_total: int = 0
    unsatisfied_total: int = 0
    # 走访 (bot/rounds/care.py): households due by the end of the day, and overdue now.
    care_due: int = 0
    care_overdue: int = 0
    # 巡查 yesterday (ended patrols that started then), and the grid's 专项任务 not done yet:
    # open, and of them past their deadline.
    patrols: int = 0
    tasks_open: int = 0
    tasks_overdue: int = 0

    @property
    def status(self) -> str:
        return "red" if self.red else "yellow" if self.yellow else "green"


async def _lights(tx: Tx, building: Any) -> dict[int, tuple[int, int, int, int]]:
    """Open cases per grid by light: the grid's to-do is the cases with a running deadline
    (definitions.running_at: resolved and checking cases wait for the reporter or the
    building head, suspended ones are paused). Red: overdue now (definitions.overdue_at);
    yellow: not yet, but past `remind_at` of the way from the clock start to the deadline,
    as deadlines.light() gives it. For a clock-time category that share is counted in SQL;
    a working-time category's is a share of the working time between (the calendar's), so
    its open cases short of their deadline are read (their times only) and their due-soon
    moment is worked out as light() does."""
    now = literal(tx.now, UTCDateTime())
    working = defs.running_at(tx.now)
    red = defs.overdue_at(tx.now)
    remind = tx.policy.remind_at
    by_calendar = Case.category.in_(sorted(tx.policy.working))
    soon: ColumnElement[bool] = false() if remind is None else and_(
        ~by_calendar,
        hours_between(Case.clock_started_at, now)
        >= hours_between(Case.clock_started_at, Case.deadline_at) * remind)
    yellow = and_(working, ~red, soon)
    paused = and_(defs.open_at(tx.now), defs.suspended())
    query = (select(building.parent_id, count_if(red), count_if(yellow), count_if(working),
                    count_if(paused))
             .select_from(Case).join(building, building.id == Case.building_id)
             .where(Case.status.in_(UNRESOLVED))
             .group_by(building.parent_id))
    counts = {grid_id: [int(r), int(y), int(w), int(p)]
              for grid_id, r, y, w, p in (await tx.db.execute(query)).all()}
    if remind is not None and tx.policy.working:
        query = (select(building.parent_id, Case.category, Case.clock_started_at,
                        Case.deadline_at)
                 .select_from(Case).join(building, building.id == Case.building_id)
                 .where(Case.status.in_(UNRESOLVED), working, ~red, by_calendar))
        for grid_id, category, started, deadline in (await tx.db.execute(query)).all():
            probe = Case(category=category, clock_started_at=started, deadline_at=deadline)
            at = due_soon_at(probe, tx.policy)
            if at is not None and tx.now >= at:
                counts[grid_id][1] += 1
    return {grid_id: (r, y, w - r - y, p) for grid_id, (r, y, w, p) in counts.items()}


async def _capped(tx: Tx, query: Any, building: Any, order: Iterable[Any]
                  ) -> tuple[dict[int, int], list[Any]]:
    """The first LIST_CAP rows of each grid and each grid's total, in one statement."""
    ranked = query.add_columns(
        building.parent_id.label("grid_id"),
        func.row_number().over(partition_by=building.parent_id, order_by=list(order))
        .label("rn"),
        func.count().over(partition_by=building.parent_id).label("n"),
    ).subquery()
    rows = (await tx.db.execute(select(ranked).where(ranked.c.rn <= LIST_CAP)
                                .order_by(ranked.c.grid_id, ranked.c.rn))).all()
    totals = {row.grid_id: int(row.n) for row in rows}
    return totals, list(rows)


# --- the digest ---------------------------------------------------------------------------


def _holders(d: Directory) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = {}
    for person_id, roles in sorted(d.roles_of.items()):
        for role, node_id in roles:
            out.setdefault((role, node_id), []).append(person_id)
    return out


def _active(d: Directory, kind: str) -> list[Place]:
    return sorted((p for p in d.places.values() if p.kind == kind and p.active),
                  key=lambda p: (p.position, p.id))


async def send_digest(tx: Tx, day: date, *, late: dict[str, Any] | None = None) -> int:
    """Writes the digest of local `day` for every grid leader and community supervisor;
    returns how many messages. Three statements and one insert per message. `late`: when it
    was owed, for a digest sent over LATE_AFTER past its time (dated, no greeting)."""
    d = await directory(tx.db)
    zone = ZoneInfo(tx.policy.timezone)
    start, end = local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)
    y_start = local_midnight(day - timedelta(days=1), zone)
    building = aliased(Node, name="b")
    locale = tx.texts.locale

    found = await _lights(tx, building)
    care_counts = await care.due_counts(tx, end)
    patrols = await _patrols(tx, y_start, start)
    tasks = await _open_tasks(tx)
    due_q = (select(Case.id, Case.category, Case.building_id, Case.deadline_at)
             .select_from(Case).join(building, building.id == Case.building_id)
             .where(Case.status.in_(UNRESOLVED), defs.running_at(tx.now),
                    Case.deadline_at >= start, Case.deadline_at < end))
    due_totals, due_rows = await _capped(tx, due_q, building,
                                         (Case.deadline_at, Case.id))
    bad_q = (select(Case.id, Case.category, Case.building_id, CaseEvent.at)
             .select_from(CaseEvent).join(Case, Case.id == CaseEvent.case_id)
             .join(building, building.id == Case.building_id)
             .where(defs.unsatisfied(CaseEvent), CaseEvent.at >= y_start,
                    CaseEvent.at < start))
    bad_totals, bad_rows = await _capped(tx, bad_q, building, (CaseEvent.at, CaseEvent.id))

    def category(code: str) -> str:
        cat = d.categories.get(code)
        return cat.name(locale) if cat is not None else code

    def where(building_id: int) -> str:
        place = d.place(building_id)
        return place.name if place is not None else str(building_id)

    grids: dict[int, GridDay] = {}
    for grid in _active(d, "grid"):
        red, yellow, green, paused = found.get(grid.id, (0, 0, 0, 0))
        grids[grid.id] = GridDay(place=grid, red=red, yellow=yellow, green=green,
                                 paused=paused, due_total=due_totals.get(grid.id, 0),
                                 unsatisfied_total=bad_totals.get(grid.id, 0),
                                 care_due=care_counts.get(grid.id, (0, 0))[0],
                                 care_overdue=care_counts.get(grid.id, (0, 0))[1],
                                 patrols=patrols.get(grid.id, 0),
                                 tasks_open=tasks.get(grid.id, (0, 0))[0],
                                 tasks_overdue=tasks.get(grid.id, (0, 0))[1])
    due_items = [{"grid": d.places[r.grid_id].code, "id": r.id, "category": category(r.category),
                  "place": where(r.building_id), "deadline_at": r.deadline_at}
                 for r in due_rows if r.grid_id in grids]
    bad_items = [{"grid": d.places[r.grid_id].code, "id": r.id, "category": category(r.category),
                  "place": where(r.building_id), "at": r.at}
                 for r in bad_rows if r.grid_id in grids]

    holders = _holders(d)
    sent = 0
    # Grid leaders (a grid without one: its members, as cards go), a message per person.
    mine: dict[int, list[GridDay]] = {}
    for g in grids.values():
        people = (holders.get((RoleName.GRID_LEADER.value, g.place.id))
                  or holders.get((RoleName.GRID_MEMBER.value, g.place.id)) or [])
        for pid in people:
            mine.setdefault(pid, []).append(g)
    for pid, own in mine.items():
        codes = {g.place.code for g in own}
        text = tx.texts.render(
            "digest", digest_day=day, digest_late=late, digest_grids=[_grid_view(g) for g in own],
            digest_due=[i for i in due_items if i["grid"] in codes],
            digest_unsatisfied=[i for i in bad_items if i["grid"] in codes])
        await send_to_person(tx, f"digest:{day.isoformat()}:grid:{pid}", pid, text,
                             fallback_chat_id=own[0].place.chat_id)
        sent += 1
    # Community supervisors: every grid of their communities, ranked by overdue count.
    theirs: dict[int, list[Place]] = {}
    for c in _active(d, "community"):
        for pid in holders.get((RoleName.COMMUNITY_SUPERVISOR.value, c.id), []):
            theirs.setdefault(pid, []).append(c)
    for pid, communities in theirs.items():
        summaries, ranking = [], []
        for c in communities:
            own = [g for g in grids.values() if g.place.parent_id == c.id]
            own.sort(key=lambda g: (-g.red, -g.yellow, g.place.position, g.place.id))
            summaries.append({
                "code": c.code, "name": c.name,
                "open": sum(g.red + g.yellow + g.green for g in own),
                "red": sum(g.red for g in own), "yellow": sum(g.yellow for g in own),
                "due_total": sum(g.due_total for g in own),
                "unsatisfied_total": sum(g.unsatisfied_total for g in own),
            })
            ranking += [{**_grid_view(g), "community": c.code, "rank": i}
                        for i, g in enumerate(own, 1)]
        text = tx.texts.render("digest_community", digest_day=day, digest_late=late,
                               digest_communities=summaries, digest_ranking=ranking)
        await send_to_person(tx, f"digest:{day.isoformat()}:community:{pid}", pid, text)
        sent += 1
    return sent


def _grid_view(g: GridDay) -> dict[str, Any]:
    return {
        "code": g.place.code, "name": g.place.name, "status": g.status,
        "red": g.red, "yellow": g.yellow, "green": g.green, "paused": g.paused,
        "due_total": g.due_total, "due_more": max(0, g.due_total - LIST_CAP),
        "unsatisfied_total": g.unsatisfied_total,
        "unsatisfied_more": max(0, g.unsatisfied_total - LIST_CAP),
        "care_due": g.care_due, "care_overdue": g.care_overdue,
        "patrols": g.patrols, "tasks_open": g.tasks_open, "tasks_overdue": g.tasks_overdue,
    }


async def _patrols(tx: Tx, since: datetime, until: datetime) -> dict[int, int]:
    """Per grid: the patrols started in [since, until) and ended (one grouped statement)."""
    rows = await tx.db.execute(
        select(Patrol.grid_id, func.count()).where(
            Patrol.started_at >= since, Patrol.started_at < until,
            Patrol.ended_at.is_not(None)).group_by(Patrol.grid_id))
    return {int(grid): int(n) for grid, n in rows.all()}


async def _open_tasks(tx: Tx) -> dict[int, tuple[int, int]]:
    """Per grid: its campaign parts not done yet, and of them those past their deadline."""
    late = func.sum(sql_case((Campaign.deadline_at <= tx.now, 1), else_=0))
    rows = await tx.db.execute(
        select(CampaignGrid.grid_id, func.count(), late)
        .join(Campaign, Campaign.id == CampaignGrid.campaign_id)
        .where(CampaignGrid.status == TaskStatus.PENDING.value)
        .group_by(CampaignGrid.grid_id))
    return {int(grid): (int(n), int(overdue or 0)) for grid, n, overdue in rows.all()}


# --- the monthly score --------------------------------------------------------------------


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _number(value: float) -> str:
    return f"{value:g}"


async def send_score(tx: Tx, period: Period, weights: Weights, *,
                     late: dict[str, Any] | None = None,
                     round_weights: RoundWeights | None = None) -> int:
    """Writes `period`'s score of each grid to the community supervisors (their
    community's grids) and street supervisors (every grid of their street), ranked by
    score; returns how many messages. breakdown()'s statements, one for the leaders'
    names, and one insert per message; with weights for the rounds (巡查覆盖率, 走访率,
    专项任务完成率: `round_weights`, by default the registry's), the rounds' statements too."""
    d = await directory(tx.db)
    holders = _holders(d)
    if round_weights is None:
        settings = await org_settings(tx.db)
        round_weights = RoundWeights.from_settings(
            settings.score_weights if settings is not None else None)
    # An ended month: measured as of its end whenever the score is sent.
    round_figs = (await rounds.by_grid(tx.db, period, None, now=tx.now)
                  if round_weights.any else {})
    rows: list[tuple[Place, Figures, float]] = []
    for code, _name, fig in await breakdown(tx.db, period, None, "grid", now=tx.now):
        place = d.by_code.get(code)
        if place is not None and place.kind == "grid":
            extra = round_weights.terms(round_figs.get(place.id))
            rows.append((place, fig, score(fig, weights, extra)))
    leaders = {g.id: holders.get((RoleName.GRID_LEADER.value, g.id), []) for g, _, _ in rows}
    names = await names_of(tx, (pid for ids in leaders.values() for pid in ids))
    community_of = {g.id: d.place(g.parent_id) for g, _, _ in rows}
    joiner = "、" if tx.texts.locale == "zh_CN" else ", "

    def view(place: Place, fig: Figures, points: float) -> dict[str, Any]:
        community = community_of[place.id]
        return {
            "code": place.code, "name": place.name,
            "community": community.name if community is not None else "",
            "leader": joiner.join(names.get(pid, str(pid)) for pid in leaders[place.id]) or "—",
            "score": f"{points:.1f}",
            "on_time_rate": _percent(fig.on_time_rate), "close_rate": _percent(fig.close_rate),
            "satisfaction_rate": _percent(fig.satisfaction_rate),
            "rework_rate": _percent(fig.rework_rate),
            "due": fig.due, "closed": fig.closed, "closed_on_time": fig.closed_on_time,
            "reworked": fig.reworked, "rated": fig.rated,
            # The rounds' rates, shown when their weights count (score_weights.rounds).
            "coverage_rate": _percent(rounds_of(place).coverage_rate),
            "visit_rate": _percent(rounds_of(place).visit_rate),
            "task_rate": _percent(rounds_of(place).task_rate),
        }

    def rounds_of(place: Place) -> RoundFigures:
        return round_figs.get(place.id) or RoundFigures()

    def ranked(chosen: list[tuple[Place, Figures, float]]) -> list[dict[str, Any]]:
        chosen = sorted(chosen, key=lambda r: (-r[2], r[0].position, r[0].id))
        return [{**view(*r), "rank": i} for i, r in enumerate(chosen, 1)]

    shown_weights = {"on_time": _number(weights.on_time), "closed": _number(weights.closed),
                     "satisfied": _number(weights.satisfied),
                     "rework": _number(weights.rework),
                     "rounds": round_weights.any,
                     "coverage": _number(round_weights.coverage),
                     "visits": _number(round_weights.visits),
                     "campaigns": _number(round_weights.campaigns)}
    audiences: list[tuple[str, RoleName, bool]] = [
        ("community", RoleName.COMMUNITY_SUPERVISOR, False),
        ("street", RoleName.STREET_SUPERVISOR, True),
    ]
    sent = 0
    for kind, role, street in audiences:
        scopes: dict[int, list[int]] = {}
        for node in _active(d, kind):
            for pid in holders.get((role.value, node.id), []):
                scopes.setdefault(pid, []).append(node.id)
        for pid, node_ids in scopes.items():
            chosen = [r for r in rows if _under(d, r[0], node_ids)]
            if not chosen:
                continue
            text = tx.texts.render("score", score_month=period.label, score_street=street,
                                   score_late=late,
                                   score_weights=shown_weights, score_rows=ranked(chosen))
            await send_to_person(tx, f"score:{period.label}:{kind}:{pid}", pid, text)
            sent += 1
    return sent


def _under(d: Directory, place: Place, node_ids: list[int]) -> bool:
    return any(p.id in node_ids for p in d.ancestors(place))


__all__ = ["DEFAULT_AT", "LATE_AFTER", "LIST_CAP", "OFF", "SCORE_CATCH_UP_DAYS", "Job",
           "jobs_due", "run_due", "send_digest", "send_score"]
