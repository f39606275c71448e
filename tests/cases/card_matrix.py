"""Every status × level × role a case card can be drawn for, and the actions each person may
use on it: what tests/cases/test_card_more.py compares the 更多 split against.

`card_actions_today.json` beside this file holds the actions each person was offered before
cards were split into primary actions and 更多 (issue 21): the union of both pages must stay
exactly that. A change that adds or removes an action on purpose updates the file with
`python3 -m tests.cases.card_matrix` (it prints the matrix as the code draws it now, both
pages together) and says so in its commit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bot.cases import lifecycle as cases
from bot.cases.buttons import CaseButton
from bot.cases.intake import ensure_person
from bot.cases.status import CaseStatus
from bot.context import Tx, begin
from bot.org.roles import Actor, Level, Lineage, lineage_of, load_actor, node_by_code
from storage.models import Case
from tests.harness import (
    COMMUNITY_SUP,
    HEAD,
    LEADER,
    MEMBER,
    POLICE,
    RESIDENT,
    STRANGER,
    STREET_SUP,
    UNIT_CHAT,
    UNIT_HEAD,
    Harness,
    make_harness,
)

TODAY = Path(__file__).with_name("card_actions_today.json")

PEOPLE: dict[str, int] = {
    "resident": RESIDENT, "unit_head": UNIT_HEAD, "building_head": HEAD,
    "grid_member": MEMBER, "grid_leader": LEADER, "community": COMMUNITY_SUP,
    "street": STREET_SUP, "department": POLICE, "stranger": STRANGER,
}


@dataclass(frozen=True)
class Scenario:
    status: CaseStatus
    level: Level
    located: bool = True
    overdue: bool = False  # the deadline has passed (no 申请延期)
    asking: bool = False  # a request to the level above is pending (no 延期, no 挂账)
    acked: bool = False  # the building head has acknowledged the task

    @property
    def name(self) -> str:
        flags = [f for f in ("overdue", "asking", "acked") if getattr(self, f)]
        return "/".join([self.status.value, self.level.value,
                         "located" if self.located else "no-location", *flags])


def scenarios() -> list[Scenario]:
    found: list[Scenario] = []
    for status in (CaseStatus.VERIFYING, CaseStatus.OPEN, CaseStatus.ACCEPTED,
                   CaseStatus.ASSIGNED, CaseStatus.CHECKING, CaseStatus.SUSPENDED,
                   CaseStatus.RESOLVED):
        levels = [Level.GRID] if status == CaseStatus.VERIFYING else list(Level)
        for level in levels:
            for located in (True, False):
                found.append(Scenario(status, level, located))
            if status == CaseStatus.ACCEPTED:
                found += [Scenario(status, level, overdue=True),
                          Scenario(status, level, asking=True)]
            if status == CaseStatus.ASSIGNED:
                found.append(Scenario(status, level, acked=True))
    return found


def actions(buttons: list[list[dict[str, object]]]) -> list[str]:
    """The case actions on a keyboard, as `action` or `action:arg` (a rating)."""
    found = []
    for row in buttons:
        for b in row:
            btn = CaseButton.unpack(str(b.get("callback_data", "")))
            assert btn is not None, b
            found.append(f"{btn.action.name}:{btn.arg}" if btn.arg else btn.action.name)
    return found


Draw = Callable[[Tx, Actor, Case, Lineage], Awaitable[list[str]]]


async def walk(h: Harness, draw: Draw) -> AsyncIterator[tuple[str, str, list[str]]]:
    """(scenario, person, what `draw` gives them) for the whole matrix, on one case in
    BSY-01-03 unit 1 put in each scenario in turn (never committed)."""
    async with h.app.sessions() as db:
        tx = await begin(db, h.app.ctx)
        b03, u1 = await node_by_code(db, "BSY-01-03"), await node_by_code(db, "BSY-01-03/1")
        assert b03 is not None and u1 is not None
        await ensure_person(db, RESIDENT, "居民甲", tx.now)
        case = await cases.report(tx, cases.ReportInput(
            building_id=b03.id, unit_id=u1.id, reporter_id=RESIDENT, description="单元门禁坏了",
            source_chat_id=UNIT_CHAT, source_message_id=11, latitude=32.05,
            longitude=118.78))
        lat, lon, deadline = case.latitude, case.longitude, case.deadline_at
        lin = await lineage_of(db, case.building_id, case.unit_id)
        actors = {name: await load_actor(db, pid) for name, pid in PEOPLE.items()}
        for sc in scenarios():
            case.status, case.level = sc.status, sc.level
            case.latitude, case.longitude = (lat, lon) if sc.located else (None, None)
            case.deadline_at = deadline - timedelta(days=30) if sc.overdue else deadline
            case.request_at = tx.now if sc.asking else None
            case.assignee_id = HEAD if sc.status == CaseStatus.ASSIGNED else None
            case.assignee_ack_at = tx.now if sc.acked else None
            case.resolved_by_id = (MEMBER if sc.status in (CaseStatus.CHECKING,
                                                           CaseStatus.RESOLVED) else None)
            case.checked = "pending" if sc.status == CaseStatus.CHECKING else None
            case.review_at = (tx.now + timedelta(days=30)
                              if sc.status == CaseStatus.SUSPENDED else None)
            for name, actor in actors.items():
                yield sc.name, name, await draw(tx, actor, case, lin)
        await db.rollback()


async def matrix(h: Harness, draw: Draw) -> dict[str, list[str]]:
    """`scenario person` → sorted actions, for every cell where the person has any."""
    found = {}
    async for sc, person, got in walk(h, draw):
        if got:
            found[f"{sc} {person}"] = sorted(got)
    return found


def today() -> dict[str, list[str]]:
    data: dict[str, list[str]] = json.loads(TODAY.read_text("utf-8"))
    return data


async def _print() -> None:
    from bot.cases import notify
    from bot.cases.buttons import Action

    async def both_pages(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> list[str]:
        shown = await notify.buttons_for(tx, actor, case, lin)
        rest = await notify.buttons_for(tx, actor, case, lin, more=True)
        skip = {Action.MORE.name, Action.BACK.name}
        return sorted({a for a in actions(shown) + actions(rest) if a not in skip})

    with tempfile.TemporaryDirectory() as folder:
        h = await make_harness(Path(folder))
        try:
            found = await matrix(h, both_pages)
        finally:
            await h.app.close()
    sys.stdout.write(dump(found))


def dump(found: dict[str, list[str]]) -> str:
    """The matrix as card_actions_today.json holds it: one cell a line."""
    lines = [f"  {json.dumps(k, ensure_ascii=False)}: {json.dumps(v)}"
             for k, v in sorted(found.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


if __name__ == "__main__":
    asyncio.run(_print())
