"""Care visits (走访): the roster of households a grid visits on a schedule, the visits, and
what falls due.

A household (`care_households`) belongs to a building: its unit and door, the people's
names, a kind (独居老人, 残疾人, 困难家庭, 留守儿童, or the district's own from the registry's
`care_kinds:`), an interval (`7d`, `2w`, `1m`, `3m`; a month is a calendar month in the
registry's time zone), an optional phone number, notes. Its next visit is due one interval
after the last (after the roster load for one never visited).

A visit (`care_visits`) is recorded by the staff of the household's grid (its leader and
members): a note, photos, a place, and a need found (发现困难), which files a case
(`source='visit'`) with the staff's note as its description, nothing else of the household.
The visit keeps when it was due, so whether it was on time is known for ever.

Due and overdue visits are owed to the grid's staff on their reminder lists (`visit_due` a
day or two ahead, `visit_overdue` once due), once per household and due date, after the
quiet hours; a reminder is dropped when the household was visited or made inactive since.
The roster is personal data of vulnerable people: it is shown only privately, to the staff
of its grid (and through the CLI to the operator); a list with a household's line never has
a group fallback (bot/cases/reminders.py).
"""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.cases import reminders
from bot.cases.lifecycle import ReportInput, report
from bot.cases.phones import mask_phones
from bot.context import Tx
from bot.errors import DomainError
from bot.org.directory import Directory, NodeKind, Place, directory, org_settings
from bot.org.roles import Actor, RoleName
from bot.user_text import clean_text, visible
from storage.models import CareHousehold, CareVisit, Person, Reminder

log = logging.getLogger(__name__)

# The four kinds every district has, with their names and default intervals.
STANDARD_KINDS: dict[str, tuple[str, str, str]] = {
    "elderly_alone": ("独居老人", "Older person living alone", "1m"),
    "disabled": ("残疾人", "Person with a disability", "1m"),
    "hardship": ("困难家庭", "Household in hardship", "1m"),
    "left_behind": ("留守儿童", "Left-behind child", "1m"),
}
STAFF_ROLES = (RoleName.GRID_LEADER, RoleName.GRID_MEMBER)
SUPERVISOR_ROLES = (RoleName.COMMUNITY_SUPERVISOR, RoleName.STREET_SUPERVISOR)
# `visit_due` is owed this long before the due time; `visit_overdue` once it has passed.
DUE_AHEAD = timedelta(days=2)
DUE_KIND = "visit_due"
OVERDUE_KIND = "visit_overdue"
NOTE_LIMIT = 2000
MAX_PHOTOS = 10
# The periodic job looks at most this often per worker (the dedupe keys keep it once anyway).
LOOK_EVERY = timedelta(minutes=10)
_LOOKED = "care_due_looked_at"

_INTERVAL = re.compile(r"^\s*(\d{1,3})\s*([dwmDWM天周月])\s*$")
_WORDS = {
    "每天": "1d", "每日": "1d", "每周": "7d", "每星期": "7d", "每两周": "2w", "每半月": "2w",
    "每半个月": "2w", "每月": "1m", "每个月": "1m", "每两月": "2m", "每两个月": "2m",
    "每季度": "3m", "每季": "3m", "每三个月": "3m", "每半年": "6m", "每年": "12m",
    "weekly": "7d", "monthly": "1m", "quarterly": "3m",
}


@dataclass(frozen=True)
class Kind:
    code: str
    name_zh: str
    name_en: str
    interval: str

    def name(self, locale: str) -> str:
        return self.name_zh if locale == "zh_CN" else self.name_en


def kinds_from(stored: Sequence[Any] | None) -> dict[str, Kind]:
    """The standard kinds and the district's own (org_settings.care_kinds), by code."""
    out = {code: Kind(code, zh, en, interval)
           for code, (zh, en, interval) in STANDARD_KINDS.items()}
    for item in stored or ():
        if not isinstance(item, dict) or not item.get("code"):
            continue
        names = item.get("name") or {}
        zh = str(names.get("zh_CN") or item["code"])
        out[str(item["code"])] = Kind(str(item["code"]), zh, str(names.get("en") or zh),
                                      str(item.get("interval") or "1m"))
    return out


async def kinds(tx_db: Any) -> dict[str, Kind]:
    row = await org_settings(tx_db)
    return kinds_from(row.care_kinds if row is not None else None)


def kind_of(all_kinds: dict[str, Kind], text: str) -> Kind | None:
    """A kind by its code or either of its names, as a roster writes it."""
    text = text.strip()
    if text in all_kinds:
        return all_kinds[text]
    low = text.lower()
    return next((k for k in all_kinds.values()
                 if text == k.name_zh or low == k.name_en.lower()), None)


def parse_interval(text: str) -> str | None:
    """`7d`, `2w`, `1m`, `3m` (also 7天, 2周, 1月, 每周, 每月, 每季度): the interval as stored
    (`<n>d`, `<n>w` or `<n>m`); None when it cannot be read."""
    text = (text or "").strip()
    if text in _WORDS or text.lower() in _WORDS:
        return _WORDS.get(text) or _WORDS[text.lower()]
    m = _INTERVAL.match(text)
    if m is None:
        return None
    n, unit = int(m.group(1)), m.group(2).lower()
    unit = {"天": "d", "周": "w", "月": "m"}.get(unit, unit)
    if n <= 0 or (unit == "d" and n > 366) or (unit == "w" and n > 52) or (unit == "m"
                                                                           and n > 12):
        return None
    return f"{n}{unit}"


def add_interval(at: datetime, interval: str, timezone: str) -> datetime:
    """`at` plus the interval; months are calendar months of the local date (31 Jan + 1m:
    the last day of February), at the same local time."""
    n, unit = int(interval[:-1]), interval[-1]
    if unit == "d":
        return at + timedelta(days=n)
    if unit == "w":
        return at + timedelta(weeks=n)
    local = at.astimezone(ZoneInfo(timezone))
    month = local.month - 1 + n
    year, month = local.year + month // 12, month % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day).astimezone(at.tzinfo)


# --- who may see what ----------------------------------------------------------------------


def grid_of(d: Directory, building_id: int) -> Place | None:
    building = d.place(building_id)
    if building is None:
        return None
    return d.place(building.parent_id)


def staff_grids(d: Directory, actor: Actor) -> list[Place]:
    """The grids `actor` leads or is a member of: where they record visits."""
    grids = [p for n in actor.node_ids(*STAFF_ROLES) if (p := d.place(n)) is not None
             and p.kind == NodeKind.GRID and p.active]
    return sorted(grids, key=lambda p: (p.position, p.id))


def may_visit(d: Directory, actor: Actor, building_id: int) -> bool:
    grid = grid_of(d, building_id)
    return grid is not None and any(g.id == grid.id for g in staff_grids(d, actor))


def staff_of(d: Directory, grid_id: int) -> list[int]:
    """The grid's leaders and members: who is reminded of its visits."""
    return sorted({pid for pid, roles in d.roles_of.items() for role, node in roles
                   if node == grid_id and role in STAFF_ROLES})


def may_see(d: Directory, person_id: int, building_id: int) -> bool:
    """The staff of the building's grid and the supervisors above it."""
    grid = grid_of(d, building_id)
    if grid is None:
        return False
    above = {grid.id, *(p.id for p in d.ancestors(grid))}
    for role, node in d.roles_of.get(person_id, ()):
        if node == grid.id and role in STAFF_ROLES:
            return True
        if node in above and role in SUPERVISOR_ROLES:
            return True
    return False


# --- the roster as staff see it ------------------------------------------------------------


def door_of(h: CareHousehold) -> str:
    """单元-门牌 as staff say it: `1-302`, or the door alone."""
    return f"{h.unit}-{h.door}" if h.unit else h.door


def mark(h: CareHousehold, now: datetime) -> str:
    """🔴 overdue, 🟡 due within DUE_AHEAD, '' otherwise."""
    if h.next_due_at is None:
        return ""
    if h.next_due_at <= now:
        return "🔴"
    if h.next_due_at <= now + DUE_AHEAD:
        return "🟡"
    return ""


@dataclass(frozen=True)
class BuildingCount:
    building: Place
    households: int
    overdue: int
    due_soon: int


async def buildings_for(tx: Tx, actor: Actor) -> list[BuildingCount]:
    """The buildings of the actor's grids with active households, and their counts."""
    d = await directory(tx.db)
    grid_ids = {g.id for g in staff_grids(d, actor)}
    buildings = [b for b in d.buildings() if b.parent_id in grid_ids]
    if not buildings:
        return []
    rows = (await tx.db.execute(
        select(CareHousehold.building_id, CareHousehold.next_due_at)
        .where(CareHousehold.active.is_(True),
               CareHousehold.building_id.in_([b.id for b in buildings])))).all()
    counts: dict[int, list[int]] = {}
    for building_id, due in rows:
        c = counts.setdefault(building_id, [0, 0, 0])
        c[0] += 1
        if due is not None and due <= tx.now:
            c[1] += 1
        elif due is not None and due <= tx.now + DUE_AHEAD:
            c[2] += 1
    return [BuildingCount(b, *counts[b.id]) for b in buildings if b.id in counts]


def _door_key(h: CareHousehold) -> tuple[Any, ...]:
    def natural(s: str) -> tuple[Any, ...]:
        return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))
    return (natural(h.unit), natural(h.door))


async def households_of(tx: Tx, actor: Actor, building_id: int) -> list[CareHousehold]:
    d = await directory(tx.db)
    if not may_visit(d, actor, building_id):
        raise DomainError("care_not_staff")
    rows = (await tx.db.scalars(
        select(CareHousehold).where(CareHousehold.building_id == building_id,
                                    CareHousehold.active.is_(True)))).all()
    return sorted(rows, key=_door_key)


async def household_for(tx: Tx, actor: Actor, household_id: int) -> CareHousehold:
    """An active household the actor may visit; refused otherwise (nothing said of it)."""
    h = await tx.db.get(CareHousehold, household_id) if 0 < household_id < 2**31 else None
    if h is None or not h.active or not may_visit(await directory(tx.db), actor,
                                                  h.building_id):
        raise DomainError("care_not_staff")
    return h


def masked_phone(h: CareHousehold) -> str | None:
    return mask_phones(h.phone) if h.phone else None


async def place_of(tx: Tx, h: CareHousehold) -> str:
    """The building's name and the unit-door: `3号楼 1-302`."""
    building = (await directory(tx.db)).place(h.building_id)
    return f"{building.name if building else h.building_id} {door_of(h)}"


def unit_id_of(d: Directory, building_id: int, unit: str) -> int | None:
    """The registry's unit of a household's 单元 (`1`, `1单元`), if the building has it."""
    want = unit.strip().removesuffix("单元").strip()
    if not want:
        return None
    for p in d.places.values():
        if p.kind == NodeKind.UNIT and p.parent_id == building_id and p.active and (
                p.code.rsplit("/", 1)[-1] == want or p.name.removesuffix("单元") == want):
            return p.id
    return None


# --- recording a visit ---------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    visit: CareVisit
    household: CareHousehold
    case_id: int | None
    on_time: bool


def clean_note(text: str) -> str:
    note = clean_text(text or "", NOTE_LIMIT * 2)
    if len(note) > NOTE_LIMIT:
        raise DomainError("care_note_too_long", limit=NOTE_LIMIT, count=len(note))
    return note if visible(note) else ""


async def record_visit(tx: Tx, actor: Actor, household_id: int, note: str,
                       photos: Sequence[str] = (), *, lat: float | None = None,
                       lon: float | None = None, need_found: bool = False) -> Recorded:
    """The visit recorded, the household's last visit and next due moved on, and with
    发现困难 a case filed (the note as its description); commits."""
    h = await household_for(tx, actor, household_id)
    await tx.db.refresh(h, with_for_update=True)
    note = clean_note(note)
    if not note:
        raise DomainError("care_note_empty")
    due_at = h.next_due_at
    visit = CareVisit(household_id=h.id, person_id=actor.id, at=tx.now, due_at=due_at,
                      note=note, photos=list(photos[:MAX_PHOTOS]), lat=lat, lon=lon,
                      need_found=need_found)
    tx.db.add(visit)
    h.last_visit_at = tx.now
    h.next_due_at = add_interval(tx.now, h.interval, tx.policy.timezone)
    h.updated_at = tx.now
    await tx.db.flush()
    case_id = None
    if need_found:
        d = await directory(tx.db)
        welfare = d.categories.get("welfare")
        case = await report(tx, ReportInput(
            building_id=h.building_id, unit_id=unit_id_of(d, h.building_id, h.unit),
            reporter_id=actor.id, description=note,
            category="welfare" if welfare is not None and welfare.active else None,
            photos=list(photos[:MAX_PHOTOS]), latitude=lat, longitude=lon, source="visit"))
        visit.case_id = case_id = case.id
    await tx.db.commit()
    return Recorded(visit, h, case_id, due_at is None or tx.now <= due_at)


# --- due and overdue: the reminder lists ---------------------------------------------------


async def _stale(tx: Tx, r: Reminder) -> str | None:
    h = await tx.db.get(CareHousehold, r.household_id) if r.household_id else None
    if h is None:
        return f"household {r.household_id} is gone"
    if not h.active:
        return f"household {h.id} is no longer on the roster"
    if h.last_visit_at is not None and h.last_visit_at >= r.created_at:
        return f"household {h.id} was visited since"
    if h.next_due_at is None:
        return f"household {h.id} has no visit due"
    if r.kind == OVERDUE_KIND and h.next_due_at > tx.now:
        return f"household {h.id} is no longer overdue"
    if r.kind == DUE_KIND and h.next_due_at > tx.now + DUE_AHEAD:
        return f"household {h.id} is not due soon any more"
    return None


async def _line(tx: Tx, r: Reminder) -> dict[str, Any]:
    h = await tx.db.get(CareHousehold, r.household_id)
    assert h is not None
    kind = kind_of(await kinds(tx.db), h.kind)
    overdue = h.next_due_at is not None and h.next_due_at <= tx.now
    context = {"place": await place_of(tx, h),
               "kind": kind.name(tx.texts.locale) if kind else h.kind,
               "before": tx.texts.local_time(h.next_due_at, "%m-%d")}
    text = tx.texts.label("care_line_overdue" if overdue else "care_line_due", **context)
    label = tx.texts.plain("btn_care_remind", place=("🔴 " if overdue else "🟡 ") + door_of(h))
    return {"text": text, "pressing": False,
            "button": {"text": label, "callback_data": f"cv:h:{h.id}"}}


reminders.register(DUE_KIND, reminders.Subject(stale=_stale, line=_line))
reminders.register(OVERDUE_KIND, reminders.Subject(stale=_stale, line=_line))


async def owe_due(tx: Tx) -> int:
    """Reminders owed to the grids' staff for the households due within DUE_AHEAD or
    overdue, once per household, kind and due date; returns how many were written."""
    d = await directory(tx.db)
    rows = list((await tx.db.scalars(
        select(CareHousehold).where(CareHousehold.active.is_(True),
                                    CareHousehold.next_due_at.is_not(None),
                                    CareHousehold.next_due_at <= tx.now + DUE_AHEAD)
        .order_by(CareHousehold.next_due_at, CareHousehold.id))).all())
    if not rows:
        return 0
    wanted: dict[str, tuple[CareHousehold, str, list[int]]] = {}
    for h in rows:
        grid = grid_of(d, h.building_id)
        if grid is None or not grid.active:
            continue
        assert h.next_due_at is not None
        kind = OVERDUE_KIND if h.next_due_at <= tx.now else DUE_KIND
        key = f"{kind}:{h.id}:{int(h.next_due_at.timestamp())}"
        people = staff_of(d, grid.id)
        if people:
            wanted[key] = (h, kind, people)
    if not wanted:
        return 0
    keys = [f"{k}:{pid}" for k, (_h, _kind, people) in wanted.items() for pid in people]
    have: set[str] = set()
    for i in range(0, len(keys), 500):
        have.update((await tx.db.scalars(
            select(Reminder.dedupe_key).where(Reminder.dedupe_key.in_(keys[i:i + 500])))).all())
    due_at = tx.policy.quiet_until(tx.now) or tx.now
    persons = {p.id: p for p in (await tx.db.scalars(
        select(Person).where(Person.id.in_({pid for *_x, ps in wanted.values()
                                            for pid in ps})))).all()}
    written = 0
    for key, (h, kind, people) in wanted.items():
        todo = [persons[pid] for pid in people
                if f"{key}:{pid}" not in have and pid in persons]
        if todo:
            await reminders.owe_about(tx, key, todo, kind, household_id=h.id, due_at=due_at)
            written += len(todo)
    return written


async def run_due(tx: Tx) -> int:
    """The sweep's periodic step (bot/app.py PERIODIC): owes the due and overdue visits'
    reminders (the lists are written by the gathering that follows); commits what it wrote.
    Returns 0: it writes reminders, not messages."""
    looked = tx.ctx.extra.get(_LOOKED)
    if isinstance(looked, datetime) and tx.now - looked < LOOK_EVERY and tx.now >= looked:
        return 0
    try:
        written = await owe_due(tx)
        if written:
            await tx.db.commit()
            log.info("care: %d visit reminders owed", written)
    except Exception:
        await tx.db.rollback()
        log.exception("care visit reminders failed; retried at the next sweep")
        return 0
    tx.ctx.extra[_LOOKED] = tx.now
    return 0


# --- the digest's counts -------------------------------------------------------------------


async def due_counts(tx: Tx, day_end: datetime) -> dict[int, tuple[int, int]]:
    """Per grid id: households due by `day_end` but not yet overdue, and overdue now."""
    d = await directory(tx.db)
    rows = (await tx.db.execute(
        select(CareHousehold.building_id, CareHousehold.next_due_at)
        .where(CareHousehold.active.is_(True), CareHousehold.next_due_at.is_not(None),
               CareHousehold.next_due_at < day_end))).all()
    out: dict[int, list[int]] = {}
    for building_id, due in rows:
        grid = grid_of(d, building_id)
        if grid is None:
            continue
        c = out.setdefault(grid.id, [0, 0])
        c[1 if due is not None and due <= tx.now else 0] += 1
    return {g: (c[0], c[1]) for g, c in out.items()}
