"""Residents who follow a case that is not their own report.

A resident who says 是同一问题 to a duplicate offer, or whose case is merged into another,
follows that case: every notice its reporter gets (rejected, resolved with the rating
buttons, suspended, resumed) goes to them too, and they may rate it. `cases.followers` keeps
their count, so a card shows the residents affected without a query.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Tx
from storage.models import Case, CaseFollower


async def follow(tx: Tx, case: Case, person_id: int, *, chat_id: int | None,
                 message_id: int | None, via: str) -> bool:
    """`person_id` follows `case` from now on; False when they reported it or follow it
    already (nothing changes). `chat_id`/`message_id`: their own report's message, which a
    notice replies to when a private message cannot reach them."""
    if person_id == case.reporter_id or await follows(tx.db, case, person_id):
        return False
    tx.db.add(CaseFollower(case_id=case.id, person_id=person_id, source_chat_id=chat_id,
                           source_message_id=message_id, via=via, joined_at=tx.now))
    case.followers += 1
    await tx.db.flush()
    return True


async def follows(db: AsyncSession, case: Case, person_id: int) -> bool:
    if not case.followers:
        return False
    found = await db.scalar(select(CaseFollower.id).where(
        CaseFollower.case_id == case.id, CaseFollower.person_id == person_id))
    return found is not None


async def of_case(db: AsyncSession, case: Case) -> list[CaseFollower]:
    """The case's followers in the order they joined (no query for a case without any)."""
    if not case.followers:
        return []
    rows = await db.scalars(select(CaseFollower).where(CaseFollower.case_id == case.id)
                            .order_by(CaseFollower.id))
    return list(rows.all())


def affected(case: Case) -> int:
    """Residents affected: the reporter and everyone who follows the case."""
    return 1 + case.followers
