"""Who is who: people's roles in the tree, the scope they give, and who handles each level."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.models import Node, Person, Role


class RoleName(StrEnum):
    STREET_SUPERVISOR = "street_supervisor"
    COMMUNITY_SUPERVISOR = "community_supervisor"
    GRID_LEADER = "grid_leader"
    GRID_MEMBER = "grid_member"
    BUILDING_HEAD = "building_head"
    UNIT_HEAD = "unit_head"


class Level(StrEnum):
    GRID = "grid"
    COMMUNITY = "community"
    STREET = "street"


LEVELS: tuple[Level, ...] = (Level.GRID, Level.COMMUNITY, Level.STREET)
# Roles that handle cases at each level, first the one the card goes to.
HANDLER_ROLES: dict[Level, tuple[RoleName, ...]] = {
    Level.GRID: (RoleName.GRID_LEADER, RoleName.GRID_MEMBER),
    Level.COMMUNITY: (RoleName.COMMUNITY_SUPERVISOR,),
    Level.STREET: (RoleName.STREET_SUPERVISOR,),
}
BINDING_ROLES = (RoleName.GRID_LEADER, RoleName.COMMUNITY_SUPERVISOR, RoleName.STREET_SUPERVISOR)


def level_above(level: str) -> Level | None:
    i = LEVELS.index(Level(level))
    return LEVELS[i + 1] if i + 1 < len(LEVELS) else None


def level_below(level: str) -> Level | None:
    i = LEVELS.index(Level(level))
    return LEVELS[i - 1] if i > 0 else None


@dataclass(frozen=True)
class Lineage:
    """A building (and maybe unit) with every node above it."""

    building: Node
    grid: Node
    community: Node
    street: Node
    unit: Node | None = None

    def node_for(self, level: str) -> Node:
        return {"grid": self.grid, "community": self.community, "street": self.street}[level]

    @property
    def ids(self) -> set[int]:
        ids = {self.building.id, self.grid.id, self.community.id, self.street.id}
        if self.unit is not None:
            ids.add(self.unit.id)
        return ids

    @property
    def place(self) -> str:
        """How staff name the place: community, building and unit."""
        parts = [self.community.name, self.building.name]
        if self.unit is not None:
            parts.append(self.unit.name)
        return " ".join(parts)


@dataclass
class Actor:
    """The person behind an update, with the roles the registry gives them now."""

    id: int
    name: str
    roles: list[tuple[RoleName, int]] = field(default_factory=list)

    @property
    def is_staff(self) -> bool:
        return any(r != RoleName.UNIT_HEAD for r, _ in self.roles)

    def has(self, role: RoleName, node_id: int) -> bool:
        return (role, node_id) in self.roles

    def node_ids(self, *roles: RoleName) -> set[int]:
        return {n for r, n in self.roles if not roles or r in roles}

    def handles(self, lineage: Lineage, level: str) -> bool:
        """May act on a case at `level`: a handler at that level or any level above it."""
        for lvl in LEVELS[LEVELS.index(Level(level)):]:
            node = lineage.node_for(lvl)
            if any(self.has(role, node.id) for role in HANDLER_ROLES[lvl]):
                return True
        return False

    def sees(self, lineage: Lineage) -> bool:
        """Staff see the cases under the nodes they hold a role at (a unit head: their unit)."""
        return bool(self.node_ids() & lineage.ids)

    def may_bind(self, node: Node, ancestors: list[Node]) -> bool:
        held = self.node_ids(*BINDING_ROLES)
        return any(n.id in held for n in [node, *ancestors])


async def load_actor(db: AsyncSession, user_id: int, fallback_name: str = "") -> Actor:
    person = await db.get(Person, user_id)
    query = select(Role.role, Role.node_id).where(Role.person_id == user_id)
    rows = (await db.execute(query)).all()
    return Actor(
        id=user_id,
        name=person.name if person else fallback_name,
        roles=[(RoleName(r), n) for r, n in rows],
    )


async def ancestors(db: AsyncSession, node: Node) -> list[Node]:
    """Nodes above `node`, nearest first."""
    chain: list[Node] = []
    parent_id = node.parent_id
    while parent_id is not None:
        parent = await db.get(Node, parent_id)
        if parent is None:
            break
        chain.append(parent)
        parent_id = parent.parent_id
    return chain


async def lineage_of(db: AsyncSession, building_id: int, unit_id: int | None = None) -> Lineage:
    building = await db.get(Node, building_id)
    if building is None:
        raise LookupError(f"building {building_id} is not in the registry")
    grid, community, street = (await ancestors(db, building))[:3]
    unit = await db.get(Node, unit_id) if unit_id is not None else None
    return Lineage(building=building, grid=grid, community=community, street=street, unit=unit)


async def holders(db: AsyncSession, role: RoleName, node_id: int) -> list[Person]:
    rows = await db.scalars(
        select(Person)
        .join(Role, Role.person_id == Person.id)
        .where(Role.role == role.value, Role.node_id == node_id)
        .order_by(Person.id)
    )
    return list(rows.all())


async def handlers_at(db: AsyncSession, lineage: Lineage, level: str) -> list[Person]:
    """Who gets the card at `level`: its first role's holders, else the next role's."""
    node = lineage.node_for(level)
    for role in HANDLER_ROLES[Level(level)]:
        people = await holders(db, role, node.id)
        if people:
            return people
    return []


async def works_in_grid(db: AsyncSession, person_id: int, grid_id: int) -> bool:
    """Whether the person holds a role at the grid or at a building or unit in it: the people
    a grid's work chat is for. Supervisors above the grid are not among them."""
    parent = aliased(Node)
    found = await db.scalar(
        select(Role.id)
        .join(Node, Node.id == Role.node_id)
        .outerjoin(parent, parent.id == Node.parent_id)
        .where(Role.person_id == person_id,
               or_(Node.id == grid_id, Node.parent_id == grid_id, parent.parent_id == grid_id))
        .limit(1)
    )
    return found is not None


async def node_by_chat(db: AsyncSession, chat_id: int) -> Node | None:
    return await db.scalar(select(Node).where(Node.chat_id == chat_id, Node.active.is_(True)))


async def node_by_code(db: AsyncSession, code: str) -> Node | None:
    return await db.scalar(select(Node).where(Node.code == code, Node.active.is_(True)))
