"""Patrols (巡查): a grid member's or leader's walk of their grid, from 开始巡查 to 结束巡查.

A patrol belongs to one person and one of their grids; a person has at most one under way.
While it is under way, the points they share (a live location's updates, or points one by
one), their photos and their notes belong to it. Each point marks the buildings of the grid
within `org_settings.patrol_radius` metres of it (the registry's building points) as covered,
the first time it comes near. 发现问题 files a case in the building they are at (the nearest
covered one from their latest point), found on patrol: open at once, no building head's
verification (`ReportInput.source='patrol'`).

A patrol nobody ends is ended by the sweep (`end_stale`, a PeriodicJob) STALE_AFTER its last
point or item, at that last moment, marked `ended_by_timeout`, and its person is told.

The points are personal data of the staff member: bot/ops/privacy.py exports and erases them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select

from bot.cases import lifecycle
from bot.cases.outbox import enqueue
from bot.context import Tx
from bot.errors import DomainError
from bot.org import geo
from bot.org.directory import Directory, NodeKind, Place, directory
from bot.org.roles import RoleName
from storage.models import (
    Case,
    OrgSettings,
    Patrol,
    PatrolBuilding,
    PatrolItem,
    PatrolPoint,
    Person,
)

# A patrol with no point or item for this long is ended by the sweep.
STALE_AFTER = timedelta(hours=8)
# Photos of the patrol sent this shortly before 发现问题 go with the case it files.
PHOTOS_BEFORE = timedelta(minutes=10)
# /patrols shows this many, newest first.
RECENT = 10
DEFAULT_RADIUS = 50.0
PATROL_ROLES = (RoleName.GRID_LEADER, RoleName.GRID_MEMBER)
SOURCE = "patrol"


def patrol_grids(d: Directory, person_id: int) -> list[Place]:
    """The grids `person_id` may patrol: where they are the leader or a member."""
    ids = {n for r, n in d.roles_of.get(person_id, ()) if r in PATROL_ROLES}
    grids = [d.places[i] for i in ids if i in d.places and d.places[i].active]
    return sorted(grids, key=lambda g: (g.position, g.id))


def grid_buildings(d: Directory, grid_id: int) -> list[Place]:
    """The grid's active buildings, in the registry's order."""
    return [b for b in d.buildings() if b.parent_id == grid_id]


async def radius(tx: Tx) -> float:
    value = await tx.db.scalar(select(OrgSettings.patrol_radius).limit(1))
    return float(value) if value else DEFAULT_RADIUS


async def active(tx: Tx, person_id: int) -> Patrol | None:
    """The person's patrol under way, if any."""
    found: Patrol | None = await tx.db.scalar(
        select(Patrol).where(Patrol.person_id == person_id, Patrol.ended_at.is_(None))
        .order_by(Patrol.started_at.desc(), Patrol.id.desc()).limit(1))
    return found


async def start(tx: Tx, person_id: int, grid_id: int) -> tuple[Patrol, bool]:
    """开始巡查 in `grid_id`: (the new patrol, True); (the one under way, False) when the person
    already has one. Refused to someone who is not the grid's leader or member."""
    d = await directory(tx.db)
    if grid_id not in {g.id for g in patrol_grids(d, person_id)}:
        raise DomainError("patrol_not_staff")
    under_way = await active(tx, person_id)
    if under_way is not None:
        return under_way, False
    patrol = Patrol(person_id=person_id, grid_id=grid_id, started_at=tx.now,
                    ended_by_timeout=False)
    tx.db.add(patrol)
    await tx.db.flush()
    await tx.db.commit()
    return patrol, True


async def add_point(tx: Tx, patrol: Patrol, lat: float, lon: float, *,
                    live: bool = False) -> list[Place]:
    """A point of the patrol; returns the buildings it covered for the first time."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return []
    tx.db.add(PatrolPoint(patrol_id=patrol.id, at=tx.now, lat=lat, lon=lon, live=live))
    d = await directory(tx.db)
    near = await radius(tx)
    covered = set((await tx.db.scalars(
        select(PatrolBuilding.building_id).where(PatrolBuilding.patrol_id == patrol.id))).all())
    new = [b for b in grid_buildings(d, patrol.grid_id)
           if b.id not in covered and b.lat is not None and b.lon is not None
           and geo.metres(lat, lon, b.lat, b.lon) <= near]
    for b in new:
        tx.db.add(PatrolBuilding(patrol_id=patrol.id, building_id=b.id, at=tx.now))
    await tx.db.commit()
    return new


async def last_point(tx: Tx, patrol_id: int) -> PatrolPoint | None:
    found: PatrolPoint | None = await tx.db.scalar(
        select(PatrolPoint).where(PatrolPoint.patrol_id == patrol_id)
        .order_by(PatrolPoint.at.desc(), PatrolPoint.id.desc()).limit(1))
    return found


async def add_item(tx: Tx, patrol: Patrol, *, text: str | None = None,
                   file_id: str | None = None, case_id: int | None = None,
                   commit: bool = True) -> PatrolItem:
    """A photo or a note of the patrol, placed at its latest point."""
    point = await last_point(tx, patrol.id)
    item = PatrolItem(patrol_id=patrol.id, at=tx.now, text=text or None, file_id=file_id,
                      lat=point.lat if point else None, lon=point.lon if point else None,
                      case_id=case_id)
    tx.db.add(item)
    await tx.db.flush()
    if commit:
        await tx.db.commit()
    return item


async def photos_before(tx: Tx, patrol: Patrol) -> list[PatrolItem]:
    """The patrol's photos of the last PHOTOS_BEFORE not yet with a case, sent after its last
    case: a photo taken, then 发现问题 pressed, belongs to the problem."""
    since = tx.now - PHOTOS_BEFORE
    last_case = await tx.db.scalar(select(func.max(PatrolItem.at)).where(
        PatrolItem.patrol_id == patrol.id, PatrolItem.case_id.is_not(None)))
    if last_case is not None and last_case > since:
        since = last_case
    return list((await tx.db.scalars(
        select(PatrolItem).where(PatrolItem.patrol_id == patrol.id,
                                 PatrolItem.file_id.is_not(None),
                                 PatrolItem.case_id.is_(None), PatrolItem.at >= since)
        .order_by(PatrolItem.at, PatrolItem.id))).all())


async def building_at(tx: Tx, patrol: Patrol) -> Place | None:
    """The building the person is at: the nearest building of the patrol's grid within the
    radius of their latest point; None without a point or with none near."""
    point = await last_point(tx, patrol.id)
    if point is None:
        return None
    d = await directory(tx.db)
    near = await radius(tx)
    scored = [(geo.metres(point.lat, point.lon, b.lat, b.lon), b.position, b.id, b)
              for b in grid_buildings(d, patrol.grid_id)
              if b.lat is not None and b.lon is not None]
    scored = [s for s in scored if s[0] <= near]
    return min(scored, key=lambda s: s[:3])[3] if scored else None


async def report_found(tx: Tx, patrol: Patrol, building_id: int, text: str,
                       photos: list[str], earlier: tuple[int, ...] = ()) -> Case:
    """发现问题: the case found on the patrol, in `building_id` of its grid; the category is
    the one its words suggest (staff change it with 改类别). `photos`: the draft's; `earlier`:
    the ids of the patrol's photo items sent just before (photos_before), which join the case
    first. No source chat: the person is answered by the patrol's own line (its number and
    building), not a resident's receipt. Commits."""
    if patrol.ended_at is not None:
        raise DomainError("patrol_ended")
    d = await directory(tx.db)
    building = d.place(building_id)
    if building is None or building.kind != NodeKind.BUILDING or \
            building.parent_id != patrol.grid_id:
        raise DomainError("no_building")
    point = await last_point(tx, patrol.id)
    before = list(await tx.db.scalars(
        select(PatrolItem).where(PatrolItem.id.in_(earlier), PatrolItem.patrol_id == patrol.id,
                                 PatrolItem.file_id.is_not(None), PatrolItem.case_id.is_(None))
        .order_by(PatrolItem.at, PatrolItem.id))) if earlier else []
    case = await lifecycle.report(tx, lifecycle.ReportInput(
        building_id=building_id, reporter_id=patrol.person_id, description=text,
        photos=[*(i.file_id for i in before if i.file_id), *photos],
        latitude=point.lat if point else None, longitude=point.lon if point else None,
        source=SOURCE, patrol_id=patrol.id,
    ))
    for item in before:
        item.case_id = case.id
    await add_item(tx, patrol, text=text, case_id=case.id, commit=False)
    for file_id in photos:
        await add_item(tx, patrol, file_id=file_id, case_id=case.id, commit=False)
    await tx.db.commit()
    return case


@dataclass
class Summary:
    """What a patrol was: its times, points, covered buildings, photos, notes and cases."""

    patrol: Patrol
    grid: str
    person: str
    points: int = 0
    buildings: list[str] = field(default_factory=list)
    photos: int = 0
    notes: int = 0
    cases: int = 0

    @property
    def minutes(self) -> int:
        end = self.patrol.ended_at
        if end is None:
            return 0
        return max(0, int((end - self.patrol.started_at).total_seconds() // 60))


async def summary(tx: Tx, patrol: Patrol, d: Directory | None = None) -> Summary:
    d = d or await directory(tx.db)
    db = tx.db
    grid = d.place(patrol.grid_id)
    person = await db.get(Person, patrol.person_id)
    points = await db.scalar(select(func.count()).select_from(PatrolPoint)
                             .where(PatrolPoint.patrol_id == patrol.id))
    covered = (await db.scalars(
        select(PatrolBuilding.building_id).where(PatrolBuilding.patrol_id == patrol.id)
        .order_by(PatrolBuilding.at, PatrolBuilding.building_id))).all()
    photos = await db.scalar(select(func.count()).select_from(PatrolItem).where(
        PatrolItem.patrol_id == patrol.id, PatrolItem.file_id.is_not(None)))
    notes = await db.scalar(select(func.count()).select_from(PatrolItem).where(
        PatrolItem.patrol_id == patrol.id, PatrolItem.text.is_not(None),
        PatrolItem.file_id.is_(None), PatrolItem.case_id.is_(None)))
    cases = await db.scalar(select(func.count()).select_from(Case)
                            .where(Case.patrol_id == patrol.id))
    names = [p.name for b in covered if (p := d.place(b)) is not None]
    return Summary(patrol, grid.name if grid else "", person.name if person else "",
                   int(points or 0), names, int(photos or 0), int(notes or 0), int(cases or 0))


async def last_activity(tx: Tx, patrol: Patrol) -> datetime:
    """The patrol's last point or item, else its start."""
    point = await tx.db.scalar(select(func.max(PatrolPoint.at))
                               .where(PatrolPoint.patrol_id == patrol.id))
    item = await tx.db.scalar(select(func.max(PatrolItem.at))
                              .where(PatrolItem.patrol_id == patrol.id))
    return max(t for t in (patrol.started_at, point, item) if t is not None)


async def end(tx: Tx, patrol: Patrol) -> Summary:
    """结束巡查 now. Commits."""
    if patrol.ended_at is None:
        patrol.ended_at = tx.now
        await tx.db.commit()
    return await summary(tx, patrol)


def summary_text(tx: Tx, s: Summary) -> str:
    """The summary as the person reads it (labels_patrols.j2)."""
    t, p = tx.texts, s.patrol
    head = "patrol_timeout_head" if p.ended_by_timeout else "patrol_end_head"
    lines = [
        t.label(head, place=s.grid, n=int(STALE_AFTER.total_seconds() // 3600)),
        t.label("patrol_line_time", before=t.local_time(p.started_at, "%m-%d %H:%M"),
                after=t.local_time(p.ended_at, "%H:%M") if p.ended_at else "",
                minutes=s.minutes),
        t.label("patrol_line_points", count=s.points),
        t.label("patrol_line_buildings", count=len(s.buildings), text="、".join(s.buildings)),
        t.label("patrol_line_items", photos=s.photos, n=s.notes, total=s.cases),
    ]
    return "\n".join(str(line) for line in lines)


async def end_stale(tx: Tx) -> int:
    """The sweep's periodic step: end each patrol with nothing new for STALE_AFTER, at its
    last point or item, and tell its person; returns how many messages it wrote."""
    since = tx.now - STALE_AFTER
    candidates = (await tx.db.scalars(
        select(Patrol).where(Patrol.ended_at.is_(None), Patrol.started_at <= since)
        .order_by(Patrol.id))).all()
    sent = 0
    for candidate in candidates:
        last = await last_activity(tx, candidate)
        if last > since:
            continue
        patrol = await tx.db.get(Patrol, candidate.id,
                                 with_for_update={"skip_locked": True}, populate_existing=True)
        if patrol is None or patrol.ended_at is not None:
            continue
        patrol.ended_at = last
        patrol.ended_by_timeout = True
        await tx.db.flush()
        text = summary_text(tx, await summary(tx, patrol))
        if await enqueue(tx.db, f"patrol:{patrol.id}:timeout", patrol.person_id, text, tx.now,
                         person_id=patrol.person_id, kind="patrol"):
            sent += 1
        await tx.db.commit()
    return sent


@dataclass
class Line:
    """A line of /patrols."""

    summary: Summary
    under_way: bool


async def recent(tx: Tx, person_id: int, limit: int = RECENT) -> list[Line] | None:
    """The patrols `person_id` may see, newest first: their own (a grid member), their grid's
    (a grid leader), their scope's (community and street supervisors). None for someone who
    holds none of these roles."""
    d = await directory(tx.db)
    roles = d.roles_of.get(person_id, ())
    led = {n for r, n in roles if r == RoleName.GRID_LEADER}
    scopes = {n for r, n in roles
              if r in (RoleName.COMMUNITY_SUPERVISOR, RoleName.STREET_SUPERVISOR)}
    member = any(r == RoleName.GRID_MEMBER for r, _ in roles)
    if not (led or scopes or member):
        return None
    grids = set(led)
    for place in d.places.values():
        if place.kind == NodeKind.GRID and any(a.id in scopes for a in d.ancestors(place)):
            grids.add(place.id)
    rows = (await tx.db.scalars(
        select(Patrol).where(or_(Patrol.person_id == person_id,
                                 Patrol.grid_id.in_(grids) if grids else Patrol.id.is_(None)))
        .order_by(Patrol.started_at.desc(), Patrol.id.desc()).limit(limit))).all()
    lines = []
    for patrol in rows:
        s = await summary(tx, patrol, d)
        lines.append(Line(s, patrol.ended_at is None))
    return lines


def list_text(tx: Tx, lines: list[Line]) -> str:
    t = tx.texts
    if not lines:
        return str(t.label("patrols_none"))
    out = [str(t.label("patrols_head", count=len(lines)))]
    for line in lines:
        s = line.summary
        out.append(str(t.label(
            "patrols_line", before=t.local_time(s.patrol.started_at, "%m-%d %H:%M"),
            name=s.person, place=s.grid, minutes=s.minutes, on=line.under_way,
            count=len(s.buildings), total=s.cases)))
    return "\n".join(out)
