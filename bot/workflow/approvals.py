"""Answering a request to the level above (同意 / 不同意): one answer counts, the feature's
rules are checked again (an approval that no longer applies is refused with its reason), its
approval takes effect, and the requester is told. Above the request mechanism
(bot/workflow/case_requests.py) and the features built on it (extensions, suspension)."""

from __future__ import annotations

from sqlalchemy import update

from bot.cases import lifecycle as cases
from bot.context import Tx
from bot.errors import DomainError
from bot.org.roles import Actor
from bot.user_text import REASON_LIMIT, clean_text
from bot.workflow import case_requests, extensions, suspension
from bot.workflow.case_requests import RequestKind, RequestStatus
from storage.models import CaseRequest


async def answer(tx: Tx, actor: Actor, request_id: int, approve: bool,
                 note: str = "") -> CaseRequest:
    """同意 or 不同意 (with a reason); the requester is told either way, and the case saved."""
    note = clean_text(note, REASON_LIMIT)
    if not approve and not note:
        raise DomainError("reason_needed")
    req, case, lin, holds = await case_requests.load_pending(tx, actor, request_id)
    if not holds:
        # The case moved on without the request being withdrawn (it always is; belt and
        # braces): withdraw it now, for good, and say the button is stale.
        await case_requests.withdraw(tx, case, "stale")
        await cases.save(tx, case)
        raise DomainError("request_stale")
    if approve:
        # Check at effect, not only at request: every rule the request was checked against.
        recheck = (extensions.recheck if req.kind == RequestKind.EXTENSION
                   else suspension.recheck)
        try:
            await recheck(tx, case, lin, req)
        except DomainError as lapsed:
            if not lapsed.code.startswith("lapsed_"):
                raise
            raise await case_requests.refuse_lapsed(tx, case, lin, req, actor,
                                                    lapsed) from None
    status = RequestStatus.APPROVED if approve else RequestStatus.DECLINED
    # Compare and set: of two supervisors answering at once, one answer counts.
    result = await tx.db.execute(
        update(CaseRequest)
        .where(CaseRequest.id == req.id, CaseRequest.status == RequestStatus.PENDING)
        .values(status=status, answered_by_id=actor.id, answered_at=tx.now,
                answer_note=note or None))
    if getattr(result, "rowcount", 1) == 0:
        raise DomainError("request_stale")
    case.request_at = None
    if approve:
        hook = extensions.approve if req.kind == RequestKind.EXTENSION else suspension.approve
        await hook(tx, case, lin, req, actor)
    else:
        cases.record(tx, case, case_requests.events_of(req).decline, actor.id, note)
    # The deadline the requester is told is the one the approval made.
    await cases.schedule(tx, case)
    await case_requests.tell_requester(tx, case, lin, req, status, note or None)
    await tx.db.commit()
    return req
