"""是同一问题: a report that looks like an open case's problem asks its reporter first.

A report for a building (or, with a location, within `policy.duplicate_radius` of one) where
an open case of the same category was reported within `policy.duplicate_window` is held back
as a `DuplicateOffer`: the reporter is shown that case (number, category, status, one line of
its description, never its reporter; in a group the description only when it was said in
that same group) with 是同一问题 / 不是，另报. 是同一问题: they follow the
case (bot/cases/followers.py) and no second case is made; 不是，另报, or no answer within
ANSWER_WITHIN (the sweep settles it), files the report exactly as it came. The offer holds the
report, so nothing is lost while it waits, and its status is claimed with a conditional
UPDATE, so an answer and the sweep (or two workers) never both settle it.

An urgent report is never held; a group never reads what was said elsewhere; a joined
report's words, photos and voice reach the handlers; a report joined to a case that is then
rejected is filed as its own by the sweep (`rejected`, a hook of lifecycle.reject); the flood
limit counts held reports (lifecycle.check_report_quota).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases import followers, merge, notify, voice
from bot.cases import lifecycle as cases
from bot.cases.buttons import DuplicateAnswer, duplicate_button
from bot.cases.events import EventKind
from bot.cases.lifecycle import HANDLING, Checked, ReportInput, S
from bot.cases.outbox import enqueue
from bot.context import Ctx, Tx, begin
from bot.errors import DomainError
from bot.org import geo
from bot.org.roles import RoleName, handlers_at, holders, lineage_of
from storage.models import Case, CaseEvent, CaseFollower, DuplicateOffer


class OfferStatus(StrEnum):
    """Where a 是同一问题 question stands (`duplicate_offers.status`; stored, never renamed)."""

    PENDING = "pending"  # asked, the report held back
    JOINED = "joined"  # the same problem: they follow the case
    DECLINED = "declined"  # not the same: filed as it came
    TIMED_OUT = "timed_out"  # no answer within ANSWER_WITHIN: filed as it came
    # Joined to a case the building head then rejected: the sweep files it as its own.
    REFILING = "refiling"
    REFILED = "refiled"  # so filed (`filed_case_id`)


# What the sweep makes of an offer that waits for it: a question nobody answered in time, or
# a report whose case was rejected after they joined it.
SETTLED = {OfferStatus.PENDING: OfferStatus.TIMED_OUT,
           OfferStatus.REFILING: OfferStatus.REFILED}


# A few minutes: long enough to read the question, short enough that a report nobody answers
# for is not held back from its handlers.
ANSWER_WITHIN = timedelta(minutes=5)
# Cases a report may be the same problem as: reported, not yet resolved.
LOOKED_AT = frozenset({S.VERIFYING, *HANDLING, S.SUSPENDED})
CANDIDATES = 20
# The category of what fits no other: never taken for the same problem.
CATCH_ALL = "other"
SETTLE_BATCH = 50
METRES_PER_DEGREE = 111_195.0


@dataclass(frozen=True)
class Answered:
    """What became of an answered offer: the case they follow, or the case filed."""

    joined: bool
    case_id: int
    affected: int = 1


async def submit(tx: Tx, inp: ReportInput) -> Case | DuplicateOffer:
    """File `inp`, or hold it back with a question when an open case may be its problem.
    Commits either way."""
    checked = await cases.check_report(tx, inp)
    case = await candidate(tx, inp, checked)
    if case is None:
        return await cases.report(tx, inp, checked)
    return await _offer(tx, inp, case)


async def candidate(tx: Tx, inp: ReportInput, checked: Checked) -> Case | None:
    """The newest open case `inp` may be the same problem as, or None."""
    window = tx.policy.duplicate_window
    if window is None or inp.reporter_id is None:
        return None
    if inp.submitted_by_id not in (None, inp.reporter_id):
        return None  # staff reporting for a resident know what they report
    if checked.category.code == CATCH_ALL:
        return None  # two reports of 其他 share nothing but the lack of a better word
    if checked.category.urgent:
        # Urgent never waits: filed at once in its own words, with its photos; staff may
        # merge it afterwards (issue 20, defect 1).
        return None
    near = Case.building_id == inp.building_id
    lat, lon = inp.latitude, inp.longitude
    radius = tx.policy.duplicate_radius
    if lat is not None and lon is not None:
        # A box around the point in SQL, the exact distance below.
        d_lat = radius / METRES_PER_DEGREE
        d_lon = d_lat / max(math.cos(math.radians(lat)), 0.01)
        near = or_(near, and_(Case.latitude.between(lat - d_lat, lat + d_lat),
                              Case.longitude.between(lon - d_lon, lon + d_lon)))
    rows = (await tx.db.scalars(
        select(Case).where(near, Case.category == checked.category.code,
                           Case.status.in_([s.value for s in LOOKED_AT]),
                           Case.reported_at >= tx.now - window,
                           Case.reporter_id != inp.reporter_id)
        .order_by(Case.id.desc()).limit(CANDIDATES))).all()

    def close_by(c: Case) -> bool:
        if c.building_id == inp.building_id:
            return True
        return (lat is not None and lon is not None and c.latitude is not None
                and c.longitude is not None
                and geo.metres(lat, lon, c.latitude, c.longitude) <= radius)

    found = [c for c in rows if close_by(c)]
    if any(c.followers for c in found):
        followed = set((await tx.db.scalars(select(CaseFollower.case_id).where(
            CaseFollower.person_id == inp.reporter_id,
            CaseFollower.case_id.in_([c.id for c in found])))).all())
        found = [c for c in found if c.id not in followed]
    return found[0] if found else None


def _dump(inp: ReportInput) -> dict[str, Any]:
    return asdict(inp)


def _load(raw: dict[str, Any]) -> ReportInput:
    spoken = raw.get("voice")
    return ReportInput(**{**raw, "photos": list(raw.get("photos") or []),
                          "voice": voice.Voice(**spoken) if spoken else None})


async def _offer(tx: Tx, inp: ReportInput, case: Case) -> DuplicateOffer:
    assert inp.reporter_id is not None
    chat_id = inp.source_chat_id if inp.source_chat_id is not None else inp.reporter_id
    offer = DuplicateOffer(
        case_id=case.id, person_id=inp.reporter_id, chat_id=chat_id,
        message_id=inp.source_message_id, report=_dump(inp),
        status=OfferStatus.PENDING,
        created_at=tx.now, due_at=tx.now + ANSWER_WITHIN)
    tx.db.add(offer)
    await tx.db.flush()
    in_group = chat_id < 0
    # What was said privately stays private (issue 20, defect 2): a group reads the case's
    # words only when they were said in that same group; privately the reporter-to-be reads
    # one line of them.
    said_here = not in_group or case.source_chat_id == chat_id
    text = tx.texts.render(
        "duplicate_question", in_group=in_group,
        name=await notify.person_name(tx, inp.reporter_id) if in_group else "",
        case={"id": case.id, "category": await notify.category_name(tx, case.category),
              "status": tx.texts.label(f"status_{case.status}"),
              # Phone numbers masked, as in every text a resident reads of another's case.
              "summary": notify.mask_phones(_line(voice.described(tx.texts, case)))
              if said_here else ""},
        minutes=int(ANSWER_WITHIN.total_seconds() // 60))
    t = tx.texts
    await enqueue(tx.db, f"dup:{offer.id}", chat_id, text, tx.now,
                  reply_to=inp.source_message_id,
                  buttons=[[duplicate_button(t.plain("btn_dup_same"), offer.id,
                                             DuplicateAnswer.SAME),
                            duplicate_button(t.plain("btn_dup_new"), offer.id,
                                             DuplicateAnswer.NEW)]])
    await tx.db.commit()
    return offer


def _line(text: str, size: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


# --- the answer ------------------------------------------------------------------------------


async def answer(tx: Tx, person_id: int, offer_id: int, same: bool) -> Answered:
    """The reporter's 是同一问题 (`same`) or 不是，另报. Commits."""
    offer = await tx.db.get(DuplicateOffer, offer_id)
    if offer is None:
        raise DomainError("dup_gone")
    if offer.person_id != person_id:
        raise DomainError("dup_not_yours")
    if not await _claim(tx.db, offer, OfferStatus.JOINED if same else OfferStatus.DECLINED, tx):
        raise DomainError("dup_answered")
    if same:
        return await _join(tx, offer)
    return await _file(tx, offer)


async def _claim(db: AsyncSession, offer: DuplicateOffer, status: OfferStatus,
                 tx: Tx, was: OfferStatus = OfferStatus.PENDING) -> bool:
    result = await db.execute(
        update(DuplicateOffer).where(DuplicateOffer.id == offer.id,
                                     DuplicateOffer.status == was)
        .values(status=status, answered_at=tx.now)
        .execution_options(synchronize_session=False))
    if not getattr(result, "rowcount", 1):
        return False
    offer.status, offer.answered_at = status, tx.now
    return True


async def _join(tx: Tx, offer: DuplicateOffer) -> Answered:
    case = await _followed(tx, offer.case_id)
    if case is None or case.status not in LOOKED_AT:
        # Resolved while they read the question: their report is a case of its own.
        return await _file(tx, offer, OfferStatus.DECLINED)
    inp = _load(offer.report)
    in_group = offer.chat_id < 0
    await followers.follow(tx, case, offer.person_id,
                           chat_id=offer.chat_id if in_group else None,
                           message_id=offer.message_id if in_group else None, via="duplicate")
    await merge.join_photos(tx, case, inp.photos)
    # Nothing of the joined report is lost (issue 20, defect 4): its words (or its voice's
    # line) and its photo count go into the history, and whoever acts on the case now (its
    # handlers; its building heads while it is being verified) gets the words, the photos
    # and the voice note itself.
    said = " ".join(p for p in (voice.line(tx.texts, inp.voice) if inp.voice else "",
                                " ".join(inp.description.split())) if p)
    photos = inp.photos[:10]  # as many as a report keeps (cases.report)
    note = tx.texts.plain("dup_said", text=said, count=len(photos))
    tx.db.add(CaseEvent(case_id=case.id, at=tx.now, actor_id=offer.person_id,
                        action=EventKind.FOLLOW,
                        from_status=case.status, to_status=case.status, note=note or None))
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    staff = (await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
             if case.status == S.VERIFYING else await handlers_at(tx.db, lin, case.level))
    await notify.join_note(tx, f"case:{case.id}:follow:{offer.person_id}", staff, case, lin,
                           said=said, photos=photos, spoken=inp.voice)
    await tx.db.commit()
    return Answered(True, case.id, followers.affected(case))


async def _followed(tx: Tx, case_id: int) -> Case | None:
    """The case `case_id` stands for now: itself, or the case it was merged into, followed to
    the end of the chain (A → B → C: C) while the question waited (issue 20, defect 6)."""
    seen: set[int] = set()
    case = await tx.db.get(Case, case_id, with_for_update=True, populate_existing=True)
    while (case is not None and case.status == S.MERGED and case.merged_into_id is not None
           and case.id not in seen):
        seen.add(case.id)
        case = await tx.db.get(Case, case.merged_into_id, with_for_update=True,
                               populate_existing=True)
    return case


async def _file(tx: Tx, offer: DuplicateOffer, status: OfferStatus | None = None
                ) -> Answered:
    inp = _load(offer.report)
    # Counted against the flood limit when it came (and held): not counted again now.
    case = await cases.report(tx, inp, await cases.check_report(tx, inp, admitted=True))
    await tx.db.execute(update(DuplicateOffer).where(DuplicateOffer.id == offer.id)
                        .values(filed_case_id=case.id, **{"status": status} if status else {})
                        .execution_options(synchronize_session=False))
    if offer.status == OfferStatus.REFILED:
        # Only numbers and a status, fit for the group the question was asked in.
        await enqueue(tx.db, f"dup:{offer.id}:refiled", offer.chat_id,
                      tx.texts.label("dup_refiled", case_id=offer.case_id,
                                     new_id=case.id), tx.now, reply_to=offer.message_id)
    await tx.db.commit()
    return Answered(False, case.id)


# --- the sweep -------------------------------------------------------------------------------


async def due(tx: Tx) -> list[int]:
    """Offers nobody answered in time, and reports joined to a case since rejected (one
    indexed query)."""
    rows = await tx.db.scalars(
        select(DuplicateOffer.id).where(DuplicateOffer.status.in_(list(SETTLED)),
                                        DuplicateOffer.due_at <= tx.now)
        .order_by(DuplicateOffer.due_at).limit(SETTLE_BATCH))
    return list(rows.all())


async def settle(sessions: async_sessionmaker[AsyncSession], ctx: Ctx, offer_id: int) -> bool:
    """File the report of an offer nobody answered, or of one joined to a case since
    rejected; False when it was settled meanwhile."""
    async with sessions() as db:
        tx = await begin(db, ctx)
        offer = await db.get(DuplicateOffer, offer_id)
        if offer is None or offer.status not in SETTLED:
            return False
        was = OfferStatus(offer.status)
        if not await _claim(db, offer, SETTLED[was], tx, was):
            return False
        try:
            await _file(tx, offer)
        except DomainError as err:
            # Refused now (its building closed meanwhile): the reporter is told, the offer ends.
            await db.rollback()
            offer = await db.get(DuplicateOffer, offer_id, populate_existing=True)
            if offer is None or not await _claim(db, offer, SETTLED[was], tx, was):
                return False
            await enqueue(db, f"dup:{offer.id}:refused", offer.chat_id,
                          err.explain(tx.texts), tx.now, reply_to=offer.message_id)
            await db.commit()
        return True


# --- a joined case rejected --------------------------------------------------------------------


async def rejected(tx: Tx, case: Case) -> None:
    """`case` was rejected at verification (bot/cases/lifecycle.py calls this, in the reject's
    transaction, before anyone is told): a report joined to it is no longer its problem. Its
    reporter stops following it (so is not told of the rejection) and the sweep files the
    report as its own case, verified as any other, telling them so (issue 20, defect 5)."""
    if not case.followers:
        return
    joined = list((await tx.db.scalars(select(DuplicateOffer).where(
        DuplicateOffer.case_id == case.id,
        DuplicateOffer.status == OfferStatus.JOINED))).all())
    for offer in joined:
        result = await tx.db.execute(
            delete(CaseFollower).where(CaseFollower.case_id == case.id,
                                       CaseFollower.person_id == offer.person_id,
                                       CaseFollower.via == "duplicate")
            .execution_options(synchronize_session=False))
        case.followers = max(0, case.followers - (getattr(result, "rowcount", 0) or 0))
        if await _claim(tx.db, offer, OfferStatus.REFILING, tx, OfferStatus.JOINED):
            offer.due_at = tx.now


if rejected not in cases.REJECT_HOOKS:
    cases.REJECT_HOOKS.append(rejected)
