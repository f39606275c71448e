"""延期: the handler of a case asks the level above for more time.

The handler picks a length (1h to 30d) and writes a reason; the request goes to the
supervisors of the nearest level above through `case_requests` (one mechanism with 挂账).
Approval adds the length to the round's `extended_seconds`, and the deadline is derived again
from the case's columns, so the due-soon, overdue and escalation steps of the timer model
follow the new deadline with no other change: they are keyed by their basis, the deadline.

Refusals are checked when the button is pressed, again when the request is made, since
the case or the policy may change while the handler types, and again when it is approved
(`recheck`): a deadline passed or a limit lowered meanwhile refuses the approval.

A working-time case (its SLA in `wh` or `wd`) is extended in working time: "1 天" is one
working day of the district's calendar (bot.cases.deadlines.extend), and the card says so.
On approval the handler gets a fresh card with the new deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.cases import lifecycle as cases
from bot.cases import notify
from bot.cases.events import EventKind
from bot.cases.lifecycle import HANDLING, Intent
from bot.errors import DomainError
from bot.org import roles as org
from bot.org.durations import format_duration, parse_duration
from bot.workflow import case_requests
from bot.workflow.case_requests import RequestKind

if TYPE_CHECKING:
    from bot.context import Tx
    from bot.org.roles import Actor, Lineage
    from storage.models import Case, CaseRequest

# Whether the cards offer 申请延期.
ENABLED = True

# What may be asked for at once: from an hour to a month, in whole hours.
MIN_SECONDS = 3600
MAX_SECONDS = 30 * 86400
# The lengths offered as buttons (`xl:<code>`); any other is typed, like `2d` or `12h`.
LENGTHS: dict[str, int] = {"1d": 86400, "3d": 3 * 86400, "7d": 7 * 86400}


def parse_length(text: str) -> int:
    """Seconds of a typed length (`2d`, `12h`); DomainError("bad_duration") otherwise."""
    try:
        seconds = parse_duration(text.strip().lower())
    except ValueError:
        raise DomainError("bad_duration") from None
    _check_length(seconds)
    return seconds


def _check_length(seconds: int) -> None:
    if not MIN_SECONDS <= seconds <= MAX_SECONDS or seconds % 3600:
        raise DomainError("bad_duration")


def _enabled() -> None:
    # Off (a deployment that turns the feature off): a forged 申请延期 is no button of ours.
    if not ENABLED:
        raise DomainError("bad_button")


def _refusals(tx: Tx, case: Case) -> None:
    """The extension's own rules, after the actor's permission and the case's status."""
    if tx.policy.max_extensions <= 0:
        raise DomainError("extension_off", case_id=case.id)
    if case.extension_count >= tx.policy.max_extensions:
        raise DomainError("extension_limit", case_id=case.id,
                          limit=tx.policy.max_extensions)
    if tx.now >= case.deadline_at:
        raise DomainError("past_deadline", case_id=case.id)
    if case.request_at is not None:
        raise DomainError("request_pending", case_id=case.id)


async def check_request(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    """Whether `actor` may ask for an extension of the case now (before any prompt)."""
    _enabled()
    case = await cases.check(tx, actor, case_id, rev, Intent.EXTEND)
    _refusals(tx, case)
    lin = await org.lineage_of(tx.db, case.building_id, case.unit_id)
    await case_requests.approvers_for(tx, case, lin, actor.id)
    return case


async def recheck(tx: Tx, case: Case, lin: Lineage, req: CaseRequest) -> None:
    """The rules of the request, again when it is approved: a `lapsed_*` refusal for the one
    that no longer holds (the approval is then refused with it)."""
    if not ENABLED or tx.policy.max_extensions <= 0:
        raise DomainError("lapsed_extension_off", case_id=case.id)
    if case.extension_count >= tx.policy.max_extensions:
        raise DomainError("lapsed_extension_limit", case_id=case.id,
                          count=case.extension_count, limit=tx.policy.max_extensions)
    if tx.now >= case.deadline_at:
        raise DomainError("lapsed_past_deadline", case_id=case.id,
                          text=tx.texts.local_time(case.deadline_at))
    await case_requests.requester_holds(tx, case, lin, req)


async def request(tx: Tx, actor: Actor, case_id: int, rev: int, seconds: int,
                  reason: str) -> CaseRequest:
    """Ask for `seconds` more, with a reason: a request to the supervisors above. Commits."""
    _enabled()
    _check_length(seconds)
    case, lin = await cases.act(tx, actor, case_id, rev, Intent.EXTEND)
    if case.status not in HANDLING:
        raise DomainError("stale", case_id=case.id)
    _refusals(tx, case)
    req = await case_requests.open_request(tx, actor, case, lin, RequestKind.EXTENSION,
                                           reason, seconds=seconds)
    await cases.save(tx, case)
    return req


async def approve(tx: Tx, case: Case, lin: Lineage, req: CaseRequest, actor: Actor) -> None:
    """The approval hook `approvals.answer` calls: the request is already marked
    approved and `case.request_at` cleared; the caller tells the requester and saves.

    The length is added to this round's deadline as it stands, whenever the answer comes (in
    working time for a working-time case); the handler gets a fresh card with it.
    """
    seconds = req.seconds or 0
    case.extended_seconds += seconds
    case.extension_count += 1
    # The deadline the event, the card and the answer show is the timer model's.
    await cases.schedule(tx, case)
    note = f"+{format_duration(seconds)} → {tx.texts.local_time(case.deadline_at)}"
    cases.record(tx, case, EventKind.EXTENSION_APPROVE, actor.id, note)
    # The approval keeps the rev (a handler typing a result meanwhile is not made stale), so
    # the card is told apart from the rev's own by the request.
    await notify.handler_card(tx, case, lin, "extended", key=f":x{req.id}")
