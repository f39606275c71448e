"""Requests to the level above: an extension (延期) or a suspension (挂账), one mechanism.

A handler asks; the supervisors of the nearest level above with anyone in it get the request
with 同意 / 不同意; the requester is told the answer. Whoever asks never answers: the
requester is left out of the approvers (a 社区书记兼网格长's request goes to the community's
other supervisors, or up to the street), and may not press their own request's buttons.
Every rule the request was checked against is checked again when it is approved (each
feature's `recheck`); one that no longer holds refuses the approval with its reason
(`refuse_lapsed`). The request is a row of its own, and the
case carries only `request_at` (the timer model's REQUEST_TIMEOUT counts from it), so answering
leaves the case's rev alone: the handler accepting or assigning meanwhile does not make the
approval stale, and the request's own status does. What approval does is each feature's hook
(`extensions.approve`, `suspension.approve`), imported when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update

from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.buttons import RequestAnswer, request_button
from bot.cases.deadlines import Step, add_time, extend
from bot.cases.events import EventKind
from bot.cases.lifecycle import HANDLING
from bot.context import Tx
from bot.errors import DomainError
from bot.org import roles as org
from bot.org.durations import format_duration
from bot.org.roles import Actor, Level, Lineage
from bot.user_text import REASON_LIMIT, clean_text
from storage.models import Case, CaseRequest, Person


class RequestKind(StrEnum):
    """What a request asks for (`case_requests.kind`; stored, never renamed)."""

    EXTENSION = "extension"  # 延期
    SUSPENSION = "suspension"  # 挂账


class RequestStatus(StrEnum):
    """Where a request stands (`case_requests.status`; stored, never renamed); the answer the
    requester is told (`request_answered`) is one of the last five."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"  # the case moved or left its handlers before an answer
    EXPIRED = "expired"  # nobody answered within `extension_answer_within`
    # 同意 pressed when a rule of the request no longer held (the review date had come, the
    # deadline had passed, …): refused with that reason, in `answer_note`.
    REFUSED = "refused"


KINDS: tuple[RequestKind, ...] = tuple(RequestKind)


@dataclass(frozen=True)
class RequestEvents:
    """The events a request of one kind records on its case. Approval has none of its own
    here: an extension records EXTENSION_APPROVE, a suspension makes the SUSPEND transition."""

    request: EventKind
    decline: EventKind
    withdraw: EventKind
    expire: EventKind


EVENTS: dict[RequestKind, RequestEvents] = {
    RequestKind.EXTENSION: RequestEvents(
        EventKind.EXTENSION_REQUEST, EventKind.EXTENSION_DECLINE,
        EventKind.EXTENSION_WITHDRAW, EventKind.EXTENSION_EXPIRE),
    RequestKind.SUSPENSION: RequestEvents(
        EventKind.SUSPENSION_REQUEST, EventKind.SUSPENSION_DECLINE,
        EventKind.SUSPENSION_WITHDRAW, EventKind.SUSPENSION_EXPIRE),
}


def events_of(req: CaseRequest) -> RequestEvents:
    return EVENTS[RequestKind(req.kind)]


@dataclass(frozen=True)
class Approvers:
    """Who answers a request: the level and its people, and the level passed over because
    the requester is its only holder (None: the nearest level above answers)."""

    level: Level
    people: list[Person]
    skipped: Level | None = None


async def approvers_for(tx: Tx, case: Case, lin: Lineage, requester_id: int) -> Approvers:
    """The approvers of a request `requester_id` makes now, never the requester; refused,
    plainly, where there is nobody else above."""
    found = await org.approvers(tx.db, lin, case.level, requester_id)
    nearest = await org.approvers(tx.db, lin, case.level)
    if found is None:
        # Somebody is above, but only the requester: say so, not "nobody is appointed".
        raise DomainError("no_other_approver" if nearest else "no_approver", case_id=case.id)
    level, people = found
    return Approvers(level, people,
                     nearest[0] if nearest is not None and nearest[0] != level else None)


def extended_deadline(tx: Tx, case: Case, seconds: int) -> datetime:
    """The case's deadline once `seconds` more are approved: in working time for a case
    whose SLA is (`wh`, `wd`), as the timer model will count it."""
    return extend(tx.policy, case.deadline_at, seconds, tx.policy.in_working_time(case))


async def open_request(tx: Tx, actor: Actor, case: Case, lin: Lineage, kind: RequestKind,
                       reason: str, *, seconds: int | None = None,
                       review_at: datetime | None = None,
                       asked_review_at: datetime | None = None) -> CaseRequest:
    """Record the request and send it to the approvers. The caller has checked the actor and
    the case (`cases.act`), and saves. `asked_review_at`: the review date the handler chose,
    when `review_at` was moved off a day off."""
    kind = RequestKind(kind)
    reason = clean_text(reason, REASON_LIMIT)
    if not reason:
        raise DomainError("reason_needed")
    if case.request_at is not None:
        raise DomainError("request_pending", case_id=case.id)
    found = await approvers_for(tx, case, lin, actor.id)
    level, people = found.level, found.people
    req = CaseRequest(
        case_id=case.id, kind=kind, status=RequestStatus.PENDING, level=case.level,
        approver_level=level.value, requested_by_id=actor.id, requested_at=tx.now,
        reason=reason, seconds=seconds, review_at=review_at,
    )
    tx.db.add(req)
    await tx.db.flush()
    case.request_at = tx.now
    cases.record(tx, case, EVENTS[kind].request, actor.id, _request_note(tx, req))
    view = await notify.case_view(tx, case, lin)
    t = tx.texts
    text = t.render(
        "request_card", case=view, kind=kind, requester=actor.name, reason=reason,
        length=seconds, working=tx.policy.in_working_time(case),
        new_deadline_at=extended_deadline(tx, case, seconds) if seconds else None,
        review_at=review_at,
        asked_review_at=asked_review_at if asked_review_at != review_at else None,
        skipped=(t.label("request_skipped", kind=t.label(f"level_{found.skipped}"),
                         name=t.label(f"level_{level}")) if found.skipped else None),
        answer_by=_answer_by(tx, req),
    )
    buttons = [[request_button(t.plain("btn_approve"), req.id, RequestAnswer.APPROVE),
                request_button(t.plain("btn_decline"), req.id, RequestAnswer.DECLINE)]]
    for person in people:
        await notify.send_to_person(
            tx, f"case:{case.id}:req:{req.id}:{person.id}", person.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, buttons=buttons,
        )
    return req


def _answer_by(tx: Tx, req: CaseRequest) -> datetime | None:
    within = tx.policy.extension_answer_within
    return add_time(tx.policy, req.requested_at, within) if within else None


def _request_note(tx: Tx, req: CaseRequest) -> str:
    """The event's note: `+2d：reason`, or the reason and the review date."""
    if req.kind == RequestKind.EXTENSION and req.seconds:
        return f"+{format_duration(req.seconds)}：{req.reason}"
    if req.review_at is not None:
        return f"{req.reason}（{tx.texts.local_time(req.review_at, '%Y-%m-%d')}）"
    return req.reason


async def pending(tx: Tx, case: Case) -> CaseRequest | None:
    """The case's pending request, if any (at most one: `request_at` guards the opening)."""
    if case.request_at is None:
        return None
    return await tx.db.scalar(
        select(CaseRequest).where(CaseRequest.case_id == case.id,
                                  CaseRequest.status == RequestStatus.PENDING)
        .order_by(CaseRequest.id.desc()).limit(1))


async def load_pending(tx: Tx, actor: Actor, request_id: int
                ) -> tuple[CaseRequest, Case, Lineage, bool]:
    """The pending request, its case (locked) and place, and whether it still holds."""
    if not 0 < request_id <= cases.MAX_CASE_ID:
        raise DomainError("request_stale")
    req = await tx.db.get(CaseRequest, request_id, populate_existing=True)
    if req is None or req.status != RequestStatus.PENDING:
        raise DomainError("request_stale")
    case, lin = await cases.get_case(tx, req.case_id)
    if req.requested_by_id == actor.id:
        # Whoever asks never answers, though their roles may let them (社区书记兼网格长).
        raise DomainError("own_request", case_id=case.id)
    cases.require(actor.handles(lin, req.approver_level))
    holds = case.status in HANDLING and case.level == req.level and case.request_at is not None
    return req, case, lin, holds


async def check_answer(tx: Tx, actor: Actor, request_id: int) -> CaseRequest:
    """Whether `actor` may answer the request now (before asking a decline's reason)."""
    req, _, _, holds = await load_pending(tx, actor, request_id)
    if not holds:
        raise DomainError("request_stale")
    return req


async def requester_holds(tx: Tx, case: Case, lin: Lineage, req: CaseRequest) -> None:
    """The "who asks" rule again, at the approval: the requester still holds the case at its
    level (the registry may have moved them on meanwhile)."""
    if req.requested_by_id is not None:
        requester = await org.load_actor(tx.db, req.requested_by_id)
        if await org.holds_level(tx.db, requester, lin, case.level):
            return
    raise DomainError("lapsed_requester", case_id=case.id)


async def refuse_lapsed(tx: Tx, case: Case, lin: Lineage, req: CaseRequest, actor: Actor,
                        lapsed: DomainError) -> DomainError:
    """同意 pressed on a request a rule of which no longer holds: the request is answered as
    refused, with the rule's reason (`lapsed`, a `lapsed_*` label), the requester is told and
    the case saved. Returns the refusal to show the supervisor; request_stale if another
    answer came first."""
    reason = tx.texts.plain(lapsed.code, **lapsed.context)
    result = await tx.db.execute(
        update(CaseRequest)
        .where(CaseRequest.id == req.id, CaseRequest.status == RequestStatus.PENDING)
        .values(status=RequestStatus.REFUSED, answered_by_id=actor.id, answered_at=tx.now,
                answer_note=reason))
    if getattr(result, "rowcount", 1) == 0:
        return DomainError("request_stale")
    case.request_at = None
    # Nobody declined it: the rule did, so the event has no actor, and the reason as note.
    cases.record(tx, case, events_of(req).decline, None, reason)
    await tell_requester(tx, case, lin, req, RequestStatus.REFUSED, reason)
    await cases.save(tx, case)
    return DomainError("request_refused", case_id=case.id, text=reason,
                       kind=tx.texts.plain(f"request_kind_{req.kind}"))


async def withdraw_moved(tx: Tx, case: Case, lin: Lineage) -> None:
    """The case moved to another level: its request to the old level's supervisors lapses."""
    if case.request_at is not None:
        await withdraw(tx, case, "moved")


async def withdraw_left(tx: Tx, case: Case, lin: Lineage) -> None:
    """The case left its handlers (resolved, suspended, merged): its request lapses."""
    if case.request_at is not None:
        await withdraw(tx, case, "left")


async def withdraw(tx: Tx, case: Case, why: str) -> None:
    """The case left the level or the handling: its pending request lapses (`why` is for the
    log of the caller; the event says withdrawn)."""
    req = await pending(tx, case)
    case.request_at = None
    if req is None:
        return
    req.status = RequestStatus.WITHDRAWN
    req.answered_at = tx.now
    cases.record(tx, case, events_of(req).withdraw, None)
    lin = await org.lineage_of(tx.db, case.building_id, case.unit_id)
    await tell_requester(tx, case, lin, req, RequestStatus.WITHDRAWN, None)


async def expire_due(tx: Tx, case: Case, lin: Lineage, step: Step, key: str) -> str:
    """REQUEST_TIMEOUT: nobody answered within `extension_answer_within`; declined."""
    req = await pending(tx, case)
    case.request_at = None
    if req is None:
        return step.name.value
    req.status = RequestStatus.EXPIRED
    req.answered_at = tx.now
    expired = events_of(req).expire
    cases.record(tx, case, expired, None)
    await tell_requester(tx, case, lin, req, RequestStatus.EXPIRED, None, deferrable=True)
    return expired.value


async def tell_requester(tx: Tx, case: Case, lin: Lineage, req: CaseRequest,
                         outcome: RequestStatus, note: str | None, *,
                         deferrable: bool = False) -> None:
    if req.requested_by_id is None:
        return
    text = tx.texts.render(
        "request_answered", case_id=case.id, kind=req.kind, outcome=outcome, note=note,
        deadline_at=case.deadline_at, review_at=req.review_at,
    )
    await notify.send_to_person(
        tx, f"case:{case.id}:req:{req.id}:{outcome}", req.requested_by_id, text, case=case,
        fallback_chat_id=lin.grid.chat_id,
        not_before=notify.quiet_delay(tx, case) if deferrable else None,
    )
