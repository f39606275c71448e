"""📍 on a staff card: the case's place as a Telegram venue, privately to who asked.

A location is never posted to a group: the venue goes to the person's private chat through
the outbox (held, like any private message, until they have started the bot).
"""

from __future__ import annotations

from bot.cases import notify
from bot.cases.outbox import enqueue
from bot.context import Tx
from bot.errors import DomainError
from bot.org import geo
from bot.org.roles import Actor, lineage_of
from storage.models import Case


async def send_location(tx: Tx, actor: Actor, case_id: int, key: str) -> None:
    """Queue the venue of `case_id` for `actor`; `key` tells one press from another (the
    callback's id), so each press is answered once, however often its update arrives."""
    case = await tx.db.get(Case, case_id)
    if case is None:
        raise DomainError("no_case", case_id=case_id)
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    if not notify.may_locate(actor, lin):
        raise DomainError("location_not_yours")
    if case.latitude is None or case.longitude is None:
        raise DomainError("location_none")
    venue = geo.Venue(case.latitude, case.longitude,
                      tx.texts.plain("venue_title", case_id=case.id), lin.place)
    await enqueue(tx.db, f"case:{case.id}:venue:{key}", actor.id, "", tx.now,
                  person_id=actor.id, case_id=case.id, venue=venue)
