"""The case life cycle: every transition checks who acts and from which status, records an
audit event, writes the messages it makes owed, and commits once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Literal, TypeAlias

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from bot.cases import followers, hooks, notify, reminders
from bot.cases.deadlines import (
    Moved,
    Phase,
    SentKey,
    Step,
    StepName,
    deadline_of,
    due_now,
    hold_deadline,
    move_deadline,
    next_check,
    offset,
    pending_steps,
    runs,
)
from bot.cases.events import EventKind as EventKind
from bot.cases.reminders import ReminderKind as R
from bot.cases.status import FINAL_STATUSES as FINAL_STATUSES
from bot.cases.status import HANDLING as HANDLING
from bot.cases.status import OPEN_STATUSES as OPEN_STATUSES
from bot.cases.status import CaseStatus as CaseStatus
from bot.cases.status import S as S
from bot.cases.voice import MAX_SECONDS, Voice, problem
from bot.context import Tx
from bot.errors import DomainError
from bot.org import hints
from bot.org import roles as org
from bot.org.directory import CategoryInfo, NodeKind, directory
from bot.org.roles import (
    Actor,
    Level,
    Lineage,
    RoleName,
    handlers_at,
    holders,
    level_above,
    level_below,
    lineage_of,
)
from bot.user_text import REASON_LIMIT, clean_text, visible
from storage.models import (
    Case,
    CaseEvent,
    CasePhoto,
    CaseTimerStep,
    DuplicateOffer,
    Person,
)

# Which timers each status has; a status missing here (final ones) has none.
TIMER_PHASE: dict[str, Phase] = {
    S.VERIFYING: Phase.VERIFY,
    **{s: Phase.HANDLE for s in HANDLING},
    S.SUSPENDED: Phase.SUSPENDED,
    S.CHECKING: Phase.CHECK,
    S.RESOLVED: Phase.RATE,
}
# A sweep takes at most this many steps of one case at once (a timeout, an overdue alert
# and both escalations after a long stop); the rest wait for the next sweep.
STEPS_PER_PASS = 8

E = EventKind


class Intent(StrEnum):
    """What an actor may start that is not an event itself: a prompt opened before any
    transition. `check` and `act` take these or an EventKind; the values of the two never
    overlap (a prompt that leads to its own event, like 挂账 or 吹哨, is that EventKind)."""

    EXTEND = "extend"  # 延期: ask the level above for more time
    CHECK_FAIL = "check_fail"  # 核查不通过: asks for a reason, then 返工
    RATE_BAD = "rate_bad"  # 不满意: asks for a comment, then 返工


# What `check` and `act` are asked about: an event the actor makes, or a prompt they open.
Act: TypeAlias = EventKind | Intent

# event -> (statuses it may start from, status it leads to; None keeps the status)
TRANSITIONS: dict[EventKind, tuple[frozenset[CaseStatus], CaseStatus | None]] = {
    E.CONFIRM: (frozenset({S.VERIFYING}), S.OPEN),
    E.REJECT: (frozenset({S.VERIFYING}), S.REJECTED),
    E.VERIFY_TIMEOUT: (frozenset({S.VERIFYING}), S.OPEN),
    E.CATEGORY: (frozenset({S.VERIFYING, *HANDLING}), None),
    E.ACCEPT: (frozenset({S.OPEN}), S.ACCEPTED),
    E.ASSIGN: (frozenset({S.OPEN, S.ACCEPTED}), S.ASSIGNED),
    E.ACK: (frozenset({S.ASSIGNED}), None),
    E.DONE: (frozenset({S.ASSIGNED}), S.ACCEPTED),
    E.ESCALATE: (HANDLING, S.OPEN),
    E.AUTO_ESCALATE: (HANDLING, S.OPEN),
    E.SEND_BACK: (HANDLING, S.OPEN),
    E.RESOLVE: (HANDLING, S.RESOLVED),
    E.RESOLVE_CHECK: (HANDLING, S.CHECKING),
    E.CHECK_PASS: (frozenset({S.CHECKING}), S.RESOLVED),
    E.CHECK_TIMEOUT: (frozenset({S.CHECKING}), S.RESOLVED),
    E.CHECK_SKIP: (frozenset({S.CHECKING}), S.RESOLVED),
    E.SUSPEND: (HANDLING, S.SUSPENDED),
    E.RESUME: (frozenset({S.SUSPENDED}), S.ACCEPTED),
    E.SUSPEND_REVIEW: (frozenset({S.SUSPENDED}), S.ACCEPTED),
    E.RATE: (frozenset({S.RESOLVED}), S.CLOSED),
    # 返工: 不满意 at the follow-up, or a failed on-site check; one kind, counted as round - 1.
    E.REWORK: (frozenset({S.RESOLVED, S.CHECKING}), S.OPEN),
    E.RATING_TIMEOUT: (frozenset({S.RESOLVED}), S.CLOSED),
    E.MERGE: (HANDLING, S.MERGED),
}
# Actions that open a prompt before any transition: the statuses they may start from.
PROMPT_FROM: dict[Act, frozenset[CaseStatus]] = {
    Intent.EXTEND: HANDLING,
    E.SUSPEND: HANDLING,
    E.WHISTLE: HANDLING,
    Intent.CHECK_FAIL: frozenset({S.CHECKING}),
    Intent.RATE_BAD: frozenset({S.RESOLVED}),
    E.MERGE: HANDLING,
    E.SPLIT: HANDLING,
}
# Events that change nothing a button depends on keep the rev.
_KEEPS_REV = {E.CATEGORY, E.ACK}
# Events after which the round's clock starts again (their caller sets the clock start and
# clears the extensions): the deadline is derived afresh, with nothing held from before.
CLOCK_RESTARTS = {E.REWORK, E.RESUME, E.SUSPEND_REVIEW}
# Case ids are 32-bit: anything else, typed or forged, is no case at all.
MAX_CASE_ID = 2**31 - 1
# A flood of reports from one account: at most REPORT_LIMIT in any REPORT_WINDOW, counted
# by who submitted them, held (是同一问题) or filed. Staff (anyone with a role) are exempt.
REPORT_LIMIT = 5
REPORT_WINDOW = timedelta(minutes=10)
# Run when a report is rejected at verification, in its transaction, before anyone is told:
# the modules of bot/cases that attach reports to a case register here when imported
# (bot/cases/duplicates.py: a report joined to it is filed as its own), so the life cycle
# imports none of them.
RejectHook = Callable[[Tx, Case], Awaitable[None]]
REJECT_HOOKS: list[RejectHook] = []


@dataclass
class ReportInput:
    building_id: int
    reporter_id: int
    description: str
    unit_id: int | None = None
    submitted_by_id: int | None = None
    category: str | None = None
    photos: list[str] = field(default_factory=list)
    latitude: float | None = None
    longitude: float | None = None
    source_chat_id: int | None = None
    source_message_id: int | None = None
    # A voice or video note that stands for the description (or goes with it).
    voice: Voice | None = None
    # Found by staff unasked (issue 22): 'patrol' (巡查, with its `patrol_id`) or 'visit' (a
    # need found on a care visit). The staff member is the reporter; no building head
    # verifies it, and its card says where it came from.
    source: str = ""
    patrol_id: int | None = None


def record(tx: Tx, case: Case, action: EventKind, actor_id: int | None,
           note: str | None = None, from_status: str | None = None) -> CaseEvent:
    event = CaseEvent(
        case_id=case.id, at=tx.now, actor_id=actor_id, action=action,
        from_status=from_status or case.status, to_status=case.status, note=note,
    )
    tx.db.add(event)
    return event


def transition(tx: Tx, case: Case, action: EventKind, actor_id: int | None,
               note: str | None = None) -> CaseEvent:
    allowed, target = TRANSITIONS[action]
    if case.status not in allowed:
        raise DomainError("stale", case_id=case.id)
    before = case.status
    if target is not None:
        case.status = target
    if action not in _KEEPS_REV:
        case.rev += 1
    if action in CLOCK_RESTARTS:
        case.deadline_offset_seconds = 0
    return record(tx, case, action, actor_id, note, from_status=before)


async def _category(tx: Tx, code: str | None) -> CategoryInfo:
    categories = (await directory(tx.db)).categories
    cat = categories.get(code or "other")
    if cat is None or not cat.active:
        cat = categories.get("other")
    if cat is None:
        raise DomainError("not_configured")
    return cat


async def _sync_deadline(tx: Tx, case: Case) -> None:
    """While the deadline runs (deadlines.RUNNING), it is the clock start plus the current
    category's SLA and the extensions approved this round, where a category change or a
    registry edit had to leave it (`deadline_offset_seconds`). Once a result is recorded,
    and while the case is suspended or closed, it stays: the deadline a result is judged
    against is frozen (issue 19, defect 2)."""
    if not runs(case):
        return
    cat = (await directory(tx.db)).categories.get(case.category)
    if cat is not None:
        case.deadline_at = deadline_of(tx.policy, case.clock_started_at,
                                       timedelta(seconds=cat.sla_seconds), cat.sla_unit,
                                       case.extended_seconds) + offset(case)


async def _steps_taken(tx: Tx, case: Case) -> set[SentKey]:
    rows = await tx.db.execute(
        select(CaseTimerStep.step, CaseTimerStep.n, CaseTimerStep.basis)
        .where(CaseTimerStep.case_id == case.id, CaseTimerStep.round == case.round))
    return {(step, n, basis) for step, n, basis in rows.all()}


def _pending(tx: Tx, case: Case, taken: set[SentKey]) -> list[Step]:
    return pending_steps(TIMER_PHASE.get(case.status), case, tx.policy, tx.now, taken)


async def schedule(tx: Tx, case: Case) -> None:
    """Derive the deadline and the next check from the one timer model.

    Called by every transition and by the sweep, so no change of status, category or round
    can leave a timer behind.
    """
    await _sync_deadline(tx, case)
    if case.id is None or case.status not in TIMER_PHASE:
        taken: set[SentKey] = set()
    else:
        taken = await _steps_taken(tx, case)
    case.next_check_at = next_check(_pending(tx, case, taken), case, tx.policy, tx.now)


async def save(tx: Tx, case: Case) -> None:
    await schedule(tx, case)
    await tx.db.commit()


# --- loading and permission ----------------------------------------------------------------


async def get_case(tx: Tx, case_id: int, rev: int | None = None, *,
                   claim: bool = False) -> tuple[Case, Lineage]:
    """The case and its place; with `rev`, refused as stale unless the case is still there.

    With `claim` (a transition is about to be made), the case is first claimed with
    `UPDATE cases SET rev = rev WHERE id = :id AND rev = :rev`: a compare-and-lock that holds
    the row (PostgreSQL) or the database (SQLite) until this transaction ends, so two people
    pressing the same button at once make one transition, and the other is told it is stale.
    """
    if not 0 < case_id <= MAX_CASE_ID:
        raise DomainError("no_case", case_id=case_id)
    if rev is not None and not 0 < rev <= MAX_CASE_ID:
        raise DomainError("stale", case_id=case_id)
    if claim and rev is not None:
        await _claim(tx, case_id, rev)
    case = await tx.db.get(Case, case_id, with_for_update=True, populate_existing=True)
    if case is None:
        raise DomainError("no_case", case_id=case_id)
    if rev is not None and rev != case.rev:
        raise DomainError("stale", case_id=case_id)
    return case, await lineage_of(tx.db, case.building_id, case.unit_id)


async def _claim(tx: Tx, case_id: int, rev: int) -> None:
    try:
        result = await tx.db.execute(
            update(Case).where(Case.id == case_id, Case.rev == rev).values(rev=Case.rev)
            .execution_options(synchronize_session=False))
    except OperationalError as exc:
        # SQLite gave up waiting for another writer: nothing was done; the person may retry.
        await tx.db.rollback()
        raise DomainError("busy", case_id=case_id) from exc
    if getattr(result, "rowcount", 1) == 0:
        exists = await tx.db.scalar(select(Case.id).where(Case.id == case_id))
        raise DomainError("stale" if exists else "no_case", case_id=case_id)


def require(ok: bool) -> None:
    if not ok:
        raise DomainError("not_allowed")


def _is_head(actor: Actor, lin: Lineage) -> bool:
    return actor.has(RoleName.BUILDING_HEAD, lin.building.id)


async def check(tx: Tx, actor: Actor, case_id: int, rev: int, action: Act) -> Case:
    """Whether `actor` may start `action` now; for buttons that first ask for text."""
    case, lin = await get_case(tx, case_id, rev)
    await _permit(tx, actor, case, lin, action)
    allowed = PROMPT_FROM.get(action) or TRANSITIONS[EventKind(action)][0]
    if case.status not in allowed:
        raise DomainError("stale", case_id=case.id)
    if action == E.ESCALATE and level_above(case.level) is None:
        raise DomainError("top_level", case_id=case.id)
    if action == E.SEND_BACK and level_below(case.level) is None:
        raise DomainError("bottom_level", case_id=case.id)
    return case


async def _permit(tx: Tx, actor: Actor, case: Case, lin: Lineage, action: Act) -> None:
    if action in (E.CONFIRM, E.REJECT):
        require(_is_head(actor, lin))
    elif action == E.CATEGORY:
        if case.status == S.VERIFYING:
            require(_is_head(actor, lin) or actor.handles(lin, Level.GRID))
        else:
            require(actor.handles(lin, case.level))
    elif action in (E.ACCEPT, E.ASSIGN, E.RESOLVE, E.SEND_BACK, E.MERGE, E.SPLIT):
        require(actor.handles(lin, case.level))
    elif action == E.ESCALATE:
        if case.level == Level.GRID:
            # Grid members help handle cases; taking one up a level is the leader's call,
            # or theirs while the grid has no leader.
            leaderless = not await holders(tx.db, RoleName.GRID_LEADER, lin.grid.id)
            require(actor.has(RoleName.GRID_LEADER, lin.grid.id)
                     or actor.handles(lin, Level.COMMUNITY)
                     or (leaderless and actor.has(RoleName.GRID_MEMBER, lin.grid.id)))
        else:
            require(actor.handles(lin, case.level))
    elif action in (E.ACK, E.DONE):
        # The task was handed to them as the building's head, and they must still be it.
        require(case.assignee_id == actor.id and _is_head(actor, lin))
    elif action in (E.RATE, Intent.RATE_BAD):
        # Whoever it affects rates it: the reporter, or a resident who follows the case.
        require(case.reporter_id == actor.id
                or await followers.follows(tx.db, case, actor.id))
    elif action in (Intent.EXTEND, E.SUSPEND):
        # The one who holds the case at its level asks; supervisors above answer.
        require(await org.holds_level(tx.db, actor, lin, case.level))
    elif action == E.RESUME:
        above = level_above(case.level)
        require(await org.holds_level(tx.db, actor, lin, case.level)
                or (above is not None and actor.handles(lin, above)))
    elif action == E.WHISTLE:
        require(actor.has(RoleName.GRID_LEADER, lin.grid.id)
                or actor.handles(lin, Level.COMMUNITY))
    elif action in (E.CHECK_PASS, Intent.CHECK_FAIL):
        require(_is_head(actor, lin))
    else:  # pragma: no cover - a new action must be given its rule here
        raise DomainError("not_allowed")


async def act(tx: Tx, actor: Actor, case_id: int, rev: int, action: Act
              ) -> tuple[Case, Lineage]:
    case, lin = await get_case(tx, case_id, rev, claim=True)
    await _permit(tx, actor, case, lin, action)
    return case, lin


# --- collect -------------------------------------------------------------------------------


async def check_report_quota(tx: Tx, submitter_id: int) -> None:
    """Refuse a report from someone who sent REPORT_LIMIT of them in the last REPORT_WINDOW.

    Counted from the database, so it holds across restarts and whichever way the reports
    came in (group, album, private chat): every report counts, filed as a case or held by the
    是同一问题 question (a held report not yet filed, or joined to a case), so a report over
    the limit is refused at once, before any question (issue 20, defect 7). Staff report for
    others all day: they are exempt.
    """
    if (await directory(tx.db)).roles_of.get(submitter_id):
        return
    since = tx.now - REPORT_WINDOW
    filed = await tx.db.scalar(
        select(func.count()).select_from(Case).where(
            Case.submitted_by_id == submitter_id, Case.reported_at > since))
    # Only reports made by their reporter are held, so the offer's person submitted it.
    held = await tx.db.scalar(
        select(func.count()).select_from(DuplicateOffer).where(
            DuplicateOffer.person_id == submitter_id, DuplicateOffer.created_at > since,
            DuplicateOffer.filed_case_id.is_(None)))
    if (filed or 0) + (held or 0) >= REPORT_LIMIT:
        raise DomainError("rate_limited", count=REPORT_LIMIT,
                          limit=int(REPORT_WINDOW.total_seconds() // 60))


@dataclass(frozen=True)
class Checked:
    """A report that may be filed: its clean description and the category it gets."""

    description: str
    category: CategoryInfo


async def check_report(tx: Tx, inp: ReportInput, *, admitted: bool = False) -> Checked:
    """Refuse a report that may not be filed (empty, too long a voice, too many, no such
    building); else what it would be filed with. `admitted`: a report held by the 是同一问题
    question, counted against the flood limit when it came, is not counted again."""
    description = clean_text(inp.description)
    if not visible(description):
        description = ""
    if inp.voice is not None and (refused := problem(inp.voice)) is not None:
        raise DomainError(refused, limit=MAX_SECONDS // 60)
    if not description and not inp.photos and inp.voice is None:
        raise DomainError("empty_report")
    if not admitted:
        await check_report_quota(tx, inp.submitted_by_id or inp.reporter_id)
    building = (await directory(tx.db)).place(inp.building_id)
    if building is None or building.kind != NodeKind.BUILDING or not building.active:
        raise DomainError("no_building")
    code = inp.category
    if code is None:
        # No category chosen (a group report): the one its words suggest, else "other".
        # Staff change it with 改类别 like any other.
        code = hints.best_code(description, (await directory(tx.db)).active_categories())
    return Checked(description, await _category(tx, code))


async def report(tx: Tx, inp: ReportInput, checked: Checked | None = None) -> Case:
    """File a report as a case (`checked`: what check_report found, when it was asked)."""
    if checked is None:
        checked = await check_report(tx, inp)
    description, cat = checked.description, checked.category
    lin = await lineage_of(tx.db, inp.building_id, inp.unit_id)
    heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
    found = bool(inp.source)
    if found:
        verified = "staff"
    else:
        verified = "skipped" if cat.urgent else ("pending" if heads else "unverified")
    case = Case(
        status=S.OPEN if cat.urgent or not heads or found else S.VERIFYING,
        rev=1,
        level=Level.GRID,
        category=cat.code,
        urgent=cat.urgent,
        verified=verified,
        source=inp.source,
        patrol_id=inp.patrol_id,
        building_id=lin.building.id,
        unit_id=inp.unit_id,
        reporter_id=inp.reporter_id,
        submitted_by_id=inp.submitted_by_id or inp.reporter_id,
        description=description,
        latitude=inp.latitude,
        longitude=inp.longitude,
        source_chat_id=inp.source_chat_id,
        source_message_id=inp.source_message_id,
        voice_file_id=inp.voice.file_id if inp.voice else None,
        voice_kind=inp.voice.kind if inp.voice else None,
        voice_seconds=inp.voice.seconds if inp.voice else None,
        reported_at=tx.now,
        clock_started_at=tx.now,
        deadline_at=deadline_of(tx.policy, tx.now, timedelta(seconds=cat.sla_seconds),
                                cat.sla_unit),
        round=1,
    )
    tx.db.add(case)
    await tx.db.flush()
    for file_id in inp.photos[:10]:
        tx.db.add(CasePhoto(case_id=case.id, file_id=file_id, kind="report"))
    on_behalf = case.submitted_by_id != case.reporter_id
    tx.db.add(CaseEvent(
        case_id=case.id, at=tx.now, actor_id=case.submitted_by_id,
        action=E.REPORT_BEHALF if on_behalf else E.REPORT, from_status=None,
        to_status=case.status,
        note=await notify.person_name(tx, case.reporter_id) if on_behalf else None,
    ))
    await tx.db.flush()
    await notify.acknowledge(tx, case)
    if case.status == S.VERIFYING:
        for head in heads:
            await notify.verify_card(tx, case, lin, head)
    else:
        kind = "urgent" if case.urgent else (f"found_{inp.source}" if found else "unverified")
        await notify.handler_card(tx, case, lin, kind)
    await save(tx, case)
    return case


# --- verify --------------------------------------------------------------------------------


async def confirm(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    case, lin = await act(tx, actor, case_id, rev, E.CONFIRM)
    transition(tx, case, E.CONFIRM, actor.id)
    case.verified = "confirmed"
    await notify.handler_card(tx, case, lin, "new")
    await save(tx, case)
    return case


async def reject(tx: Tx, actor: Actor, case_id: int, rev: int, reason: str) -> Case:
    reason = clean_text(reason, REASON_LIMIT)
    if not reason:
        raise DomainError("reason_needed")
    case, _ = await act(tx, actor, case_id, rev, E.REJECT)
    transition(tx, case, E.REJECT, actor.id, reason)
    case.verified = "rejected"
    case.reject_reason = reason
    case.closed_at = tx.now
    case.close_reason = "rejected"
    for hook in REJECT_HOOKS:
        await hook(tx, case)
    await notify.tell_reporter(
        tx, f"case:{case.id}:rejected", case,
        tx.texts.render("rejected", case_id=case.id, reason=reason),
    )
    await save(tx, case)
    return case


@dataclass(frozen=True)
class Refiled:
    """改类别 made: the case, and what the person who made it is told."""

    case: Case
    answer: str
    # The deadline stays where the person may not expect it (held, or passed): worth an
    # alert they close, not a passing notice.
    alert: bool = False


async def set_category(tx: Tx, actor: Actor, case_id: int, rev: int, code: str) -> Refiled:
    """改类别. The deadline follows the new category's SLA from the clock start, but a
    category change is no extension (issue 19, defect 8): a deadline that has passed stays,
    a later one stays where it is (more time is 延期, approved above), and none goes into the
    past. Urgency follows the category, both ways (defect 9). The history says what moved;
    the handlers get a fresh card."""
    case, lin = await act(tx, actor, case_id, rev, E.CATEGORY)
    cat = (await directory(tx.db)).categories.get(code)
    if cat is None or not cat.active:
        raise DomainError("bad_category")
    t = tx.texts
    if cat.code == case.category:
        return Refiled(case, t.plain("done_set_category"))
    old, new = (await notify.category_name(tx, case.category),
                await notify.category_name(tx, cat.code))
    before = case.deadline_at
    derived = deadline_of(tx.policy, case.clock_started_at, timedelta(seconds=cat.sla_seconds),
                          cat.sla_unit, case.extended_seconds)
    after, how = move_deadline(before, derived, tx.now, later=False)
    urgency = cat.urgent if cat.urgent != case.urgent else None
    case.category = cat.code
    case.urgent = cat.urgent
    hold_deadline(case, after, derived)
    said = dict(old=old, new=new, how=how.value, urgent=urgency,
                before=t.local_time(before), after=t.local_time(case.deadline_at),
                proposed=t.local_time(derived))
    note = t.plain("category_note", **said)
    event = transition(tx, case, E.CATEGORY, actor.id, note)
    if case.urgent and case.status == S.VERIFYING:
        # An urgent case does not wait for verification.
        transition(tx, case, E.CONFIRM, actor.id)
        case.verified = "skipped" if not _is_head(actor, lin) else "confirmed"
        await notify.handler_card(tx, case, lin, "urgent")
    elif case.status in HANDLING:
        # The category, the deadline and the urgency the handlers' cards show have changed:
        # a fresh card (the rev is kept, so it is told apart by the event).
        await tx.db.flush()
        await notify.handler_card(tx, case, lin, "category", note, key=f":k{event.id}")
    await save(tx, case)
    return Refiled(case, t.plain(f"done_set_category_{how.value}", **said),
                   alert=how in (Moved.HELD, Moved.PASSED))


# --- handle --------------------------------------------------------------------------------


async def accept(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    case, _ = await act(tx, actor, case_id, rev, E.ACCEPT)
    transition(tx, case, E.ACCEPT, actor.id)
    case.accepted_by_id = actor.id
    await save(tx, case)
    return case


async def assign(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    case, lin = await act(tx, actor, case_id, rev, E.ASSIGN)
    heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
    if not heads:
        raise DomainError("no_head")
    head = heads[0]
    transition(tx, case, E.ASSIGN, actor.id, head.name)
    case.accepted_by_id = case.accepted_by_id or actor.id
    case.assignee_id = head.id
    case.assignee_ack_at = None
    await notify.task_card(tx, case, lin, head, note=await notify.person_name(tx, actor.id))
    await save(tx, case)
    return case


async def acknowledge_task(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    case, _ = await act(tx, actor, case_id, rev, E.ACK)
    if case.assignee_ack_at is None:
        transition(tx, case, E.ACK, actor.id)
        case.assignee_ack_at = tx.now
        await save(tx, case)
    return case


async def task_done(tx: Tx, actor: Actor, case_id: int, rev: int, note: str = "") -> Case:
    case, lin = await act(tx, actor, case_id, rev, E.DONE)
    transition(tx, case, E.DONE, actor.id, clean_text(note, REASON_LIMIT) or None)
    case.assignee_id = None
    await notify.handler_card(tx, case, lin, "task_done", note=actor.name)
    await save(tx, case)
    return case


async def escalate(tx: Tx, actor: Actor, case_id: int, rev: int, reason: str) -> Case:
    reason = clean_text(reason, REASON_LIMIT)
    if not reason:
        raise DomainError("reason_needed")
    case, lin = await act(tx, actor, case_id, rev, E.ESCALATE)
    target = level_above(case.level)
    if target is None:
        raise DomainError("top_level", case_id=case.id)
    event = transition(tx, case, E.ESCALATE, actor.id, reason)
    await move(tx, case, lin, target, "escalated", reason, event)
    await save(tx, case)
    return case


async def send_back(tx: Tx, actor: Actor, case_id: int, rev: int, reason: str) -> Case:
    reason = clean_text(reason, REASON_LIMIT)
    if not reason:
        raise DomainError("reason_needed")
    case, lin = await act(tx, actor, case_id, rev, E.SEND_BACK)
    target = level_below(case.level)
    if target is None:
        raise DomainError("bottom_level", case_id=case.id)
    event = transition(tx, case, E.SEND_BACK, actor.id, reason)
    await move(tx, case, lin, target, "returned", reason, event)
    await save(tx, case)
    return case


async def move(tx: Tx, case: Case, lin: Lineage, target: Level, kind: str,
               note: str | None, event: CaseEvent, *, deferrable: bool = False,
               remind_key: str | None = None) -> None:
    """The case goes to `target`'s handlers: a card to each, or with `remind_key` (a timer's
    escalation) a line on their next reminder list."""
    # A request made to the supervisors above the old level no longer holds.
    for hook in hooks.workflow().moved:
        await hook(tx, case, lin)
    case.level = target
    case.assignee_id = None
    # The move's event says where the case went (the figures count escalations by level);
    # a move on up below overwrites it again.
    event.level = target.value
    if remind_key is not None:
        got = await handlers_at(tx.db, lin, target)
        await reminders.owe(tx, f"{remind_key}:{target.value}", got, case, lin, R.ESCALATED)
    else:
        got = await notify.handler_card(tx, case, lin, kind, note, deferrable=deferrable)
    if not got and target != Level.STREET and kind != "returned":
        # Nobody holds this level: the case goes on up rather than sit unseen.
        above = level_above(target)
        if above is not None:
            await move(tx, case, lin, above, kind, note, event, deferrable=deferrable,
                       remind_key=remind_key)


async def resolve(tx: Tx, actor: Actor, case_id: int, rev: int, result: str,
                  photos: list[str] | None = None) -> Case:
    result = clean_text(result)
    if not result:
        raise DomainError("result_needed")
    case, lin = await act(tx, actor, case_id, rev, E.RESOLVE)
    workflow = hooks.workflow()
    heads = await workflow.checkers(tx, case, lin) if workflow.checkers is not None else []
    transition(tx, case, E.RESOLVE_CHECK if heads else E.RESOLVE, actor.id, result)
    photos = (photos or [])[:10]
    case.result = result
    case.resolved_at = tx.now
    case.resolved_by_id = actor.id
    case.assignee_id = None
    for file_id in photos:
        tx.db.add(CasePhoto(case_id=case.id, file_id=file_id, kind="result"))
    await tx.db.flush()
    await leaving_handling(tx, case, lin)
    if heads and workflow.start_check is not None:
        await workflow.start_check(tx, case, lin, heads, photos)
    else:
        await to_rating(tx, case, lin, photos)
    await save(tx, case)
    return case


async def to_rating(tx: Tx, case: Case, lin: Lineage, photos: list[str]) -> None:
    """The result goes to the reporter with the rating buttons, and to the building's group."""
    await notify.tell_reporter(
        tx, f"case:{case.id}:r{case.round}:resolved", case,
        tx.texts.render("resolved_reporter", case_id=case.id, result=case.result or "",
                        category=await notify.category_name(tx, case.category)),
        buttons=notify.rating_buttons(tx, case), photos=photos[:10],
    )
    await notify.public_notice(tx, case, lin)


async def leaving_handling(tx: Tx, case: Case, lin: Lineage) -> None:
    """The case leaves its handler (resolved, suspended): what was asked of others lapses."""
    for hook in hooks.workflow().left_handling:
        await hook(tx, case, lin)


async def rework(tx: Tx, case: Case, lin: Lineage, actor_id: int | None, reason: str, *,
                 kind: Literal["reopened", "check_failed"]) -> None:
    """返工: back to the grid with the reason, in a new round, so the clock and every timer
    start again. 不满意 and a failed check are the same thing, counted as `round - 1`."""
    transition(tx, case, E.REWORK, actor_id, reason)
    case.round += 1
    case.level = Level.GRID
    case.result = None
    case.resolved_at = None
    case.resolved_by_id = None
    case.assignee_id = None
    case.clock_started_at = tx.now
    case.extended_seconds = 0
    case.checked = None
    case.checked_at = None
    await notify.handler_card(tx, case, lin, kind, note=reason)


# --- follow up -----------------------------------------------------------------------------


async def rate(tx: Tx, actor: Actor, case_id: int, rev: int, score: str,
               comment: str = "") -> Case:
    if score not in ("good", "fair", "bad"):
        raise DomainError("bad_input")
    case, lin = await act(tx, actor, case_id, rev, E.RATE if score != "bad" else Intent.RATE_BAD)
    comment = clean_text(comment, REASON_LIMIT)
    resolver = case.resolved_by_id
    if score == "bad":
        if not comment:
            raise DomainError("comment_needed")
        if case.status != S.RESOLVED:
            # Rework also leads from a check; a rating button cannot start that one.
            raise DomainError("stale", case_id=case.id)
        case.rating = "bad"
        case.rating_comment = comment
        await rework(tx, case, lin, actor.id, comment, kind="reopened")
    else:
        transition(tx, case, E.RATE, actor.id, tx.texts.plain(f"rating_{score}"))
        case.rating = score
        case.rating_comment = comment or None
        case.closed_at = tx.now
        case.close_reason = "rated"
        if resolver is not None:
            await notify.tell_staff(
                tx, f"case:{case.id}:r{case.round}:rated", [await person(tx, resolver)],
                case, lin, "rated", rating=tx.texts.label(f"rating_{score}"),
            )
    await save(tx, case)
    return case


async def person(tx: Tx, person_id: int) -> Person:
    found = await tx.db.get(Person, person_id)
    assert found is not None
    return found


# --- clock-driven --------------------------------------------------------------------------


async def advance_timers(tx: Tx, case: Case) -> list[str]:
    """Take the timer steps that have fallen due for `case` by now; returns what was done.

    Each step is recorded in `case_timer_steps` in this transaction, with the messages it
    makes owed, so a step is never taken twice and a crash forgets none. After a step that
    changes the case (a verification timeout, an escalation), the steps of its new status
    are derived again: a report nobody verified reaches the grid leader at its deadline and
    is overdue at once, as any case would be.
    """
    done: list[str] = []
    await _sync_deadline(tx, case)
    taken = await _steps_taken(tx, case) if case.status in TIMER_PHASE else set()
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    for _ in range(STEPS_PER_PASS):
        due = due_now(_pending(tx, case, taken), case, tx.policy, tx.now)
        if not due:
            break
        step = due[0]
        what = await _take(tx, case, lin, step, taken)
        tx.db.add(CaseTimerStep(case_id=case.id, round=case.round, step=step.name.value,
                                n=step.n, basis=step.basis, at=tx.now))
        taken.add(step.key)
        done.append(what)
    await tx.db.flush()
    await schedule(tx, case)
    return done


def _step_key(case: Case, step: Step) -> str:
    """The dedupe key of a step's messages: one per round, step and deadline."""
    return (f"case:{case.id}:r{case.round}:{step.name.value}:{step.n}"
            f":{int(step.basis.timestamp())}")


async def _take(tx: Tx, case: Case, lin: Lineage, step: Step, taken: set[SentKey]) -> str:
    key = _step_key(case, step)
    if step.name == StepName.VERIFY_REMIND:
        heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
        await reminders.owe(tx, key, heads, case, lin, R.VERIFY)
    elif step.name == StepName.VERIFY_TIMEOUT:
        heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
        transition(tx, case, E.VERIFY_TIMEOUT, None)
        case.verified = "unverified"
        await notify.tell_staff(tx, key, heads, case, lin, "verify_timeout", deferrable=True)
        await notify.handler_card(tx, case, lin, "unverified", deferrable=True)
    elif step.name == StepName.DUE_SOON:
        await reminders.owe(tx, key, await owners(tx, case, lin), case, lin, R.DUE_SOON)
    elif step.name == StepName.OVERDUE:
        # The count people read is of the alerts they got for this deadline.
        count = 1 + sum(1 for name, _, basis in taken
                        if name == StepName.OVERDUE and basis == step.basis)
        record(tx, case, E.OVERDUE, None, str(count))
        await reminders.owe(tx, key, await owners(tx, case, lin), case, lin, R.OVERDUE,
                            n=count)
    elif step.name == StepName.ESCALATE:
        target = Level.COMMUNITY if step.n == 1 else Level.STREET
        if _rank(case.level) >= _rank(target):
            return f"escalate_{target.value}_not_needed"
        event = transition(tx, case, E.AUTO_ESCALATE, None)
        # The supervisors find it on their next reminder list, with the button to its card.
        await move(tx, case, lin, target, "escalated", tx.texts.plain("overdue_note"), event,
                   deferrable=True, remind_key=key)
        return f"escalate_{target.value}"
    elif step.name == StepName.RATING_TIMEOUT:
        transition(tx, case, E.RATING_TIMEOUT, None)
        case.closed_at = tx.now
        case.close_reason = "no_feedback"
    else:
        # The workflow's own steps (request timeout, suspension review, check timeout,
        # whistle escalation), registered by bot.workflow.
        return await hooks.take_step(tx, case, lin, step, key)
    return step.name.value


def _rank(level: str) -> int:
    return [Level.GRID, Level.COMMUNITY, Level.STREET].index(Level(level))


async def owners(tx: Tx, case: Case, lin: Lineage) -> list[Person]:
    """Who a reminder goes to: the handlers of the case's level, and the assignee if any."""
    people = await handlers_at(tx.db, lin, case.level)
    if case.assignee_id is not None and all(p.id != case.assignee_id for p in people):
        people.append(await person(tx, case.assignee_id))
    return people


async def due_cases(tx: Tx, limit: int = 200) -> list[int]:
    rows = await tx.db.scalars(
        select(Case.id)
        .where(Case.next_check_at.is_not(None), Case.next_check_at <= tx.now)
        .order_by(Case.next_check_at)
        .limit(limit)
    )
    return list(rows.all())
