"""核查: the building head checks the result on site before the reporter rates it; a failed
check is 返工.

Wanted per category (`check: true` in the registry) or for every one (`policy.check`). After
the handler resolves, the case waits in `checking` while the building heads get a check card
with the result and the after-photos; the reporter and the building's group hear nothing yet.
通过 sends the case on to the rating; 不通过 sends it back to the grid in a new round (返工,
the same as 不满意). Nobody checks within `policy.check_within`: on to the rating, marked
unchecked, and the grid told (a timeout in the quiet hours waits for the morning, so the
reporter is not asked at night). A building without a head is not checked (`skipped`).

Whoever resolved never checks, and no check waits on nobody. Who may check is derived from the
registry as it is now (`checkers`): the building's heads other than the resolver; where the
resolver is the only head, one level up, the grid leader (unless they resolved it); where
there is nobody, the case goes on to the rating at once (`check_skip`, marked `nobody`) and
the grid is told why. A registry load that takes the head away while a case waits for its
check (`follow_registry`, run by the sweep) gives the check to whoever may check now, or sends
the case on to the rating with a note in its history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.events import EventKind
from bot.cases.status import CaseStatus
from bot.errors import DomainError
from bot.org.directory import directory
from bot.org.roles import Level, RoleName, handlers_at, holders, lineage_of
from bot.user_text import REASON_LIMIT, clean_text
from storage.models import Case, CasePhoto

if TYPE_CHECKING:
    from bot.cases.deadlines import Step
    from bot.context import Tx
    from bot.org.roles import Actor, Lineage
    from storage.models import Person

# Whether check cards offer 通过 / 不通过, and whether a resolved case may wait for a check.
ENABLED = True
# Photos a failed check may carry, as a result may.
MAX_PHOTOS = 10


# The registry version whose checks the sweep has followed, kept in `Ctx.extra`.
_FOLLOWED = "checks.registry_version"


@dataclass(frozen=True)
class Checkers:
    """Who may check a case now: `instead` when the check went one level up because the
    building's head resolved it; `people` empty: nobody may, and `reason` says why (a label:
    `check_skip_no_head` or `check_skip_own`)."""

    people: list[Person]
    instead: bool = False
    reason: str = ""


async def checkers(tx: Tx, case: Case, lin: Lineage) -> Checkers:
    """Who may check the case's result now, from the registry as it is: the building's
    heads other than the one who resolved it; if the resolver is its only head, the grid
    leader (if not the resolver too); else nobody."""
    heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
    if not heads:
        return Checkers([], reason="check_skip_no_head")
    resolver = case.resolved_by_id
    others = [p for p in heads if p.id != resolver]
    if others:
        return Checkers(others)
    leaders = [p for p in await holders(tx.db, RoleName.GRID_LEADER, lin.grid.id)
               if p.id != resolver]
    if leaders:
        return Checkers(leaders, instead=True)
    return Checkers([], reason="check_skip_own")


async def needs_check(tx: Tx, case: Case, lin: Lineage) -> list[Person]:
    """The building heads of a case that is checked before its rating; [] for no check.

    A check wanted on a building without a head is marked `skipped` on the case: the case
    goes to the rating as before, and the record says why it was not checked. Who checks is
    decided in `start`, once the resolver is known.
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
    """The check card to whoever may check; `resolve` calls it after the `resolve_check`
    transition, when the resolver is known. Nobody may: on to the rating at once.

    The card carries the after-photos (the report's when the handler sent none), so the
    checker compares what was done with what is there.
    """
    case.checked = "pending"
    who = await checkers(tx, case, lin)
    if not who.people:
        await skip(tx, case, lin, who.reason, photos)
        return
    await _cards(tx, case, lin, who, photos[:MAX_PHOTOS])


async def _cards(tx: Tx, case: Case, lin: Lineage, who: Checkers, photos: list[str],
                 not_before: datetime | None = None) -> None:
    """The check card to each of `who` (once a round each: the dedupe key)."""
    shown = photos or await notify.photos_of(tx, case, "result") or await notify.photos_of(
        tx, case)
    view = await notify.case_view(tx, case, lin, shown)
    resolver = await notify.person_name(tx, case.resolved_by_id)
    note = tx.texts.plain("check_instead", name=resolver) if who.instead else None
    text = tx.texts.render("case_card", case=view, kind="check", note=note)
    buttons = notify.card_page(tx, case, notify.CardRole.CHECKER, notify.check_buttons(tx, case))
    for person in who.people:
        await notify.send_to_person(
            tx, f"case:{case.id}:r{case.round}:check:{person.id}", person.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, photos=shown, buttons=buttons,
            not_before=not_before,
        )


async def skip(tx: Tx, case: Case, lin: Lineage, reason: str,
               photos: list[str] | None = None) -> None:
    """Nobody may check: on to the rating, with the reason in the history (`check_skip`),
    marked `skipped` (no head) or `nobody` (only the resolver), and the grid and the
    resolver told."""
    why = tx.texts.plain(reason)
    cases.transition(tx, case, EventKind.CHECK_SKIP, None, why)
    case.checked = "skipped" if reason == "check_skip_no_head" else "nobody"
    case.checked_at = tx.now
    shown = photos if photos is not None else await notify.photos_of(tx, case, "result")
    await cases.to_rating(tx, case, lin, shown)
    told = await handlers_at(tx.db, lin, Level.GRID)
    if case.resolved_by_id is not None and all(p.id != case.resolved_by_id for p in told):
        told.append(await cases.person(tx, case.resolved_by_id))
    await notify.tell_staff(tx, f"case:{case.id}:r{case.round}:check_skip", told, case, lin,
                            "check_nobody", deferrable=True, reason=why)


async def may_check(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> bool:
    """Whether `actor` may press 通过 / 不通过 now (what /case shows them)."""
    if case.resolved_by_id == actor.id:
        return False
    return any(p.id == actor.id for p in (await checkers(tx, case, lin)).people)


async def _permit(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> None:
    """Whoever may check now (`may_check`) may press 通过 / 不通过; the resolver never, and
    is told why."""
    if case.resolved_by_id == actor.id and case.status == CaseStatus.CHECKING:
        raise DomainError("check_own_result", case_id=case.id)
    if not await may_check(tx, actor, case, lin):
        raise DomainError("not_allowed")


async def _claim(tx: Tx, actor: Actor, case_id: int, rev: int) -> tuple[Case, Lineage]:
    case, lin = await cases.get_case(tx, case_id, rev, claim=True)
    await _permit(tx, actor, case, lin)
    return case, lin


async def check_fail(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """Whether `actor` may fail the check now (before the reason is asked for)."""
    case, lin = await cases.get_case(tx, case_id, rev)
    await _permit(tx, actor, case, lin)
    if case.status != CaseStatus.CHECKING:
        raise DomainError("stale", case_id=case.id)
    return case


async def pass_(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """通过: the reporter is asked to rate, and the rating window starts now."""
    case, lin = await _claim(tx, actor, case_id, rev)
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
    case, lin = await _claim(tx, actor, case_id, rev)
    if case.status != CaseStatus.CHECKING:
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


async def follow_registry(tx: Tx) -> int:
    """The sweep's periodic step: after the registry changed, each case waiting for a check
    whose checker is gone goes to whoever may check now, or on to the rating. Returns how
    many cases went on (0, and no statement, when the registry is as last seen).

    Checked once per registry version in each worker, and at its start. In the quiet hours a
    case that would go on to the rating waits (the reporter is not asked at night): the
    version is then looked at again at the next sweep.
    """
    version = (await directory(tx.db)).version
    if version is None or tx.ctx.extra.get(_FOLLOWED) == version:
        return 0
    waiting = (await tx.db.scalars(select(Case.id).where(Case.status == CaseStatus.CHECKING)
                                   .order_by(Case.id))).all()
    moved, later = 0, False
    for case_id in waiting:
        case = await tx.db.get(Case, case_id, with_for_update={"skip_locked": True},
                               populate_existing=True)
        if case is None or case.status != CaseStatus.CHECKING:
            continue
        lin = await lineage_of(tx.db, case.building_id, case.unit_id)
        who = await checkers(tx, case, lin)
        quiet = notify.quiet_delay(tx, case)
        if who.people:
            # Sent once a round to each: those who had it get nothing new.
            await _cards(tx, case, lin, who, [], not_before=quiet)
        elif quiet is not None:
            later = True
        else:
            await skip(tx, case, lin, who.reason)
            await cases.save(tx, case)
            moved += 1
    await tx.db.commit()
    if not later:
        tx.ctx.extra[_FOLLOWED] = version
    return moved
