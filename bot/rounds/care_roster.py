"""The care roster as grid offices keep it: Excel (or CSV) in, Excel out.

`gridbot care import FILE.xlsx|.csv` reads a roster with its columns named as a district
writes them (楼栋, 单元, 门牌号 or 房号, 姓名, 类别, 走访周期, 联系电话, 备注; English headers
too). Every cell it cannot read is an error naming the row as Excel shows it and the column's
header; with any error nothing is loaded. A household is keyed by its building, unit and
door: loading it again updates it, and a household of a building in the file that the file
no longer lists is made inactive (its visits are kept).

`gridbot care export` writes the roster back with the same headers (so it loads again), each
household's last visit, next due and number of visits, and a second sheet of the visits.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import phonenumbers
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.org.directory import Directory, NodeKind, Place, directory, org_settings
from bot.rounds.care import add_interval, kind_of, kinds_from, parse_interval
from storage.models import CareHousehold, CareVisit, Person, Reminder

# Each field and the headers that name it (compared without spaces, case-insensitively).
HEADERS: dict[str, tuple[str, ...]] = {
    "building": ("楼栋", "楼栋编码", "楼栋编号", "楼号", "楼栋名称", "building"),
    "unit": ("单元", "单元号", "unit"),
    "door": ("门牌号", "房号", "门牌", "房间号", "户号", "door", "room"),
    "names": ("姓名", "名字", "人员姓名", "names", "name"),
    "kind": ("类别", "类型", "人员类别", "对象类别", "kind", "category"),
    "interval": ("走访周期", "周期", "走访频次", "interval"),
    "phone": ("联系电话", "电话", "手机", "手机号", "phone"),
    "notes": ("备注", "情况说明", "notes", "note"),
}
REQUIRED = ("building", "door", "names", "kind")
# The headers written by the export, one per field (and what it adds after them).
WRITTEN = {"building": "楼栋", "unit": "单元", "door": "门牌号", "names": "姓名", "kind": "类别",
           "interval": "走访周期", "phone": "联系电话", "notes": "备注"}
EXTRA = ("上次走访", "下次应访", "走访次数")
VISIT_HEADERS = ("楼栋", "单元", "门牌号", "姓名", "走访时间", "应访时间", "按期", "走访人",
                 "走访情况", "发现困难", "诉求编号", "照片数")
ERRORS_SHOWN = 20
# A title row or two above the headers is common: the header row is looked for this far.
HEADER_SEARCH = 5
LIMITS = {"unit": 32, "door": 32, "names": 200, "phone": 32}


class RosterError(Exception):
    """Why a roster was not loaded: every problem found, each naming its row and column."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems[:ERRORS_SHOWN]))
        self.problems = problems

    def summary(self) -> str:
        shown = [f"  {p}" for p in self.problems[:ERRORS_SHOWN]]
        more = len(self.problems) - ERRORS_SHOWN
        if more > 0:
            shown.append(f"  … and {more} more")
        return "\n".join(shown)


def _norm_header(value: Any) -> str:
    return re.sub(r"\s+", "", str(value or "")).lower()


_LOOKUP = {_norm_header(h): f for f, names in HEADERS.items() for h in names}


def _cell(value: Any) -> str:
    """A cell as text: 302.0 (Excel's number) is 302; None is ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


# --- reading -------------------------------------------------------------------------------


def rows_of(path: Path) -> Iterator[tuple[int, Sequence[Any]]]:
    """(row number as Excel shows it, cells) of the file's first sheet, or of the CSV."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RosterError([f"{path} is not UTF-8: save it as \"CSV UTF-8\""]) from exc
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for line in reader:
            yield start, line
            start = reader.line_num + 1
        return
    if suffix not in (".xlsx", ".xlsm"):
        raise RosterError([f"{path}: a roster is an .xlsx or a .csv file"])
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        raise RosterError([f"{path} cannot be read as an Excel workbook: {exc}"]) from exc
    try:
        sheet = book.worksheets[0]
        yield from enumerate(sheet.iter_rows(values_only=True), 1)
    finally:
        book.close()


@dataclass
class Row:
    number: int
    building: Place
    unit: str
    door: str
    names: str
    kind: str
    interval: str
    phone: str | None
    notes: str | None


@dataclass
class Loaded:
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: list[str] = field(default_factory=list)
    buildings: list[str] = field(default_factory=list)

    def summary(self, path: Path) -> str:
        text = (f"care roster loaded from {path}: {self.rows} households of "
                f"{len(self.buildings)} building{'s' if len(self.buildings) != 1 else ''} "
                f"({self.added} new, {self.updated} updated, {self.unchanged} unchanged)")
        if self.deactivated:
            shown = ", ".join(self.deactivated[:ERRORS_SHOWN])
            more = len(self.deactivated) - ERRORS_SHOWN
            text += (f"; {len(self.deactivated)} no longer listed, made inactive (their "
                     f"visits are kept): {shown}" + (f" … and {more} more" if more > 0 else ""))
        return text


def _buildings(d: Directory) -> tuple[dict[str, Place], dict[str, list[Place]]]:
    by_code = {p.code: p for p in d.places.values()
               if p.kind == NodeKind.BUILDING and p.active}
    by_name: dict[str, list[Place]] = {}
    for p in by_code.values():
        by_name.setdefault(p.name, []).append(p)
    return by_code, by_name


def parse_rows(d: Directory, care_kinds: Sequence[Any] | None,
               rows: Iterable[tuple[int, Sequence[Any]]]) -> list[Row]:
    """The roster's rows checked against the registry; RosterError with every problem."""
    problems: list[str] = []
    it = iter(rows)
    columns: dict[str, int] = {}
    headers: dict[str, str] = {}
    for number, cells in it:
        found = {_LOOKUP[n]: i for i, c in enumerate(cells)
                 if (n := _norm_header(c)) in _LOOKUP}
        if "building" in found or "door" in found or "names" in found:
            for i, c in enumerate(cells):
                f = _LOOKUP.get(_norm_header(c))
                if f is not None and f not in columns:
                    columns[f] = i
                    headers[f] = str(c).strip()
            break
        if number >= HEADER_SEARCH:
            break
    missing = [WRITTEN[f] for f in REQUIRED if f not in columns]
    if missing:
        raise RosterError([f"no header row with the columns {', '.join(missing)} in the first "
                           f"{HEADER_SEARCH} rows (楼栋, 单元, 门牌号, 姓名, 类别, 走访周期, "
                           "联系电话, 备注)"])
    by_code, by_name = _buildings(d)
    all_kinds = kinds_from(care_kinds)
    seen: dict[tuple[int, str, str], int] = {}
    out: list[Row] = []
    for number, cells in it:
        values = {f: _cell(cells[i]) if i < len(cells) else "" for f, i in columns.items()}
        if not any(values.values()):
            continue  # an empty row

        def bad(f: str, why: str, _n: int = number) -> None:
            problems.append(f"row {_n}, column {headers[f]}: {why}")

        for f, limit in LIMITS.items():
            if len(values.get(f, "")) > limit:
                bad(f, f"longer than {limit} characters")
                values[f] = values[f][:limit]
        building = by_code.get(values["building"]) or by_code.get(values["building"].upper())
        if building is None:
            named = by_name.get(values["building"], [])
            if len(named) == 1:
                building = named[0]
            elif not values["building"]:
                bad("building", "empty")
            elif named:
                codes = ", ".join(sorted(p.code for p in named))
                bad("building", f"{values['building']!r} names several buildings ({codes}): "
                    "write its code")
            else:
                bad("building", f"no building {values['building']!r} in the registry")
        unit = values.get("unit", "").removesuffix("单元").strip()
        door = values["door"].removesuffix("室").strip()
        if not door:
            bad("door", "empty")
        names = re.sub(r"\s+", " ", values["names"])
        if not names:
            bad("names", "empty")
        kind = kind_of(all_kinds, values["kind"])
        if kind is None:
            known = ", ".join(k.name_zh for k in all_kinds.values())
            bad("kind", f"{values['kind']!r} is not a kind of the registry ({known})"
                if values["kind"] else f"empty ({known})")
        interval = kind.interval if kind is not None else ""
        if values.get("interval"):
            read = parse_interval(values["interval"])
            if read is None:
                bad("interval", f"{values['interval']!r} is not an interval: write 7d, 2w, "
                    "1m or 3m (or 每周, 每月, 每季度)")
            else:
                interval = read
        phone = values.get("phone") or None
        if phone is not None:
            try:
                parsed = phonenumbers.parse(phone, "CN")
                ok = phonenumbers.is_possible_number(parsed) and phonenumbers.is_valid_number(
                    parsed)
            except phonenumbers.NumberParseException:
                ok = False
            if not ok:
                bad("phone", f"{phone!r} is not a phone number")
        if building is not None and door:
            key = (building.id, unit, door)
            if key in seen:
                bad("door", f"the household {building.code} {unit + '-' if unit else ''}{door} "
                    f"is listed already on row {seen[key]}")
            else:
                seen[key] = number
        if building is not None and kind is not None and names and door:
            out.append(Row(number, building, unit, door, names, kind.code, interval, phone,
                           values.get("notes") or None))
    if problems:
        raise RosterError(problems)
    if not out:
        raise RosterError(["the roster lists no household"])
    return out


async def import_roster(db: AsyncSession, path: Path, now: datetime) -> Loaded:
    """Load the roster at `path` in one transaction; RosterError (nothing loaded) on any
    problem. Commits."""
    d = await directory(db)
    settings = await org_settings(db)
    if settings is None:
        raise RosterError(["load a registry first: gridbot registry load FILE.yaml"])
    tz = settings.timezone
    rows = parse_rows(d, settings.care_kinds, rows_of(path))
    building_ids = sorted({r.building.id for r in rows})
    existing = {(h.building_id, h.unit, h.door): h for h in (await db.scalars(
        select(CareHousehold).where(CareHousehold.building_id.in_(building_ids)))).all()}
    done = Loaded(rows=len(rows), buildings=sorted({r.building.code for r in rows}))
    listed: set[tuple[int, str, str]] = set()
    for r in rows:
        key = (r.building.id, r.unit, r.door)
        listed.add(key)
        h = existing.get(key)
        if h is None:
            db.add(CareHousehold(
                building_id=r.building.id, unit=r.unit, door=r.door, names=r.names,
                kind=r.kind, interval=r.interval, phone=r.phone, notes=r.notes, active=True,
                created_at=now, updated_at=now, last_visit_at=None,
                next_due_at=add_interval(now, r.interval, tz)))
            done.added += 1
            continue
        before = (h.names, h.kind, h.interval, h.phone, h.notes, h.active)
        after = (r.names, r.kind, r.interval, r.phone, r.notes, True)
        if before == after:
            done.unchanged += 1
            continue
        if h.interval != r.interval or not h.active:
            h.next_due_at = add_interval(h.last_visit_at or now, r.interval, tz)
        h.names, h.kind, h.interval, h.phone, h.notes, h.active = after
        h.updated_at = now
        done.updated += 1
    for key, h in sorted(existing.items(), key=lambda kv: kv[1].id):
        if key not in listed and h.active:
            h.active = False
            h.updated_at = now
            building = d.place(h.building_id)
            where = building.code if building else str(h.building_id)
            done.deactivated.append(f"{where} {h.unit + '-' if h.unit else ''}{h.door}")
    try:
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    return done


# --- erasing a household -------------------------------------------------------------------


async def erase_household(db: AsyncSession, building: str, door: str,
                          unit: str = "") -> str:
    """Delete a household and its visits (the cases filed from them stay: their text is
    the staff's). Reminders about it are kept without it, so a list not yet sent drops its
    line. Commits; returns a summary."""
    d = await directory(db)
    place = d.by_code.get(building)
    if place is None or place.kind != NodeKind.BUILDING:
        raise RosterError([f"no building {building!r} in the registry"])
    unit = unit.removesuffix("单元").strip()
    door = door.removesuffix("室").strip()
    h = await db.scalar(select(CareHousehold).where(
        CareHousehold.building_id == place.id, CareHousehold.unit == unit,
        CareHousehold.door == door))
    if h is None:
        raise RosterError([f"no household {building} {unit + '-' if unit else ''}{door}"])
    visits = int(await db.scalar(select(func.count()).select_from(CareVisit)
                                 .where(CareVisit.household_id == h.id)) or 0)
    await db.execute(update(Reminder).where(Reminder.household_id == h.id)
                     .values(household_id=None).execution_options(synchronize_session=False))
    await db.execute(delete(CareVisit).where(CareVisit.household_id == h.id))
    await db.delete(h)
    await db.commit()
    return (f"erased the household {building} {unit + '-' if unit else ''}{door} and its "
            f"{visits} visit{'s' if visits != 1 else ''}")


# --- writing -------------------------------------------------------------------------------


def _under(d: Directory, scope: Place | None, building_id: int) -> bool:
    if scope is None:
        return True
    b = d.place(building_id)
    return b is not None and (b.id == scope.id or any(a.id == scope.id
                                                       for a in d.ancestors(b)))


def _local(value: datetime | None, tz: ZoneInfo) -> datetime | None:
    return value.astimezone(tz).replace(tzinfo=None) if value is not None else None


async def write_roster(db: AsyncSession, out: IO[bytes], scope: str | None = None) -> int:
    """The active households of `scope` (every one when None) and their visits as xlsx;
    returns how many households."""
    from openpyxl import Workbook

    d = await directory(db)
    settings = await org_settings(db)
    tz = ZoneInfo(settings.timezone if settings else "Asia/Shanghai")
    all_kinds = kinds_from(settings.care_kinds if settings else None)
    place = None
    if scope is not None:
        place = d.by_code.get(scope)
        if place is None:
            raise RosterError([f"no place {scope!r} in the registry"])
    households = [h for h in (await db.scalars(
        select(CareHousehold).where(CareHousehold.active.is_(True))
        .order_by(CareHousehold.building_id, CareHousehold.unit, CareHousehold.door))).all()
        if _under(d, place, h.building_id)]
    ids = [h.id for h in households]
    counts: dict[int, int] = {}
    visits: list[CareVisit] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        counts.update({hid: int(n) for hid, n in (await db.execute(
            select(CareVisit.household_id, func.count()).where(CareVisit.household_id.in_(chunk))
            .group_by(CareVisit.household_id))).all()})
        visits += (await db.scalars(select(CareVisit).where(CareVisit.household_id.in_(chunk))
                                    .order_by(CareVisit.at, CareVisit.id))).all()
    people = {p.id: p.name for p in (await db.scalars(select(Person).where(
        Person.id.in_({v.person_id for v in visits})))).all()} if visits else {}
    by_id = {h.id: h for h in households}

    book = Workbook(write_only=True)
    sheet = book.create_sheet("走访名单")
    sheet.append([*WRITTEN.values(), *EXTRA])
    for h in households:
        b = d.place(h.building_id)
        kind = all_kinds.get(h.kind)
        sheet.append([b.code if b else h.building_id, h.unit, h.door, h.names,
                      kind.name_zh if kind else h.kind, h.interval, h.phone or "",
                      h.notes or "", _local(h.last_visit_at, tz), _local(h.next_due_at, tz),
                      counts.get(h.id, 0)])
    log = book.create_sheet("走访记录")
    log.append(list(VISIT_HEADERS))
    for v in visits:
        h = by_id[v.household_id]
        b = d.place(h.building_id)
        on_time = "" if v.due_at is None else ("是" if v.at <= v.due_at else "否")
        log.append([b.code if b else h.building_id, h.unit, h.door, h.names,
                    _local(v.at, tz), _local(v.due_at, tz), on_time,
                    people.get(v.person_id, str(v.person_id) if v.person_id else ""),
                    v.note, "是" if v.need_found else "", v.case_id or "", len(v.photos or [])])
    book.save(out)
    return len(households)
