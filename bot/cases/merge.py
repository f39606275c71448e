"""合并 and 拆分 on a case card: one problem reported twice becomes one case, and one report
that holds two problems becomes two.

合并 closes the case as 已合并 (status `merged`, `merged_into_id`): its reporter and followers
follow the main case from then on (they get its notices and may rate it), its report photos
join the main case, and the figures and the ledger count the main case only. The main case
keeps the earliest deadline and the highest urgency of the cases merged into it, so a merge
never improves a figure: a case overdue when merged leaves the main case overdue, and late
when it is closed (issue 20, defect 3). 拆分 makes a
second case with its own category and text, for the same reporter and place, with the photos
chosen from the first; it goes to the grid like a confirmed report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case as when
from sqlalchemy import select

from bot.cases import followers, notify
from bot.cases.deadlines import deadline_of, hold_deadline, offset
from bot.cases.events import EventKind
from bot.cases.lifecycle import (
    HANDLING,
    MAX_CASE_ID,
    S,
    act,
    check,
    get_case,
    leaving_handling,
    record,
    save,
    schedule,
    transition,
)
from bot.context import Tx
from bot.errors import DomainError
from bot.org.directory import NodeKind, directory
from bot.org.roles import Actor, Level, Lineage, handlers_at
from bot.user_text import clean_text, visible
from storage.models import Case, CaseEvent, CasePhoto

# A case keeps at most this many report photos, however many cases are merged into it.
MAX_PHOTOS = 30
# The merge picker's buttons: the open cases of the grid most likely meant.
MAX_CHOICES = 8


# --- 合并 ------------------------------------------------------------------------------------


async def check_merge(tx: Tx, actor: Actor, case_id: int, rev: int) -> tuple[Case, Lineage]:
    """Whether `actor` may merge the case away now (its handler, while it is handled)."""
    case, lin = await get_case(tx, case_id)
    if case.status == S.MERGED:
        raise DomainError("already_merged", case_id=case.id, into=case.merged_into_id)
    await check(tx, actor, case_id, rev, EventKind.MERGE)
    return case, lin


async def choices(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> list[Case]:
    """Open cases of the same grid `actor` may handle: the same category first, then the
    newest; at most MAX_CHOICES."""
    d = await directory(tx.db)
    buildings = [p.id for p in d.places.values()
                 if p.kind == NodeKind.BUILDING and p.parent_id == lin.grid.id]
    rows = await tx.db.scalars(
        select(Case).where(Case.building_id.in_(buildings),
                           Case.status.in_([s.value for s in HANDLING]), Case.id != case.id)
        .order_by(when((Case.category == case.category, 0), else_=1), Case.id.desc())
        .limit(MAX_CHOICES * 4))
    # The same grid: whether they may handle one depends on its level only.
    return [c for c in rows.all() if actor.handles(lin, c.level)][:MAX_CHOICES]


async def check_target(tx: Tx, actor: Actor, case: Case, into_id: int) -> tuple[Case, Lineage]:
    """The case to merge into, if it may take `case`: another case, open, that `actor`
    handles too."""
    if into_id == case.id:
        raise DomainError("merge_self", case_id=case.id)
    main, mlin = await get_case(tx, into_id)
    if not actor.sees(mlin):
        # Say the same as for a missing case: a case out of scope is not shown to exist.
        raise DomainError("no_case", case_id=into_id)
    if main.status == S.MERGED:
        raise DomainError("already_merged", case_id=main.id, into=main.merged_into_id)
    if main.status not in HANDLING:
        raise DomainError("merge_target_closed", case_id=main.id)
    if not actor.handles(mlin, main.level):
        raise DomainError("merge_out_of_scope", case_id=main.id)
    return main, mlin


@dataclass(frozen=True)
class Merged:
    """A merge made: the main case, and what it took over from the case merged into it."""

    main: Case
    # The merged case's deadline, where it was earlier than the main case's (now its own).
    deadline: datetime | None = None
    # The merged case was urgent and the main case was not (it is now).
    urgent: bool = False


async def keep_strictest(tx: Tx, main: Case, case: Case) -> Merged:
    """The main case takes the earliest deadline and the highest urgency of `case`. The
    deadline is held through `deadline_offset_seconds` (deadlines.hold_deadline), so the
    derivation the sweep makes again (clock start + SLA + extensions + offset) keeps it; a
    deadline already passed stays passed: the main case is overdue at once."""
    urgent = case.urgent and not main.urgent
    main.urgent = main.urgent or case.urgent
    if case.deadline_at >= main.deadline_at:
        return Merged(main, urgent=urgent)
    cat = (await directory(tx.db)).categories.get(main.category)
    if cat is None:
        derived = main.deadline_at - offset(main)
    else:
        derived = deadline_of(tx.policy, main.clock_started_at,
                              timedelta(seconds=cat.sla_seconds), cat.sla_unit,
                              main.extended_seconds)
    hold_deadline(main, case.deadline_at, derived)
    return Merged(main, deadline=main.deadline_at, urgent=urgent)


async def merge(tx: Tx, actor: Actor, case_id: int, rev: int, into_id: int) -> Merged:
    """Merge case `case_id` into `into_id`; returns the main case and what it kept. Commits."""
    # Both rows are locked, the lower id first: two handlers merging #9 into #12 and #12
    # into #9 at once wait for each other (PostgreSQL) instead of deadlocking; one of them
    # is then told the case is gone.
    if 0 < into_id <= MAX_CASE_ID and into_id != case_id:
        for cid in sorted((case_id, into_id)):
            if 0 < cid <= MAX_CASE_ID:
                await tx.db.get(Case, cid, with_for_update=True, populate_existing=True)
    current, _ = await get_case(tx, case_id)
    if current.status == S.MERGED:
        raise DomainError("already_merged", case_id=case_id, into=current.merged_into_id)
    case, lin = await act(tx, actor, case_id, rev, EventKind.MERGE)
    main, mlin = await check_target(tx, actor, case, into_id)
    transition(tx, case, EventKind.MERGE, actor.id, f"#{main.id}")
    case.merged_into_id = main.id
    case.closed_at = tx.now
    case.close_reason = "merged"
    case.assignee_id = None
    record(tx, main, EventKind.MERGE_IN, actor.id, f"#{case.id}")
    kept = await keep_strictest(tx, main, case)
    # Everyone the merged case affects follows the main one, replied to where they reported.
    residents = [(case.reporter_id, case.source_chat_id, case.source_message_id)]
    residents += [(f.person_id, f.source_chat_id, f.source_message_id)
                  for f in await followers.of_case(tx.db, case)]
    for person_id, chat_id, message_id in residents:
        if person_id is not None:
            await followers.follow(tx, main, person_id, chat_id=chat_id,
                                   message_id=message_id, via="merge")
    await join_photos(tx, main, await notify.photos_of(tx, case))
    await leaving_handling(tx, case, lin)
    category = await notify.category_name(tx, main.category)
    await notify.tell_reporter(
        tx, f"case:{case.id}:merged", case,
        tx.texts.render("merge_reporter", case_id=case.id, main_id=main.id, category=category))
    others = [p for p in await handlers_at(tx.db, mlin, main.level) if p.id != actor.id]
    await notify.tell_staff(tx, f"case:{main.id}:merged:{case.id}", others, main, mlin,
                            "merge_staff", merged_id=case.id, actor=actor.name,
                            deferrable=True, **kept_context(tx, kept))
    await schedule(tx, case)
    await save(tx, main)
    return kept


def kept_context(tx: Tx, kept: Merged) -> dict[str, object]:
    """What the merge texts say the main case took over: its new deadline (and whether it
    has passed), and its urgency."""
    return {"kept_deadline": tx.texts.local_time(kept.deadline) if kept.deadline else "",
            "kept_overdue": kept.deadline is not None and kept.deadline <= tx.now,
            "kept_urgent": kept.urgent}


async def join_photos(tx: Tx, case: Case, file_ids: Sequence[str]) -> int:
    """Add report photos to `case`, leaving out ones it has and any beyond MAX_PHOTOS;
    returns how many joined."""
    if not file_ids:
        return 0
    have = list((await tx.db.scalars(select(CasePhoto.file_id).where(
        CasePhoto.case_id == case.id, CasePhoto.kind == "report"))).all())
    added = 0
    for file_id in file_ids:
        if len(have) >= MAX_PHOTOS:
            break
        if file_id in have:
            continue
        tx.db.add(CasePhoto(case_id=case.id, file_id=file_id, kind="report"))
        have.append(file_id)
        added += 1
    return added


# --- 拆分 ------------------------------------------------------------------------------------


async def check_split(tx: Tx, actor: Actor, case_id: int, rev: int) -> Case:
    return await check(tx, actor, case_id, rev, EventKind.SPLIT)


async def split(tx: Tx, actor: Actor, case_id: int, rev: int, code: str, text: str,
                photos: Sequence[int]) -> Case:
    """A second case out of `case_id`: category `code`, description `text`, and the first's
    photos at the indexes `photos` (as its card numbers them, from 0). Commits; returns it."""
    text = clean_text(text)
    if not visible(text):
        raise DomainError("split_text_needed")
    case, lin = await act(tx, actor, case_id, rev, EventKind.SPLIT)
    if case.status not in HANDLING:
        raise DomainError("stale", case_id=case.id)
    cat = (await directory(tx.db)).categories.get(code)
    if cat is None or not cat.active:
        raise DomainError("bad_category")
    have = await notify.photos_of(tx, case)
    chosen = [have[i] for i in sorted(set(photos)) if 0 <= i < len(have)]
    new = Case(
        # Verified with the first (or not needed): it goes straight to the grid.
        status=S.OPEN, rev=1, level=Level.GRID, category=cat.code, urgent=cat.urgent,
        verified=case.verified, building_id=case.building_id, unit_id=case.unit_id,
        reporter_id=case.reporter_id, submitted_by_id=case.submitted_by_id,
        description=text, latitude=case.latitude, longitude=case.longitude,
        source_chat_id=case.source_chat_id, source_message_id=case.source_message_id,
        # Reported when the first was; its own clock and deadline start now.
        reported_at=case.reported_at, clock_started_at=tx.now,
        deadline_at=deadline_of(tx.policy, tx.now, timedelta(seconds=cat.sla_seconds),
                                cat.sla_unit),
        round=1, split_from_id=case.id,
    )
    tx.db.add(new)
    await tx.db.flush()
    for file_id in chosen:
        tx.db.add(CasePhoto(case_id=new.id, file_id=file_id, kind="report"))
    tx.db.add(CaseEvent(case_id=new.id, at=tx.now, actor_id=actor.id,
                        action=EventKind.SPLIT_FROM,
                        from_status=None, to_status=new.status, note=f"#{case.id}"))
    record(tx, case, EventKind.SPLIT, actor.id, f"#{new.id}")
    await tx.db.flush()
    category = await notify.category_name(tx, new.category)
    await notify.handler_card(tx, new, lin, "split")
    await notify.tell_reporter(
        tx, f"case:{new.id}:split", new,
        tx.texts.render("split_reporter", case_id=case.id, new_id=new.id, category=category))
    await schedule(tx, case)
    await save(tx, new)
    return new

