"""The registry in memory between updates: places, roles, categories and departments.

Every update needs the place a chat stands for, the places above it, who holds which role
and the categories; read from the database each time they were most of an update's
statements. They change only when a registry is loaded, a chat is bound or a group migrates,
so each worker keeps them in memory, checked once per session against
`org_settings.registry_version`. Any change to `nodes`, `roles`, `categories`, `departments`
or `department_members` made through a session moves that number on in the same transaction
(the hooks below), so no writer can forget to, and another worker sees the change at its
next update.

What the directory hands out are frozen snapshots, never ORM rows: code that changes a place
(binding) loads the row itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain
from typing import Any

from sqlalchemy import Table, event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from storage.models import Category, Department, DepartmentMember, Node, OrgSettings, Role

_SESSION_KEY = "gridbot.directory"
# The org_settings row the check read, held so the session's identity map (which holds rows
# weakly) gives it to `bot.context.begin` without another statement.
_SETTINGS_KEY = "gridbot.org_settings"
# Set on a session whose open transaction changed the registry: until it ends, what it reads
# is its own, uncommitted view, which is neither kept for the session nor shared.
_CHANGED_KEY = "gridbot.registry_changed"
WATCHED: tuple[type[Any], ...] = (Node, Role, Category, Department, DepartmentMember)
WATCHED_TABLES = frozenset(cls.__tablename__ for cls in WATCHED)


class NodeKind(StrEnum):
    """The kinds of node in the tree (`nodes.kind`; stored, never renamed). The top three are
    also the levels a case is handled at (bot.org.roles.Level)."""

    STREET = "street"
    COMMUNITY = "community"
    GRID = "grid"
    BUILDING = "building"
    UNIT = "unit"


@dataclass(frozen=True, slots=True)
class Place:
    """A node of the tree as it was when the directory was read."""

    id: int
    kind: str
    code: str
    name: str
    parent_id: int | None
    chat_id: int | None
    active: bool
    position: int
    # A grid's boundary (bot/org/geo.py: a ring, or MultiPolygon coordinates, as tuples) and a
    # building's point, WGS-84; None where the registry gives none.
    boundary: Any = None
    lon: float | None = None
    lat: float | None = None


@dataclass(frozen=True, slots=True)
class CategoryInfo:
    code: str
    name_zh: str
    name_en: str
    sla_seconds: int
    urgent: bool
    active: bool
    position: int
    check_required: bool = False  # 核查 before the rating
    sla_unit: str = ""  # '' clock time, 'wh' working hours, 'wd' working days
    keywords: tuple[str, ...] = ()  # words that suggest it for a report's text (bot/org/hints.py)

    def name(self, locale: str) -> str:
        return self.name_zh if locale == "zh_CN" else self.name_en


@dataclass(frozen=True, slots=True)
class DepartmentInfo:
    """A department cases can be whistled to (吹哨报到), and the people who answer for it."""

    id: int
    code: str
    name: str
    chat_id: int | None
    active: bool
    position: int
    members: frozenset[int]


@dataclass(frozen=True)
class Directory:
    version: int | None
    places: dict[int, Place]
    by_chat: dict[int, Place]
    by_code: dict[str, Place]
    roles_of: dict[int, tuple[tuple[str, int], ...]]
    # Categories in the registry's order.
    categories: dict[str, CategoryInfo]
    # Active departments by code, in the registry's order: the 吹哨 picker and button.
    departments: dict[str, DepartmentInfo] = field(default_factory=dict)
    # Every department by id, inactive ones too: a whistle names one the registry may
    # since have dropped.
    departments_by_id: dict[int, DepartmentInfo] = field(default_factory=dict)

    def department(self, department_id: int) -> DepartmentInfo | None:
        return self.departments_by_id.get(department_id)

    def departments_of(self, person_id: int) -> list[DepartmentInfo]:
        """The active departments `person_id` answers for."""
        return [d for d in self.departments.values() if person_id in d.members]

    def place(self, node_id: int | None) -> Place | None:
        return self.places.get(node_id) if node_id is not None else None

    def ancestors(self, place: Place) -> list[Place]:
        """Places above `place`, nearest first."""
        chain_: list[Place] = []
        parent = self.place(place.parent_id)
        while parent is not None and len(chain_) < len(self.places):
            chain_.append(parent)
            parent = self.place(parent.parent_id)
        return chain_

    def active_categories(self) -> list[CategoryInfo]:
        return [c for c in self.categories.values() if c.active]

    def buildings(self) -> list[Place]:
        return sorted((p for p in self.places.values() if p.kind == NodeKind.BUILDING and p.active),
                      key=lambda p: (p.position, p.id))

    def works_in_grid(self, person_id: int, grid_id: int) -> bool:
        """A role at the grid, or at a building or unit in it."""
        for _role, node_id in self.roles_of.get(person_id, ()):
            place = self.place(node_id)
            for _ in range(3):  # the grid, a building in it, a unit in one of those
                if place is None:
                    break
                if place.id == grid_id:
                    return True
                place = self.place(place.parent_id)
        return False


# One directory per engine (a process has one; tests have many), the newest read.
_shared: weakref.WeakKeyDictionary[AsyncEngine, Directory] = weakref.WeakKeyDictionary()


async def directory(db: AsyncSession) -> Directory:
    """The registry as this session sees it: checked against the database's number once per
    session, read again only when that number moved."""
    known: Directory | None = db.info.get(_SESSION_KEY)
    if known is not None:
        return known
    settings = await db.get(OrgSettings, 1)
    db.info[_SETTINGS_KEY] = settings
    version = settings.registry_version if settings is not None else None
    changed = bool(db.info.get(_CHANGED_KEY))
    engine = db.bind if isinstance(db.bind, AsyncEngine) else None
    shared = _shared.get(engine) if engine is not None and not changed else None
    if shared is not None and shared.version == version and version is not None:
        db.info[_SESSION_KEY] = shared
        return shared
    loaded = await _load(db, version)
    if not changed:
        db.info[_SESSION_KEY] = loaded
        if engine is not None:
            _shared[engine] = loaded
    return loaded


async def org_settings(db: AsyncSession) -> OrgSettings | None:
    """The org_settings row (None before a registry is loaded), read with the check."""
    await directory(db)
    row: OrgSettings | None = db.info.get(_SETTINGS_KEY)
    return row


async def _load(db: AsyncSession, version: int | None) -> Directory:
    places: dict[int, Place] = {}
    by_chat: dict[int, Place] = {}
    by_code: dict[str, Place] = {}
    nodes = Node.__table__
    for row in (await db.execute(select(nodes).order_by(nodes.c.id))).mappings():
        place = Place(id=row["id"], kind=row["kind"], code=row["code"], name=row["name"],
                      parent_id=row["parent_id"], chat_id=row["chat_id"],
                      active=bool(row["active"]), position=row["position"],
                      boundary=_frozen(row["boundary"]), lon=row["lon"], lat=row["lat"])
        places[place.id] = place
        if place.active:
            by_code.setdefault(place.code, place)
            if place.chat_id is not None:
                by_chat.setdefault(place.chat_id, place)
    roles: dict[int, list[tuple[str, int]]] = {}
    query = select(Role.person_id, Role.role, Role.node_id).order_by(Role.id)
    for person_id, role, node_id in (await db.execute(query)).all():
        roles.setdefault(person_id, []).append((role, node_id))
    cats = Category.__table__
    categories = {
        row["code"]: CategoryInfo(code=row["code"], name_zh=row["name_zh"],
                                  name_en=row["name_en"], sla_seconds=row["sla_seconds"],
                                  urgent=bool(row["urgent"]), active=bool(row["active"]),
                                  position=row["position"],
                                  check_required=bool(row["check_required"]),
                                  sla_unit=row["sla_unit"],
                                  keywords=tuple(row["keywords"] or ()))
        for row in (await db.execute(select(cats).order_by(cats.c.position, cats.c.code)))
        .mappings()
    }
    # Departments and their people in one statement: a row per member (one with no member
    # for a department the registry left out, whose people were removed).
    members: dict[int, list[int]] = {}
    rows: dict[int, Any] = {}
    dq = (select(Department.id, Department.code, Department.name, Department.chat_id,
                 Department.active, Department.position, DepartmentMember.person_id)
          .outerjoin(DepartmentMember, DepartmentMember.department_id == Department.id)
          .order_by(Department.position, Department.id, DepartmentMember.id))
    for d_row in (await db.execute(dq)).all():
        rows.setdefault(d_row.id, d_row)
        if d_row.person_id is not None:
            members.setdefault(d_row.id, []).append(d_row.person_id)
    by_id = {
        d_id: DepartmentInfo(id=d_id, code=d.code, name=d.name, chat_id=d.chat_id,
                             active=bool(d.active), position=d.position,
                             members=frozenset(members.get(d_id, ())))
        for d_id, d in rows.items()
    }
    return Directory(version=version, places=places, by_chat=by_chat, by_code=by_code,
                     roles_of={k: tuple(v) for k, v in roles.items()}, categories=categories,
                     departments={d.code: d for d in by_id.values() if d.active},
                     departments_by_id=by_id)


def _frozen(value: Any) -> Any:
    """A boundary's lists as tuples: a Place is frozen and hashable."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def forget_shared() -> None:
    """Drop every worker-wide directory (tests that change the database behind the bot's
    back, as an operator's SQL would, call this)."""
    _shared.clear()


# --- the number moves with every change -------------------------------------------------------

def _changed(session: Session) -> None:
    session.info.pop(_SESSION_KEY, None)
    if session.info.get(_CHANGED_KEY):
        return
    session.info[_CHANGED_KEY] = True
    table = OrgSettings.__table__
    assert isinstance(table, Table)
    session.connection().execute(
        update(table).where(table.c.id == 1)
        .values(registry_version=table.c.registry_version + 1))


def _watched(objects: Iterable[object]) -> bool:
    return any(isinstance(o, WATCHED) for o in objects)


@event.listens_for(Session, "before_flush")
def _on_flush(session: Session, _context: Any, _instances: Any) -> None:
    if _watched(chain(session.new, session.deleted)) or any(
            isinstance(o, WATCHED) and session.is_modified(o) for o in session.dirty):
        _changed(session)


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in WATCHED_TABLES:
        _changed(state.session)


def _end(session: Session, *_: Any) -> None:
    if session.info.pop(_CHANGED_KEY, None):
        session.info.pop(_SESSION_KEY, None)


event.listen(Session, "after_commit", _end)
event.listen(Session, "after_soft_rollback", _end)

