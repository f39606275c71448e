"""核查: the building head checks the result on site before the reporter rates it; a failed
check is 返工.

Wanted per category (`check: true` in the registry) or for every one (`policy.check`). After
the handler resolves, the case waits in `checking` while the building heads get a check card
with the result and the after-photos; the reporter and the building's group hear nothing yet.
通过 sends the case on to the rating; 不通过 sends it back to the grid in a new round (返工,
the same as 不满意). Nobody checks within `policy.check_within`: on to the rating, marked
unchecked, and the grid told. A building without a head is not checked (`skipped`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.events import EventKind
from bot.cases.lifecycle import Intent
from bot.errors import DomainError
from bot.org.directory import directory
from bot.org.roles import Level, RoleName, handlers_at, holders
from bot.user_text import REASON_LIMIT, clean_text
from storage.models import CasePhoto

if TYPE_CHECKING:
    from bot.cases.deadlines import Step
    from bot.context import Tx
    from bot.org.roles import Actor, Lineage
    from storage.models import Case, Person

# Whether check cards offer 通过 / 不通过, and whether a resolved case may wait for a check.
ENABLED = True
# Photos a failed check may carry, as a result may.
MAX_PHOTOS = 10


async def needs_check(tx: Tx, case: Case, lin: Lineage) -> list[Person]:
    """The building heads who check the case before its rating; [] for no check.

    A check wanted on a building without a head is marked `skipped` on the case: the case
    goes to the rating as before, and the record says why it was not checked.
    """
    if not ENABLED:
        return []
    cat = (await directory(tx.db)).categories.get(case.category)
    if not (tx.policy.check_all or (cat is not None and cat.check_required)):
        return []
    heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
    if not heads:
        case.checked = "skipped"
    return heads


async def start(tx: Tx, case: Case, lin: Lineage, heads: list[Person],
                photos: list[str]) -> None:
    """The check card to each head; `resolve` calls it after the `resolve_check` transition.

    The card carries the after-photos (the report's when the handler sent none), so the head
    compares what was done with what is there.
    """
    case.checked = "pending"
    shown = photos[:MAX_PHOTOS] or await notify.photos_of(tx, case)
    view = await notify.case_view(tx, case, lin, shown)
    text = tx.texts.render("case_card", case=view, kind="check", note=None)
    buttons = notify.check_buttons(tx, case)
    for head in heads:
        await notify.send_to_person(
            tx, f"case:{case.id}:r{case.round}:check:{head.id}", head.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, photos=shown, buttons=buttons,
        )


async def pass_(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """通过: the reporter is asked to rate, and the rating window starts now."""
    case, lin = await cases.act(tx, actor, case_id, rev, EventKind.CHECK_PASS)
    cases.transition(tx, case, EventKind.CHECK_PASS, actor.id)
    case.checked = "passed"
    case.checked_at = tx.now
    await cases.to_rating(tx, case, lin, await notify.photos_of(tx, case, "result"))
    await cases.save(tx, case)
    return case


async def fail(tx: Tx, actor: Actor, case_id: int, rev: int, reason: str,
               photos: list[str]) -> Case:
    """不通过: 返工 with the head's reason (and photos), in a new round with a new clock."""
    reason = clean_text(reason, REASON_LIMIT)
    if not reason:
        raise DomainError("reason_needed")
    case, lin = await cases.act(tx, actor, case_id, rev, Intent.CHECK_FAIL)
    if case.status != cases.S.CHECKING:
        raise DomainError("stale", case_id=case.id)
    photos = photos[:MAX_PHOTOS]
    for file_id in photos:
        tx.db.add(CasePhoto(case_id=case.id, file_id=file_id, kind="check"))
    await cases.rework(tx, case, lin, actor.id, reason, kind="check_failed")
    if photos:
        # The rework card shows the report's photos; what the head saw follows it.
        text = tx.texts.label("check_photos", case_id=case.id)
        for person in await handlers_at(tx.db, lin, Level.GRID):
            await notify.send_to_person(
                tx, f"case:{case.id}:r{case.round}:check_photos:{person.id}", person.id,
                str(text), case=case, fallback_chat_id=lin.grid.chat_id, photos=photos,
            )
    await cases.save(tx, case)
    return case


async def timeout(tx: Tx, case: Case, lin: Lineage, step: Step, key: str) -> str:
    """The CHECK_TIMEOUT step: on to the rating, unchecked, and the grid is told."""
    cases.transition(tx, case, EventKind.CHECK_TIMEOUT, None)
    case.checked = "unchecked"
    case.checked_at = tx.now
    await cases.to_rating(tx, case, lin, await notify.photos_of(tx, case, "result"))
    await notify.tell_staff(tx, key, await handlers_at(tx.db, lin, Level.GRID), case, lin,
                            "check_timeout", deferrable=True)
    return step.name.value
