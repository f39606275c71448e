"""吹哨报到: a department is called in on a case, acknowledges (报到) and reports its part done
(已处理).

A grid leader or a supervisor picks a department and writes what is needed; the department's
people get the case card privately (photos, place, the ask; never the reporter's name), or, for
one the bot cannot write to, in the department's work chat with phone numbers masked. 报到 and
已处理 go back to the caller and the case's handlers: the case stays with its handler, who
resolves it. A department that has not acknowledged within `policy.whistle_ack_within` is
escalated once, with the whistle's history, to the street supervisors; where the street has
none, to the level above the case's handlers that has someone (the community), and where
nobody is above, the handlers and the caller are told that nobody could be reached. A
department that acknowledged but has not reported done is reminded once, with the case's own
next reminder after its 报到 (due soon, the deadline, or the next overdue alert).

The whistle is a row of its own, and its status decides whether a department's button is stale,
not the case's rev. The case carries `whistle_due_at` (the earliest acknowledgement due of its
whistles called and not escalated) and `whistle_acked_at` (the earliest 报到 of those
acknowledged, not done and not yet reminded), which is all the timer model reads.

A whistle's acknowledgement due follows the policy while it is not acknowledged (`ack_due`):
a registry load that changes `whistle_ack_within` reaches the departments already called at the
next sweep (`follow_policy`). Once acknowledged or escalated, what it was judged against stays.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.attributes import set_committed_value

from bot.cases import lifecycle as cases
from bot.cases import notify, voice
from bot.cases.buttons import WhistleAnswer, whistle_button
from bot.cases.deadlines import Step, add_time
from bot.cases.events import EventKind
from bot.cases.lifecycle import HANDLING
from bot.context import Tx
from bot.errors import DomainError
from bot.org.directory import DepartmentInfo, directory
from bot.org.policy import Policy
from bot.org.roles import Actor, Level, Lineage, handlers_at
from bot.user_text import REASON_LIMIT, clean_text
from storage.models import Case, CasePhoto, Person, Whistle

# Whether the cards offer 吹哨.
ENABLED = True



class WhistleStatus(StrEnum):
    """Where a whistle stands (`whistles.status`; stored, never renamed). Escalation is no
    status: an escalated whistle is still called, with `escalated_at` set."""

    CALLED = "called"  # the department has not acknowledged yet
    ACKED = "acked"  # 报到
    DONE = "done"  # 已处理
    WITHDRAWN = "withdrawn"  # the case was resolved or suspended first


# Whistles a department may still answer; `done` and `withdrawn` are over.
OPEN = (WhistleStatus.CALLED, WhistleStatus.ACKED)
# The `whistle_ack_within` the sweep has brought the whistles called into line with, kept in
# `Ctx.extra` (absent: not yet in this worker).
_FOLLOWED = "whistles.ack_within"


def ack_due(policy: Policy, called_at: datetime) -> datetime | None:
    """When a department called at `called_at` must have acknowledged, by the policy as it
    is now; None: the policy sets no time."""
    within = policy.whistle_ack_within
    return add_time(policy, called_at, within) if within else None


async def check_call(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """Whether `actor` may blow the whistle on the case now (before the department picker)."""
    case = await cases.check(tx, actor, case_id, rev, EventKind.WHISTLE)
    if not (await directory(tx.db)).departments:
        raise DomainError("no_department")
    return case


async def call(tx: Tx, actor: Actor, case_id: int, rev: int, department: str,
               ask: str) -> Whistle:
    """Call `department` in on the case with `ask`; its people get the card. Commits."""
    ask = clean_text(ask, REASON_LIMIT)
    if not ask:
        raise DomainError("reason_needed")
    dept = (await directory(tx.db)).departments.get(department)
    if dept is None:
        raise DomainError("no_department")
    case, lin = await cases.act(tx, actor, case_id, rev, EventKind.WHISTLE)
    if case.status not in HANDLING:
        raise DomainError("stale", case_id=case.id)
    whistle = Whistle(
        case_id=case.id, department_id=dept.id, called_by_id=actor.id, called_at=tx.now,
        ask=ask, status=WhistleStatus.CALLED, ack_due_at=ack_due(tx.policy, tx.now),
    )
    tx.db.add(whistle)
    await tx.db.flush()
    # Not a transition: the case's buttons do not change, so its rev stays.
    cases.record(tx, case, EventKind.WHISTLE, actor.id, f"{dept.name}：{ask}")
    if whistle.ack_due_at is not None and (case.whistle_due_at is None
                                           or whistle.ack_due_at < case.whistle_due_at):
        case.whistle_due_at = whistle.ack_due_at
    photos = await notify.photos_of(tx, case)
    view = await notify.case_view(tx, case, lin, photos)
    t = tx.texts
    text = t.render("whistle_card", case=view, department=dept.name, ask=ask,
                    caller=actor.name, ack_due_at=whistle.ack_due_at)
    buttons = answer_buttons(tx, whistle)
    for person_id in sorted(dept.members):
        await notify.send_to_person(
            tx, f"case:{case.id}:whistle:{whistle.id}:{person_id}", person_id, text,
            case=case, fallback_chat_id=dept.chat_id, photos=photos, buttons=buttons,
            kind="department", with_voice=voice.of_case(case),
        )
    await cases.save(tx, case)
    return whistle


def answer_buttons(tx: Tx, whistle: Whistle) -> notify.Buttons:
    """报到 while called, then 已处理 alone; none once it is over."""
    t = tx.texts
    if whistle.status == WhistleStatus.CALLED:
        return [[whistle_button(t.plain("btn_whistle_ack"), whistle.id, WhistleAnswer.ACK),
                 whistle_button(t.plain("btn_whistle_done"), whistle.id, WhistleAnswer.DONE)]]
    if whistle.status == WhistleStatus.ACKED:
        return [[whistle_button(t.plain("btn_whistle_done"), whistle.id, WhistleAnswer.DONE)]]
    return []


async def _load(tx: Tx, actor: Actor, whistle_id: int) -> tuple[Whistle, DepartmentInfo]:
    """The whistle and its department, refused unless `actor` answers for the department."""
    if not 0 < whistle_id <= cases.MAX_CASE_ID:
        raise DomainError("whistle_stale")
    whistle = await tx.db.get(Whistle, whistle_id, populate_existing=True)
    if whistle is None:
        raise DomainError("whistle_stale")
    dept = (await directory(tx.db)).department(whistle.department_id)
    if dept is None or actor.id not in dept.members:
        raise DomainError("not_in_department")
    return whistle, dept


async def _claim(tx: Tx, whistle: Whistle, from_: tuple[WhistleStatus, ...],
                 values: dict[str, Any],
                 shown: dict[str, Any]) -> None:
    """Compare and set: of two people of a department answering at once, one answer counts.
    `shown` is what the row now holds, set on the object without reading it back."""
    try:
        result = await tx.db.execute(
            update(Whistle).where(Whistle.id == whistle.id, Whistle.status.in_(from_))
            .values(**values).execution_options(synchronize_session=False))
    except OperationalError as exc:
        await tx.db.rollback()
        raise DomainError("busy", case_id=whistle.case_id) from exc
    if getattr(result, "rowcount", 1) == 0:
        raise DomainError("whistle_stale")
    for name, value in shown.items():
        set_committed_value(whistle, name, value)


async def acknowledge(tx: Tx, actor: Actor, whistle_id: int) -> Whistle:
    """报到: the department has seen it. The caller and the handlers are told. Commits."""
    whistle, dept = await _load(tx, actor, whistle_id)
    if whistle.status != WhistleStatus.CALLED:
        raise DomainError("whistle_stale")
    # The case first, as every other path locks it before its whistles.
    case, lin = await cases.get_case(tx, whistle.case_id)
    acked = {"status": WhistleStatus.ACKED, "acked_by_id": actor.id, "acked_at": tx.now}
    await _claim(tx, whistle, (WhistleStatus.CALLED,), acked, acked)
    cases.record(tx, case, EventKind.WHISTLE_ACK, actor.id, dept.name)
    if _set_due(whistle, case):
        case.whistle_due_at = await next_due(tx, case)
    if case.whistle_acked_at is None:
        # Reminded to report done unless it does so first; an earlier 报到 not yet
        # reminded keeps the case's time.
        case.whistle_acked_at = tx.now
    text = tx.texts.render(
        "whistle_acked", case=await notify.case_view(tx, case, lin), department=dept.name,
        person=actor.name, whistle=await _history(tx, whistle))
    for person in await _told(tx, case, lin, whistle):
        await notify.send_to_person(
            tx, f"case:{case.id}:whistle:{whistle.id}:ack:{person.id}", person.id, text,
            case=case, fallback_chat_id=lin.grid.chat_id)
    await cases.save(tx, case)
    return whistle


async def check_done(tx: Tx, actor: Actor, whistle_id: int) -> Whistle:
    """Whether `actor` may report the whistle done now (before asking for the note)."""
    whistle, _ = await _load(tx, actor, whistle_id)
    if whistle.status not in OPEN:
        raise DomainError("whistle_stale")
    return whistle


async def done(tx: Tx, actor: Actor, whistle_id: int, note: str,
               photos: list[str]) -> Whistle:
    """已处理 with a note and photos, which go to the caller and the handlers; a done
    acknowledges too. The case stays with its handler, who resolves it. Commits."""
    note = clean_text(note, REASON_LIMIT)
    if not note:
        raise DomainError("whistle_note_needed")
    whistle, dept = await _load(tx, actor, whistle_id)
    if whistle.status not in OPEN:
        raise DomainError("whistle_stale")
    case, lin = await cases.get_case(tx, whistle.case_id)
    was_called = whistle.status == WhistleStatus.CALLED
    finished = {"status": WhistleStatus.DONE, "done_by_id": actor.id, "done_at": tx.now,
                "note": note}
    await _claim(tx, whistle, OPEN,
                 {**finished, "acked_by_id": func.coalesce(Whistle.acked_by_id, actor.id),
                  "acked_at": func.coalesce(Whistle.acked_at, tx.now)},
                 {**finished, "acked_by_id": whistle.acked_by_id or actor.id,
                  "acked_at": whistle.acked_at or tx.now})
    photos = photos[:10]
    for file_id in photos:
        tx.db.add(CasePhoto(case_id=case.id, file_id=file_id, kind="whistle"))
    cases.record(tx, case, EventKind.WHISTLE_DONE, actor.id, f"{dept.name}：{note}")
    if _set_due(whistle, case, was_called):
        case.whistle_due_at = await next_due(tx, case)
    if not was_called and case.whistle_acked_at is not None:
        case.whistle_acked_at = await next_acked(tx, case, case.whistle_acked_at)
    text = tx.texts.render(
        "whistle_done", case=await notify.case_view(tx, case, lin), department=dept.name,
        person=actor.name, note=note, photos=len(photos), whistle=await _history(tx, whistle))
    for person in await _told(tx, case, lin, whistle):
        await notify.send_to_person(
            tx, f"case:{case.id}:whistle:{whistle.id}:done:{person.id}", person.id, text,
            case=case, fallback_chat_id=lin.grid.chat_id, photos=photos)
    await cases.save(tx, case)
    return whistle


def _set_due(whistle: Whistle, case: Case, was_called: bool = True) -> bool:
    """Whether answering `whistle` may move the case's `whistle_due_at`: only if it was a
    called, unescalated whistle and the case has a due time (else no statement)."""
    return was_called and whistle.escalated_at is None and case.whistle_due_at is not None


async def _told(tx: Tx, case: Case, lin: Lineage, whistle: Whistle) -> list[Person]:
    """Who hears a department's answer: the handlers of the case's level and the caller."""
    people = await handlers_at(tx.db, lin, case.level)
    if whistle.called_by_id is not None and all(p.id != whistle.called_by_id for p in people):
        caller = await tx.db.get(Person, whistle.called_by_id)
        if caller is not None:
            people.append(caller)
    return people


async def _history(tx: Tx, whistle: Whistle) -> dict[str, Any]:
    return {"called_at": whistle.called_at,
            "caller": await notify.person_name(tx, whistle.called_by_id),
            "ask": whistle.ask, "ack_due_at": whistle.ack_due_at}


async def _above(tx: Tx, case: Case, lin: Lineage) -> tuple[Level | None, list[Person]]:
    """Who a department that did not acknowledge goes to: the street supervisors; where the
    street has none, the supervisors of the level above the case's handlers that has anyone
    (the community, for a case at the grid); (None, []) where nobody is above."""
    levels = [Level.STREET] + ([Level.COMMUNITY] if case.level == Level.GRID else [])
    for level in levels:
        people = await handlers_at(tx.db, lin, level)
        if people:
            return level, people
    return None, []


async def escalate_due(tx: Tx, case: Case, lin: Lineage, step: Step, key: str) -> str:
    """WHISTLE_ESCALATE: each department not acknowledged by its due time (by the policy as it
    is now) goes, with the whistle's history, to the street supervisors, or where the street
    has none to the level above that has someone; where nobody is above, the handlers and the
    caller are told that nobody could be reached. Once per whistle (`escalated_at`); the
    department may still 报到."""
    within = tx.policy.whistle_ack_within
    late = (await tx.db.scalars(
        select(Whistle).where(Whistle.case_id == case.id, Whistle.status == WhistleStatus.CALLED,
                              Whistle.escalated_at.is_(None),
                              Whistle.called_at <= tx.now - within)
        .order_by(Whistle.id))).all() if within else []
    known = await directory(tx.db)
    level, above = await _above(tx, case, lin) if late else (None, [])
    view = await notify.case_view(tx, case, lin) if late else None
    not_before = notify.quiet_delay(tx, case)
    t = tx.texts
    for whistle in late:
        whistle.escalated_at = tx.now
        dept = known.department(whistle.department_id)
        name = dept.name if dept is not None else str(whistle.department_id)
        told = above or await _told(tx, case, lin, whistle)
        note = (name if level == Level.STREET
                else t.plain("whistle_to_community", name=name) if level is not None
                else t.plain("whistle_to_nobody", name=name))
        cases.record(tx, case, EventKind.WHISTLE_ESCALATE, None, note)
        text = t.render("whistle_escalated" if above else "whistle_unreachable", case=view,
                        department=name, whistle=await _history(tx, whistle))
        for person in told:
            await notify.send_to_person(
                tx, f"{key}:{whistle.id}:{person.id}", person.id, text, case=case,
                fallback_chat_id=lin.grid.chat_id, not_before=not_before)
    await tx.db.flush()
    case.whistle_due_at = await next_due(tx, case)
    return step.name.value


async def remind_due(tx: Tx, case: Case, lin: Lineage, step: Step, key: str) -> str:
    """WHISTLE_REMIND: each department that acknowledged before the step's moment and has
    not reported done is reminded once, with its 已处理 button; `whistle_acked_at` moves on
    to those acknowledged since (each whistle's reminder is its first moment after 报到)."""
    since = case.whistle_acked_at
    if since is None:
        return step.name.value
    due = (await tx.db.scalars(
        select(Whistle).where(Whistle.case_id == case.id, Whistle.status == WhistleStatus.ACKED,
                              Whistle.acked_at >= since, Whistle.acked_at < step.basis)
        .order_by(Whistle.id))).all()
    known = await directory(tx.db)
    view = await notify.case_view(tx, case, lin) if due else None
    for whistle in due:
        dept = known.department(whistle.department_id)
        if dept is None:
            continue
        text = tx.texts.render("whistle_remind", case=view, department=dept.name,
                               person=await notify.person_name(tx, whistle.acked_by_id),
                               whistle=await _history(tx, whistle))
        buttons = answer_buttons(tx, whistle)
        for person_id in sorted(dept.members):
            await notify.send_to_person(
                tx, f"case:{case.id}:whistle:{whistle.id}:remind:{person_id}", person_id, text,
                case=case, fallback_chat_id=dept.chat_id, buttons=buttons, kind="department")
    case.whistle_acked_at = await next_acked(tx, case, step.basis)
    return step.name.value


async def withdraw_open(tx: Tx, case: Case, lin: Lineage) -> None:
    """Open whistles lapse when the case is resolved or suspended; their departments are
    told. No statement where the case row or the registry says there is none: a called
    whistle not yet escalated sets `whistle_due_at`, and with no department in the registry
    (the directory is in memory) no whistle was ever called. An acknowledged or escalated
    whistle leaves no mark on the case row, so otherwise one indexed query looks."""
    if case.whistle_due_at is None and not (await directory(tx.db)).departments_by_id:
        return
    open_ = (await tx.db.scalars(
        select(Whistle).where(Whistle.case_id == case.id, Whistle.status.in_(OPEN))
        .order_by(Whistle.id))).all()
    case.whistle_due_at = None
    case.whistle_acked_at = None
    known = await directory(tx.db)
    for whistle in open_:
        whistle.status = WhistleStatus.WITHDRAWN
        dept = known.department(whistle.department_id)
        name = dept.name if dept is not None else str(whistle.department_id)
        cases.record(tx, case, EventKind.WHISTLE_WITHDRAW, None, name)
        if dept is None:
            continue
        text = tx.texts.render("whistle_withdrawn", case_id=case.id, department=name,
                               whistle=await _history(tx, whistle))
        for person_id in sorted(dept.members):
            await notify.send_to_person(
                tx, f"case:{case.id}:whistle:{whistle.id}:withdrawn:{person_id}", person_id,
                text, case=case, fallback_chat_id=dept.chat_id, kind="department")


async def next_due(tx: Tx, case: Case) -> datetime | None:
    """The case's `whistle_due_at` recomputed from its whistles: the earliest call of those
    called and not escalated, plus the policy's `whistle_ack_within` as it is now."""
    if not tx.policy.whistle_ack_within:
        return None
    first: datetime | None = await tx.db.scalar(
        select(func.min(Whistle.called_at)).where(
            Whistle.case_id == case.id, Whistle.status == WhistleStatus.CALLED,
            Whistle.escalated_at.is_(None)))
    return ack_due(tx.policy, first) if first is not None else None


async def next_acked(tx: Tx, case: Case, since: datetime) -> datetime | None:
    """The case's `whistle_acked_at` recomputed: the earliest 报到 at or after `since` of its
    whistles acknowledged and not done (those before `since` were reminded already)."""
    first: datetime | None = await tx.db.scalar(
        select(func.min(Whistle.acked_at)).where(
            Whistle.case_id == case.id, Whistle.status == WhistleStatus.ACKED,
            Whistle.acked_at >= since))
    return first


async def follow_policy(tx: Tx) -> int:
    """The sweep's periodic step: the acknowledgement due of every whistle still called and
    not escalated follows `policy.whistle_ack_within` as it is now, and so does its case's
    timer. Returns how many cases it retimed (0, and no statement, when the policy is the one
    this worker last followed; once at its start)."""
    within = tx.policy.whistle_ack_within
    if _FOLLOWED in tx.ctx.extra and tx.ctx.extra[_FOLLOWED] == within:
        return 0
    called = (await tx.db.scalars(
        select(Whistle).where(Whistle.status == WhistleStatus.CALLED,
                              Whistle.escalated_at.is_(None))
        .order_by(Whistle.case_id, Whistle.id))).all()
    touched: set[int] = set()
    for whistle in called:
        due = ack_due(tx.policy, whistle.called_at)
        if whistle.ack_due_at != due:
            whistle.ack_due_at = due
            touched.add(whistle.case_id)
    await tx.db.flush()
    for case_id in sorted(touched):
        case = await tx.db.get(Case, case_id, with_for_update=True, populate_existing=True)
        if case is None or case.status not in HANDLING:
            continue
        case.whistle_due_at = await next_due(tx, case)
        await cases.schedule(tx, case)
    await tx.db.commit()
    tx.ctx.extra[_FOLLOWED] = within
    return len(touched)
