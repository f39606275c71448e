"""`/bind`: which group chat is the work chat of a grid or the residents' chat of a building
or unit.

A binding decides who reads what: staff cards with reporters' names go to a grid's work chat,
acknowledgements and resolution notices to a residents' chat. So a chat that is bound stays
bound, and a place bound to a chat stays there, unless the person asking holds a binding role
over both the old and the new place and confirms with a button that names both. Nothing
changes until that button is pressed, by that person, in that chat, while both bindings are
still what the question named.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import DomainError
from bot.org.directory import NodeKind
from bot.org.roles import Actor, ancestors, node_by_code
from bot.texts import Texts
from bot.user_text import CODE_LIMIT, clean_text
from storage.models import BindRequest, Node

BINDABLE = (NodeKind.GRID, NodeKind.BUILDING, NodeKind.UNIT)
# A confirmation left unanswered this long is stale: the bindings it named may have moved on.
CONFIRM_WITHIN = timedelta(minutes=10)


class Tx(Protocol):
    """What binding needs of a domain operation (bot.context.Tx has it): the organisation
    sits below the context, so it names only these."""

    db: AsyncSession
    texts: Texts
    now: datetime


def describe(texts: Texts, node: Node) -> str:
    """A bound place as people read it: its kind of chat and its name."""
    return texts.plain("kind_place", kind=texts.plain(f"kind_{node.kind}"), place=node.name)


def audience(node: Node) -> str:
    """Who reads a chat bound to `node`: grid staff, or residents."""
    return "work" if node.kind == NodeKind.GRID else "residents"


@dataclass(frozen=True)
class Bound:
    """The chat is now bound to `node`, or already was (`unchanged`)."""

    node: Node
    unchanged: bool = False


@dataclass(frozen=True)
class Ask:
    """Binding would take the chat from `old_node`, or `node` from another chat: confirm."""

    request_id: int
    node: Node
    old_node: Node | None
    node_had_chat: bool

    @property
    def audience_changes(self) -> bool:
        return self.old_node is not None and audience(self.old_node) != audience(self.node)


async def _may_bind(tx: Tx, actor: Actor, node: Node) -> bool:
    return actor.may_bind(node, await ancestors(tx.db, node))


async def _bound_to(tx: Tx, chat_id: int) -> Node | None:
    """The active place the chat is bound to (inactive places lose their chat on a bind)."""
    return await tx.db.scalar(select(Node).where(Node.chat_id == chat_id,
                                                 Node.active.is_(True)))


async def request_bind(tx: Tx, actor: Actor, chat_id: int, code: str) -> Bound | Ask:
    """Bind the chat at once if that takes nothing from anyone; else ask to confirm."""
    node = await node_by_code(tx.db, code.strip())
    if node is None or node.kind not in BINDABLE:
        raise DomainError("bad_code", code=clean_text(code, CODE_LIMIT))
    if not await _may_bind(tx, actor, node):
        raise DomainError("not_allowed")
    current = await _bound_to(tx, chat_id)
    if current is not None and current.id == node.id:
        return Bound(node, unchanged=True)
    if current is not None and not await _may_bind(tx, actor, current):
        # A leader of another grid may not take a residents' group (or a work chat) away.
        raise DomainError("bind_taken", place=describe(tx.texts, current), code=current.code)
    if current is None and node.chat_id is None:
        await _apply(tx, chat_id, node)
        await tx.db.commit()
        return Bound(node)
    await tx.db.execute(delete(BindRequest).where(
        BindRequest.created_at < tx.now - CONFIRM_WITHIN))
    # A newer question in the same chat by the same person replaces the older one.
    await tx.db.execute(delete(BindRequest).where(BindRequest.chat_id == chat_id,
                                                  BindRequest.person_id == actor.id))
    request = BindRequest(chat_id=chat_id, person_id=actor.id, node_id=node.id,
                          old_node_id=current.id if current else None,
                          old_chat_id=node.chat_id, created_at=tx.now)
    tx.db.add(request)
    await tx.db.commit()
    return Ask(request.id, node, current, node_had_chat=node.chat_id is not None)


async def answer_bind(tx: Tx, actor: Actor, chat_id: int, request_id: int,
                      confirm: bool) -> Bound | None:
    """The button under a bind question: bind (returns the place) or cancel (None).

    Whatever is stale (answered, too old, pressed in another chat, bindings changed since)
    or pressed by someone else changes nothing and says so.
    """
    request = await tx.db.get(BindRequest, request_id)
    if (request is None or request.chat_id != chat_id
            or request.created_at < tx.now - CONFIRM_WITHIN):
        raise DomainError("bind_stale")
    if request.person_id != actor.id:
        raise DomainError("not_allowed")
    if not confirm:
        await _forget(tx, request_id)
        await tx.db.commit()
        return None
    node = await tx.db.get(Node, request.node_id)
    current = await _bound_to(tx, chat_id)
    if (node is None or not node.active or node.chat_id != request.old_chat_id
            or (current.id if current else None) != request.old_node_id):
        raise DomainError("bind_stale")
    # Roles are read now: someone who lost a role since the question cannot confirm it.
    if not await _may_bind(tx, actor, node) or (
            current is not None and not await _may_bind(tx, actor, current)):
        raise DomainError("not_allowed")
    await _apply(tx, chat_id, node)
    await _forget(tx, request_id)
    await tx.db.commit()
    return Bound(node)


async def _forget(tx: Tx, request_id: int) -> None:
    # A statement, not session.delete: two presses at once must not fail on a missing row.
    await tx.db.execute(delete(BindRequest).where(BindRequest.id == request_id))


async def _apply(tx: Tx, chat_id: int, node: Node) -> None:
    await tx.db.execute(update(Node).where(Node.chat_id == chat_id, Node.id != node.id)
                        .values(chat_id=None))
    node.chat_id = chat_id
