"""Turning what a person sent into a report: which place a chat stands for, who reports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Tx
from bot.org.directory import CategoryInfo, NodeKind, Place, directory
from bot.org.roles import load_actor
from bot.user_text import clean_name
from storage.models import Person


async def place_of_chat(db: AsyncSession, chat_id: int) -> tuple[Place, Place | None] | None:
    """The building (and unit) a residents' chat is bound to, or None."""
    d = await directory(db)
    node = d.by_chat.get(chat_id)
    if node is None:
        return None
    if node.kind == NodeKind.BUILDING:
        return node, None
    if node.kind == NodeKind.UNIT:
        building = d.place(node.parent_id)
        if building is not None:
            return building, node
    return None


async def ensure_person(db: AsyncSession, user_id: int, name: str, now: datetime) -> Person:
    """The person row for a Telegram user; registry names win over Telegram display names.

    A display name is kept cleaned (no direction overrides or control characters) and short
    enough for every card; one with nothing visible left is replaced by the user id.
    """
    person = await db.get(Person, user_id)
    if person is None:
        person = Person(id=user_id, name=clean_name(name) or str(user_id), created_at=now)
        db.add(person)
        await db.flush()
    return person


async def reporter_for(
    db: AsyncSession, tx: Tx, user_id: int, user_name: str, behalf_id: int | None,
    behalf_name: str | None, building_id: int, unit_id: int | None,
) -> tuple[int, int]:
    """(reporter, submitted by): staff who report someone's message report on their behalf."""
    sender = await ensure_person(db, user_id, user_name, tx.now)
    actor = await load_actor(db, user_id)
    if behalf_id is not None and behalf_id != user_id and actor.roles:
        resident = await ensure_person(db, behalf_id, behalf_name or "", tx.now)
        _link(resident, building_id, unit_id)
        return resident.id, sender.id
    _link(sender, building_id, unit_id)
    return sender.id, sender.id


def _link(person: Person, building_id: int, unit_id: int | None) -> None:
    if person.building_id is None:
        person.building_id = building_id
        person.unit_id = unit_id


async def active_categories(db: AsyncSession) -> list[CategoryInfo]:
    return (await directory(db)).active_categories()


async def buildings_page(db: AsyncSession, page: int, size: int) -> tuple[list[Place], int]:
    """One page of buildings to choose from (with their community's name), and the page count."""
    rows = (await directory(db)).buildings()
    pages = max(1, -(-len(rows) // size))
    page = min(max(page, 0), pages - 1)
    return rows[page * size:(page + 1) * size], pages


async def building_label(db: AsyncSession, building: Place) -> str:
    above = (await directory(db)).ancestors(building)
    return f"{above[1].name} {building.name}" if len(above) > 1 else building.name


async def link_building(db: AsyncSession, person: Person, building_id: int) -> Place | None:
    building = (await directory(db)).place(building_id)
    if building is None or building.kind != NodeKind.BUILDING or not building.active:
        return None
    if person.building_id != building.id:
        person.building_id = building.id
        person.unit_id = None
    return building
