"""A person's data: everything held about them, exported; or erased, keeping the ledger.

Erasing keeps each case a person reported (category, place, times, status, result, rating)
but nothing that leads back to them: the case no longer names a reporter or submitter, phone
numbers and their name are masked in the case's texts, the audit events they acted in keep
the action without the actor, messages addressed to them are deleted, and so are their
conversation state, their photos waiting to join a report, the updates received from them
and their own row. The requests they made or answered (延期, 挂账) and the whistles they called,
acknowledged or answered (吹哨报到) keep what was asked and done without naming them; their
patrols (巡查) keep the grid, times and buildings covered, without them, their points, photos
and notes; the care visits they recorded (走访) stay on the household's record without them.
A person
who still holds a role in the registry, or is still a department's contact, is not erased:
the registry would only bring them back; they are removed from the registry file first.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.cases.notify import mask_phones
from storage.models import (
    BindRequest,
    CareHousehold,
    CareVisit,
    Case,
    CaseEvent,
    CaseFollower,
    CasePhoto,
    CaseRequest,
    Department,
    DepartmentMember,
    DuplicateOffer,
    FsmRecord,
    InboxUpdate,
    Node,
    Notice,
    NoticeCopy,
    Outbox,
    Patrol,
    PatrolBuilding,
    PatrolItem,
    PatrolPoint,
    PendingPhoto,
    Person,
    Role,
    Whistle,
)

PLACEHOLDER = "***"
# A name shorter than this is not searched for in other people's text: it would match words.
MIN_NAME = 2


class PrivacyError(Exception):
    """Why a request cannot be carried out; one line for the person at the terminal."""


# --- finding what is held ------------------------------------------------------------------


def _involves(value: Any, user_id: int) -> bool:
    """Whether a Telegram object (an update's JSON) holds the user or their private chat."""
    if isinstance(value, dict):
        if value.get("id") == user_id:
            return True
        return any(_involves(v, user_id) for v in value.values())
    if isinstance(value, list):
        return any(_involves(v, user_id) for v in value)
    return False


def _fsm_owner(key: str) -> tuple[str, str]:
    """(chat id, user id) of an FSM key `bot:chat:user:thread:business:destiny`."""
    parts = key.split(":")
    return (parts[1], parts[2]) if len(parts) > 2 else ("", "")


@dataclass
class Held:
    person: Person | None
    roles: list[tuple[str, Node]]
    cases: list[Case]  # reported or submitted by them
    handled: list[Case]  # taken, resolved or handed to them as staff
    events: list[CaseEvent]  # they acted in
    outbox: list[Outbox]  # addressed to them
    fsm: list[FsmRecord]
    pending: list[PendingPhoto]
    inbox: list[InboxUpdate]
    binds: list[BindRequest]  # /bind questions waiting for their answer
    requests: list[CaseRequest]  # extension / suspension requests they made or answered
    whistles: list[Whistle]  # departments they called in, or answered for
    departments: list[Department]  # they are a contact of, as the registry says
    follows: list[CaseFollower]  # cases they follow (是同一问题, 合并)
    offers: list[DuplicateOffer]  # 是同一问题 questions put to them, with the report held
    notices: list[Notice]  # notices they sent
    confirmations: list[NoticeCopy]  # notices they confirmed with 已阅
    patrols: list[Patrol] = field(default_factory=list)  # 巡查 they walked
    visits: list[CareVisit] = field(default_factory=list)  # 走访 they recorded

    @property
    def anything(self) -> bool:
        return any((self.person, self.roles, self.cases, self.handled, self.events,
                    self.outbox, self.fsm, self.pending, self.inbox, self.binds,
                    self.requests, self.whistles, self.departments, self.follows,
                    self.offers, self.notices, self.confirmations, self.patrols,
                    self.visits))


async def _held(db: AsyncSession, user_id: int) -> Held:
    person = await db.get(Person, user_id)
    roles = [(r, n) for r, n in (await db.execute(
        select(Role.role, Node).join(Node, Node.id == Role.node_id)
        .where(Role.person_id == user_id).order_by(Role.role, Node.code))).all()]
    cases = list((await db.scalars(
        select(Case).where(or_(Case.reporter_id == user_id, Case.submitted_by_id == user_id))
        .order_by(Case.id))).all())
    handled = list((await db.scalars(
        select(Case).where(or_(Case.accepted_by_id == user_id, Case.resolved_by_id == user_id,
                               Case.assignee_id == user_id))
        .order_by(Case.id))).all())
    events = list((await db.scalars(
        select(CaseEvent).where(CaseEvent.actor_id == user_id).order_by(CaseEvent.id))).all())
    outbox = list((await db.scalars(
        select(Outbox).where(or_(Outbox.person_id == user_id, Outbox.chat_id == user_id))
        .order_by(Outbox.id))).all())
    uid = str(user_id)
    fsm = [row for row in (await db.scalars(
        select(FsmRecord).where(FsmRecord.key.contains(f":{uid}:")))).all()
        if uid in _fsm_owner(row.key)]
    pending = list((await db.scalars(
        select(PendingPhoto).where(or_(PendingPhoto.user_id == user_id,
                                       PendingPhoto.chat_id == user_id,
                                       PendingPhoto.on_behalf_of_id == user_id))
        .order_by(PendingPhoto.id))).all())
    inbox = [row for row in (await db.scalars(
        select(InboxUpdate).where(InboxUpdate.payload.is_not(None),
                                  cast(InboxUpdate.payload, Text).contains(uid))
        .order_by(InboxUpdate.update_id))).all()
        if _involves(row.payload, user_id)]
    binds = list((await db.scalars(
        select(BindRequest).where(BindRequest.person_id == user_id)
        .order_by(BindRequest.id))).all())
    requests = list((await db.scalars(
        select(CaseRequest).where(or_(CaseRequest.requested_by_id == user_id,
                                      CaseRequest.answered_by_id == user_id))
        .order_by(CaseRequest.id))).all())
    whistles = list((await db.scalars(
        select(Whistle).where(or_(Whistle.called_by_id == user_id,
                                  Whistle.acked_by_id == user_id,
                                  Whistle.done_by_id == user_id))
        .order_by(Whistle.id))).all())
    departments = list((await db.scalars(
        select(Department).join(DepartmentMember, DepartmentMember.department_id == Department.id)
        .where(DepartmentMember.person_id == user_id).order_by(Department.code))).all())
    follows = list((await db.scalars(
        select(CaseFollower).where(CaseFollower.person_id == user_id)
        .order_by(CaseFollower.id))).all())
    offers = list((await db.scalars(
        select(DuplicateOffer).where(DuplicateOffer.person_id == user_id)
        .order_by(DuplicateOffer.id))).all())
    notices = list((await db.scalars(
        select(Notice).where(Notice.sender_id == user_id).order_by(Notice.id))).all())
    confirmations = list((await db.scalars(
        select(NoticeCopy).where(NoticeCopy.confirmed_by_id == user_id)
        .order_by(NoticeCopy.id))).all())
    held = Held(person, roles, cases, handled, events, outbox, fsm, pending, inbox, binds,
                requests, whistles, departments, follows, offers, notices, confirmations)
    held.patrols = list((await db.scalars(
        select(Patrol).where(Patrol.person_id == user_id).order_by(Patrol.id))).all())
    held.visits = list((await db.scalars(
        select(CareVisit).where(CareVisit.person_id == user_id).order_by(CareVisit.id))).all())
    return held


async def _patrols(db: AsyncSession, held: Held) -> list[dict[str, Any]]:
    """Their patrols (巡查) with the points, photos and notes: their whereabouts."""
    out = []
    for patrol in held.patrols:
        points = (await db.scalars(select(PatrolPoint).where(PatrolPoint.patrol_id == patrol.id)
                                   .order_by(PatrolPoint.at, PatrolPoint.id))).all()
        items = (await db.scalars(select(PatrolItem).where(PatrolItem.patrol_id == patrol.id)
                                  .order_by(PatrolItem.at, PatrolItem.id))).all()
        covered = (await db.scalars(
            select(Node.code).join(PatrolBuilding, PatrolBuilding.building_id == Node.id)
            .where(PatrolBuilding.patrol_id == patrol.id).order_by(PatrolBuilding.at))).all()
        out.append({
            "id": patrol.id, "grid": await _code(db, patrol.grid_id),
            "started_at": _time(patrol.started_at), "ended_at": _time(patrol.ended_at),
            "ended_by_timeout": patrol.ended_by_timeout, "note": patrol.note,
            "buildings": list(covered),
            "points": [{"at": _time(p.at), "lat": p.lat, "lon": p.lon, "live": p.live}
                       for p in points],
            "items": [{"at": _time(i.at), "text": i.text, "file_id": i.file_id, "lat": i.lat,
                       "lon": i.lon, "case_id": i.case_id} for i in items],
        })
    return out


def _as(row: object, user_id: int, *columns: str) -> list[str]:
    """Which of a row's person columns (`called_by` for `called_by_id` …) name the user."""
    return [c for c in columns if getattr(row, f"{c}_id") == user_id]


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _household_building(db: AsyncSession, household_id: int) -> str | None:
    household = await db.get(CareHousehold, household_id)
    return await _code(db, household.building_id) if household is not None else None


async def _code(db: AsyncSession, node_id: int | None) -> str | None:
    if node_id is None:
        return None
    node = await db.get(Node, node_id)
    return node.code if node is not None else None


# --- export --------------------------------------------------------------------------------


async def export_person(db: AsyncSession, user_id: int, now: datetime) -> dict[str, Any]:
    """Everything held about a person, as JSON-ready data."""
    held = await _held(db, user_id)
    if not held.anything:
        raise PrivacyError(f"nothing is held about Telegram user {user_id}")
    p = held.person
    wanted = {w.department_id for w in held.whistles}
    departments = {d_id: code for d_id, code in (await db.execute(
        select(Department.id, Department.code).where(Department.id.in_(wanted)))).all()
    } if wanted else {}
    cases = []
    for case in held.cases:
        photos = (await db.scalars(
            select(CasePhoto.file_id).where(CasePhoto.case_id == case.id,
                                            CasePhoto.kind == "report")
            .order_by(CasePhoto.id))).all()
        cases.append({
            "id": case.id,
            "as": [name for name, pid in (("reporter", case.reporter_id),
                                          ("submitted_by", case.submitted_by_id))
                   if pid == user_id],
            "status": case.status,
            "category": case.category,
            "place": await _code(db, case.unit_id or case.building_id),
            "description": case.description,
            "photos": list(photos),
            "latitude": case.latitude,
            "longitude": case.longitude,
            "reported_at": _time(case.reported_at),
            "result": case.result,
            "resolved_at": _time(case.resolved_at),
            "rating": case.rating,
            "rating_comment": case.rating_comment,
            "reject_reason": case.reject_reason,
            "closed_at": _time(case.closed_at),
        })
    return {
        "user_id": user_id,
        "exported_at": _time(now),
        "person": None if p is None else {
            "id": p.id,
            "name": p.name,
            "building": await _code(db, p.building_id),
            "unit": await _code(db, p.unit_id),
            "private_chat_ok": p.dm_ok,
            "created_at": _time(p.created_at),
        },
        "roles": [{"role": role, "place": node.code, "place_name": node.name}
                  for role, node in held.roles],
        "cases": cases,
        "cases_handled": [{
            "id": c.id,
            "as": [name for name, pid in (("accepted_by", c.accepted_by_id),
                                          ("resolved_by", c.resolved_by_id),
                                          ("assignee", c.assignee_id)) if pid == user_id],
            "status": c.status,
        } for c in held.handled],
        "case_events": [{
            "case_id": e.case_id, "at": _time(e.at), "action": e.action,
            "from_status": e.from_status, "to_status": e.to_status, "note": e.note,
        } for e in held.events],
        "messages": [{
            "id": o.id, "status": o.status, "case_id": o.case_id,
            "created_at": _time(o.created_at), "sent_at": _time(o.sent_at),
            "text": o.text, "photos": o.photos,
        } for o in held.outbox],
        "conversation_state": [{"state": f.state, "data": f.data} for f in held.fsm],
        "departments": [{"code": d.code, "name": d.name} for d in held.departments],
        "case_requests": [{
            "id": r.id, "case_id": r.case_id, "kind": r.kind, "status": r.status,
            "as": _as(r, user_id, "requested_by", "answered_by"),
            "requested_at": _time(r.requested_at), "reason": r.reason, "seconds": r.seconds,
            "review_at": _time(r.review_at), "answered_at": _time(r.answered_at),
            "answer_note": r.answer_note,
        } for r in held.requests],
        "whistles": [{
            "id": w.id, "case_id": w.case_id, "department": departments.get(w.department_id),
            "status": w.status, "as": _as(w, user_id, "called_by", "acked_by", "done_by"),
            "called_at": _time(w.called_at), "ask": w.ask, "acked_at": _time(w.acked_at),
            "done_at": _time(w.done_at), "note": w.note,
        } for w in held.whistles],
        "bind_requests": [{
            "chat_id": b.chat_id, "place": await _code(db, b.node_id),
            "created_at": _time(b.created_at),
        } for b in held.binds],
        "pending_photos": [{
            "chat_id": ph.chat_id, "message_id": ph.message_id, "file_id": ph.file_id,
            "caption": ph.caption, "received_at": _time(ph.received_at),
        } for ph in held.pending],
        "received_updates": [{
            "update_id": u.update_id, "received_at": _time(u.received_at),
            "status": u.status, "payload": u.payload,
        } for u in held.inbox],
        "follows": [{
            "case_id": f.case_id, "via": f.via, "joined_at": _time(f.joined_at),
        } for f in held.follows],
        "duplicate_offers": [{
            "case_id": o.case_id, "status": o.status, "asked_at": _time(o.created_at),
            "answered_at": _time(o.answered_at), "report": o.report,
            "filed_case_id": o.filed_case_id,
        } for o in held.offers],
        "notices_sent": [{
            "id": n.id, "status": n.status, "scope": n.scope, "text": n.text,
            "photos": n.photos, "sent_at": _time(n.sent_at),
        } for n in held.notices],
        "notices_confirmed": [{
            "notice_id": c.notice_id, "place": await _code(db, c.node_id),
            "confirmed_at": _time(c.confirmed_at),
        } for c in held.confirmations],
        "patrols": await _patrols(db, held),
        # 走访: the visits they recorded, by household (its building and number on the
        # roster; the household's names are the household's data, not this person's).
        "care_visits": [{
            "id": v.id, "household_id": v.household_id,
            "building": await _household_building(db, v.household_id), "at": _time(v.at),
            "due_at": _time(v.due_at), "note": v.note, "photos": v.photos,
            "latitude": v.lat, "longitude": v.lon, "need_found": v.need_found,
            "case_id": v.case_id,
        } for v in held.visits],
    }


# --- erase ---------------------------------------------------------------------------------


@dataclass
class Erased:
    user_id: int
    cases: int = 0
    events: int = 0
    messages_deleted: int = 0
    messages_masked: int = 0
    states: int = 0
    photos: int = 0
    updates: int = 0
    requests: int = 0
    whistles: int = 0
    patrols: int = 0
    person: bool = False
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"erased Telegram user {self.user_id}: {self.cases} cases kept without their "
                f"reporter, {self.events} case events without their name, "
                f"{self.messages_deleted} messages to them deleted, {self.messages_masked} "
                f"other messages masked, {self.states} conversation states, {self.photos} "
                f"pending photos and {self.updates} received updates removed, "
                f"{self.requests} requests and {self.whistles} whistles without their name"
                + (f", {self.patrols} patrols without their name, points, photos and notes"
                   if self.patrols else "")
                + ("" if self.person else "; they had no person row"))


class _Scrubber:
    """Masks phone numbers, the person's name and links to them in a text."""

    def __init__(self, user_id: int, name: str | None) -> None:
        self.names = []
        if name and len(name.strip()) >= MIN_NAME:
            self.names = sorted({name, html.escape(name), html.escape(name, quote=False)},
                                key=len, reverse=True)
        self.link = f"tg://user?id={user_id}"

    def __call__(self, text: str | None, *, phones: bool = True) -> str | None:
        if not text:
            return text
        for name in self.names:
            text = text.replace(name, PLACEHOLDER)
        text = text.replace(self.link, "tg://user?id=0")
        return mask_phones(text) if phones else text


async def erase_person(db: AsyncSession, user_id: int) -> Erased:
    """Remove a person's data, keeping their cases in the ledger without them; commits."""
    held = await _held(db, user_id)
    if not held.anything:
        raise PrivacyError(f"nothing is held about Telegram user {user_id}")
    if held.roles:
        roles = ", ".join(f"{role} {node.code}" for role, node in held.roles)
        raise PrivacyError(f"Telegram user {user_id} still holds roles in the registry "
                           f"({roles}): remove them from the registry file and load it "
                           "(gridbot registry load FILE), then erase")
    if held.departments:
        codes = ", ".join(d.code for d in held.departments)
        raise PrivacyError(f"Telegram user {user_id} is still a contact of departments in the "
                           f"registry ({codes}): remove them from the registry file and load "
                           "it (gridbot registry load FILE), then erase")
    done = Erased(user_id)
    scrub = _Scrubber(user_id, held.person.name if held.person else None)
    their_cases = {c.id for c in held.cases}
    their_messages = {c.source_message_id for c in held.cases} - {None}

    for case in held.cases:
        if case.reporter_id == user_id:
            case.reporter_id = None
        if case.submitted_by_id == user_id:
            case.submitted_by_id = None
        case.description = scrub(case.description) or ""
        case.result = scrub(case.result)
        case.rating_comment = scrub(case.rating_comment)
        case.reject_reason = scrub(case.reject_reason)
        # Their message in the group, or their private chat, would point back to them.
        case.source_message_id = None
        if case.source_chat_id is not None and case.source_chat_id > 0:
            case.source_chat_id = None
        done.cases += 1
    for case in held.handled:
        if case.accepted_by_id == user_id:
            case.accepted_by_id = None
        if case.resolved_by_id == user_id:
            case.resolved_by_id = None
        if case.assignee_id == user_id:
            case.assignee_id = None

    for event in held.events:
        event.actor_id = None
        # What they said on a case they follow (是同一问题) may carry their number.
        event.note = scrub(event.note)
        done.events += 1
    # 是同一问题 and 合并: they no longer follow any case, and a report held back for their
    # answer is never filed now; notices keep what was sent and confirmed, without who.
    for follow in held.follows:
        followed = await db.get(Case, follow.case_id)
        if followed is not None and followed.followers > 0:
            followed.followers -= 1
        await db.delete(follow)
    for offer in held.offers:
        await db.delete(offer)
    for notice in held.notices:
        notice.sender_id = None
    for copy in held.confirmations:
        copy.confirmed_by_id = None
    # 巡查: the patrol stays counted (its grid, times and the buildings it covered) without
    # who walked it (person 0); where they were, and their photos and notes, go.
    for patrol in held.patrols:
        patrol.person_id = 0
        patrol.note = None
        if patrol.ended_at is None:  # under way still: ended at its last point or item
            last = [await db.scalar(select(func.max(t.at)).where(t.patrol_id == patrol.id))
                    for t in (PatrolPoint, PatrolItem)]
            patrol.ended_at = max([patrol.started_at, *(t for t in last if t is not None)])
        await db.execute(delete(PatrolPoint).where(PatrolPoint.patrol_id == patrol.id))
        await db.execute(delete(PatrolItem).where(PatrolItem.patrol_id == patrol.id))
    done.patrols = len(held.patrols)
    # 走访: a visit stays on the household's record (when, the note, a need found) without
    # who made it (person 0, as patrols: the column is never empty), their name out of it.
    for visit in held.visits:
        visit.person_id = 0
        visit.note = scrub(visit.note, phones=False) or ""
    events = select(CaseEvent)
    if scrub.names:
        events = events.where(or_(CaseEvent.case_id.in_(their_cases),
                                  *[CaseEvent.note.contains(n) for n in scrub.names]))
    else:
        events = events.where(CaseEvent.case_id.in_(their_cases))
    for event in (await db.scalars(events)).all():
        # Notes on their cases may carry their number; anyone's note may carry their name
        # (a report on their behalf, a task handed to them).
        event.note = scrub(event.note, phones=event.case_id in their_cases)

    # Requests and whistles keep what was asked and done, without who: their columns, and
    # their name in anyone's text (a reason may name the head it waits for); on their cases
    # a phone number too, as for event notes.
    for req in held.requests:
        if req.requested_by_id == user_id:
            req.requested_by_id = None
        if req.answered_by_id == user_id:
            req.answered_by_id = None
    for whistle in held.whistles:
        for column in ("called_by_id", "acked_by_id", "done_by_id"):
            if getattr(whistle, column) == user_id:
                setattr(whistle, column, None)
    done.requests, done.whistles = len(held.requests), len(held.whistles)
    named: list[ColumnElement[bool]] = [CaseRequest.case_id.in_(their_cases)]
    named += [c.contains(n) for n in scrub.names
              for c in (CaseRequest.reason, CaseRequest.answer_note)]
    for req in (await db.scalars(select(CaseRequest).where(or_(*named)))).all():
        phones = req.case_id in their_cases
        req.reason = scrub(req.reason, phones=phones) or ""
        req.answer_note = scrub(req.answer_note, phones=phones)
    named = [Whistle.case_id.in_(their_cases)]
    named += [c.contains(n) for n in scrub.names for c in (Whistle.ask, Whistle.note)]
    for whistle in (await db.scalars(select(Whistle).where(or_(*named)))).all():
        phones = whistle.case_id in their_cases
        whistle.ask = scrub(whistle.ask, phones=phones) or ""
        whistle.note = scrub(whistle.note, phones=phones)

    # Messages to them go: what is not sent yet must never be sent, and what was sent keeps
    # their chat id and the text they were sent. A copy meant for them in a group goes too.
    mine = {o.id for o in held.outbox}
    keys = {f"{o.dedupe_key}:fallback" for o in held.outbox}
    copies = (await db.scalars(select(Outbox).where(Outbox.dedupe_key.in_(keys)))).all() \
        if keys else []
    for row in copies:
        if row.status != "sent":
            mine.add(row.id)
    if mine:
        await db.execute(delete(Outbox).where(Outbox.id.in_(mine)))
    done.messages_deleted = len(mine)
    others = select(Outbox).where(Outbox.id.not_in(mine)) if mine else select(Outbox)
    conditions = [Outbox.case_id.in_(their_cases), Outbox.text.contains(scrub.link),
                  Outbox.dedupe_key.contains(f":{user_id}:"),
                  Outbox.dedupe_key.endswith(f":{user_id}")]
    conditions += [Outbox.text.contains(n) for n in scrub.names]
    for row in (await db.scalars(others.where(or_(*conditions)))).all():
        changed = False
        parts = row.dedupe_key.split(":")
        # Their own case's messages, and a message made of what they said on another's case
        # (是同一问题: its key names them), lose phone numbers too.
        phones = row.case_id in their_cases or str(user_id) in parts
        text = scrub(row.text, phones=phones) or ""
        if text != row.text:
            row.text, changed = text, True
        if str(user_id) in parts:
            row.dedupe_key = ":".join("erased" if p == str(user_id) else p for p in parts) \
                + f":{row.id}"
            changed = True
        if row.case_id in their_cases and row.reply_to_message_id in their_messages:
            row.reply_to_message_id, changed = None, True
        done.messages_masked += changed

    for state in [*held.fsm, *held.binds]:
        await db.delete(state)
    done.states = len(held.fsm) + len(held.binds)
    for photo in held.pending:
        await db.delete(photo)
    done.photos = len(held.pending)
    for update in held.inbox:
        update.payload = None
        if update.status == "new":
            update.status = "erased"  # never to be handled now
    done.updates = len(held.inbox)

    await db.flush()
    if held.person is not None:
        await db.delete(held.person)
        done.person = True
    await db.commit()
    return done
