"""Who is who: people's roles in the tree, the scope they give, and who handles each level."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.org.directory import Place, directory
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

    building: Place
    grid: Place
    community: Place
    street: Place
    unit: Place | None = None

    def node_for(self, level: str) -> Place:
        return {Level.GRID: self.grid, Level.COMMUNITY: self.community,
                Level.STREET: self.street}[Level(level)]

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

    def may_bind(self, node: Node | Place, ancestors: list[Place]) -> bool:
        held = self.node_ids(*BINDING_ROLES)
        return any(n.id in held for n in [node, *ancestors])


async def load_actor(db: AsyncSession, user_id: int, fallback_name: str = "") -> Actor:
    person = await db.get(Person, user_id)
    roles = (await directory(db)).roles_of.get(user_id, ())
    return Actor(
        id=user_id,
        name=person.name if person else fallback_name,
        roles=[(RoleName(r), n) for r, n in roles],
    )


async def ancestors(db: AsyncSession, node: Node | Place) -> list[Place]:
    """Places above `node`, nearest first."""
    d = await directory(db)
    start = d.place(node.id)
    return d.ancestors(start) if start is not None else []


async def place_by_id(db: AsyncSession, node_id: int | None) -> Place | None:
    return (await directory(db)).place(node_id)


async def lineage_of(db: AsyncSession, building_id: int, unit_id: int | None = None) -> Lineage:
    d = await directory(db)
    building = d.place(building_id)
    if building is None:
        raise LookupError(f"building {building_id} is not in the registry")
    grid, community, street = d.ancestors(building)[:3]
    return Lineage(building=building, grid=grid, community=community, street=street,
                   unit=d.place(unit_id))


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
    return (await directory(db)).works_in_grid(person_id, grid_id)


async def node_by_chat(db: AsyncSession, chat_id: int) -> Place | None:
    """The active place a chat is bound to."""
    return (await directory(db)).by_chat.get(chat_id)


async def node_by_code(db: AsyncSession, code: str) -> Node | None:
    """The active node with this code, as a row to change (binding)."""
    return await db.scalar(select(Node).where(Node.code == code, Node.active.is_(True)))


async def holds_level(db: AsyncSession, actor: Actor, lineage: Lineage, level: str) -> bool:
    """Whether `actor` holds the case at `level` itself, not from above: the grid's leader (a
    grid member while the grid has no leader), or that level's supervisors. Who asks for an
    extension or a suspension; those above answer it."""
    node = lineage.node_for(level)
    if Level(level) == Level.GRID:
        if actor.has(RoleName.GRID_LEADER, node.id):
            return True
        if not actor.has(RoleName.GRID_MEMBER, node.id):
            return False
        return not await holders(db, RoleName.GRID_LEADER, node.id)
    return any(actor.has(role, node.id) for role in HANDLER_ROLES[Level(level)])


async def approvers(db: AsyncSession, lineage: Lineage, level: str,
                    requester_id: int | None = None) -> tuple[Level, list[Person]] | None:
    """The nearest level above `level` with someone to handle it, and who: those who answer
    a request made at `level`. None: nobody above, so nothing can be asked.

    Whoever asks never approves: `requester_id` is left out, so a 社区书记兼网格长's request
    goes to the community's other supervisors, or to the street when they are its only one."""
    above = level_above(level)
    while above is not None:
        people = [p for p in await handlers_at(db, lineage, above) if p.id != requester_id]
        if people:
            return above, people
        above = level_above(above)
    return None
