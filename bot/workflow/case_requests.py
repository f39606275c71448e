"""Requests to the level above: an extension (延期) or a suspension (挂账), one mechanism.

A handler asks; the supervisors of the nearest level above with anyone in it get the request
with 同意 / 不同意; the requester is told the answer. The request is a row of its own, and the
case carries only `request_at` (the timer model's REQUEST_TIMEOUT counts from it), so answering
leaves the case's rev alone: the handler accepting or assigning meanwhile does not make the
approval stale, and the request's own status does. What approval does is each feature's hook
(`extensions.approve`, `suspension.approve`), imported when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select

from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.buttons import RequestAnswer, request_button
from bot.cases.deadlines import Step, add_time
from bot.cases.events import EventKind
from bot.cases.lifecycle import HANDLING
from bot.context import Tx
from bot.errors import DomainError
from bot.org import roles as org
from bot.org.durations import format_duration
from bot.org.roles import Actor, Lineage
from bot.user_text import REASON_LIMIT, clean_text
from storage.models import Case, CaseRequest


class RequestKind(StrEnum):
    """What a request asks for (`case_requests.kind`; stored, never renamed)."""

    EXTENSION = "extension"  # 延期
    SUSPENSION = "suspension"  # 挂账


class RequestStatus(StrEnum):
    """Where a request stands (`case_requests.status`; stored, never renamed); the answer the
    requester is told (`request_answered`) is one of the last four."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"  # the case moved or left its handlers before an answer
    EXPIRED = "expired"  # nobody answered within `extension_answer_within`


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


async def open_request(tx: Tx, actor: Actor, case: Case, lin: Lineage, kind: RequestKind,
                       reason: str, *, seconds: int | None = None,
                       review_at: datetime | None = None) -> CaseRequest:
    """Record the request and send it to the approvers. The caller has checked the actor and
    the case (`cases.act`), and saves."""
    kind = RequestKind(kind)
    reason = clean_text(reason, REASON_LIMIT)
    if not reason:
        raise DomainError("reason_needed")
    if case.request_at is not None:
        raise DomainError("request_pending", case_id=case.id)
    found = await org.approvers(tx.db, lin, case.level)
    if found is None:
        raise DomainError("no_approver", case_id=case.id)
    level, people = found
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
        length=seconds,
        new_deadline_at=(add_time(tx.policy, case.deadline_at, _seconds(seconds))
                         if seconds else None),
        review_at=review_at, answer_by=_answer_by(tx, req),
    )
    buttons = [[request_button(t.plain("btn_approve"), req.id, RequestAnswer.APPROVE),
                request_button(t.plain("btn_decline"), req.id, RequestAnswer.DECLINE)]]
    for person in people:
        await notify.send_to_person(
            tx, f"case:{case.id}:req:{req.id}:{person.id}", person.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, buttons=buttons,
        )
    return req


def _seconds(seconds: int | None) -> timedelta:
    return timedelta(seconds=seconds or 0)


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
    cases.require(actor.handles(lin, req.approver_level))
    holds = case.status in HANDLING and case.level == req.level and case.request_at is not None
    return req, case, lin, holds


async def check_answer(tx: Tx, actor: Actor, request_id: int) -> CaseRequest:
    """Whether `actor` may answer the request now (before asking a decline's reason)."""
    req, _, _, holds = await load_pending(tx, actor, request_id)
    if not holds:
        raise DomainError("request_stale")
    return req


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
