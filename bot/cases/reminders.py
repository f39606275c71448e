"""Reminders gathered per person: one message listing a person's due cases, not one each.

A timer step that reminds someone (due soon, overdue and its repeats, a verification
reminder, an escalation reaching a supervisor) writes a `Reminder` row per person in the
step's own transaction (`owe`); nothing is sent yet. After the cases' steps, each sweep
gathers (`gather`): a person's reminders that are due become one message listing the cases,
each with its light, its deadline and a button opening its card.

- A reminder whose case has moved on (resolved, suspended, extended, merged, closed, sent
  back or on to another level) is dropped with its reason, when gathered and again when its
  list's turn comes at the sender (`freshen`): a list is rewritten without it, or dropped
  whole with the reason in its outbox row when nothing is left.
- A repeat of a red light for a case already listed to that person today waits: it is shown
  in the next list something else brings (or the first list of the next day), never alone.
- A person gets a list at most every `GAP`, and at most `PER_DAY` lists a day (the district's
  day); an urgent case or an escalation does not wait for the gap. What waits is never lost:
  it stays until a list shows it or its case moves on.

Rooms above may remind of other things on the same lists (a household's visit due, a
campaign's grid not done): they `register` a `Subject` for their kind and `owe_about` it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cases import notify
from bot.cases.buttons import Action, button
from bot.cases.deadlines import light
from bot.cases.outbox import enqueue, insert_of
from bot.cases.status import HANDLING, CaseStatus
from bot.context import Ctx, NotConfigured, Tx, begin
from bot.org.directory import directory
from bot.org.roles import Lineage, lineage_of
from storage.models import Case, Outbox, Person, Reminder

log = logging.getLogger(__name__)
# The outbox kind of a list: the sender checks its cases again before it goes out.
LIST_KIND = "reminders"
GAP = timedelta(hours=1)
PER_DAY = 12
# Cases on one list; more wait for the next one (a message has 4096 characters).
LIST_MAX = 30
BUTTONS_PER_ROW = 4


class ReminderKind(StrEnum):
    VERIFY = "verify_remind"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"
    ESCALATED = "escalated"


class ReminderStatus(StrEnum):
    WAITING = "waiting"
    LISTED = "listed"
    FOLDED = "folded"  # a second reminder of a case shown by the same list
    DROPPED = "dropped"


# Which reminder of a case a list shows when it has several: the most pressing; a list shows
# its cases in this order, and the other subjects' lines after them.
_WEIGHT = {ReminderKind.ESCALATED: 0, ReminderKind.OVERDUE: 1, ReminderKind.DUE_SOON: 2,
           ReminderKind.VERIFY: 3}
OTHER_WEIGHT = 4


@dataclass(frozen=True)
class Subject:
    """A reminder about something else than a case (a household's visit due, a campaign's
    grid not done), registered by the room that owns it (bot.rounds): whether the reminder
    still holds, and its line on a list: `{"text": <one line, HTML>, "button": <a button
    dict> | None, "pressing": bool}`. Such a reminder never goes to a group."""

    stale: Callable[[Tx, Reminder], Awaitable[str | None]]
    line: Callable[[Tx, Reminder], Awaitable[dict[str, Any]]]


SUBJECTS: dict[str, Subject] = {}


def register(kind: str, subject: Subject) -> None:
    """`kind`: the reminders' kind (e.g. "visit_due"); not one of the cases' kinds."""
    if kind in {k.value for k in ReminderKind}:
        raise ValueError(f"{kind!r} is a case reminder's kind")
    SUBJECTS[kind] = subject


async def owe(tx: Tx, key: str, people: Sequence[Person], case: Case, lin: Lineage,
              kind: ReminderKind, *, n: int = 1) -> None:
    """A reminder to each of `people`, due at once or at the end of the quiet hours."""
    due_at = notify.quiet_delay(tx, case) or tx.now
    insert = insert_of(tx.db)
    for person in people:
        fallback = None
        if lin.grid.chat_id is not None:
            fallback = await notify.staff_fallback(tx, person.id, lin.grid.chat_id, case,
                                                   due_at)
        await tx.db.execute(insert(Reminder).values(
            dedupe_key=f"{key}:{person.id}", person_id=person.id, case_id=case.id,
            kind=kind.value, n=n, round=case.round, deadline_at=case.deadline_at,
            level=case.level, fallback_chat_id=fallback, due_at=due_at, created_at=tx.now,
            status=ReminderStatus.WAITING.value,
        ).on_conflict_do_nothing(index_elements=[Reminder.dedupe_key]))


async def owe_about(tx: Tx, key: str, people: Sequence[Person], kind: str, *,
                    household_id: int | None = None, campaign_grid_id: int | None = None,
                    due_at: datetime | None = None) -> None:
    """A reminder about a registered subject (`register`) to each of `people`, due at
    `due_at` (now by default; the caller waits out the quiet hours if it should)."""
    if kind not in SUBJECTS:
        raise ValueError(f"no subject registered for reminders of kind {kind!r}")
    insert = insert_of(tx.db)
    for person in people:
        await tx.db.execute(insert(Reminder).values(
            dedupe_key=f"{key}:{person.id}", person_id=person.id, case_id=None,
            household_id=household_id, campaign_grid_id=campaign_grid_id, kind=kind, n=1,
            round=0, deadline_at=None, level=None, fallback_chat_id=None,
            due_at=due_at or tx.now, created_at=tx.now, status=ReminderStatus.WAITING.value,
        ).on_conflict_do_nothing(index_elements=[Reminder.dedupe_key]))


async def _stale(tx: Tx, reminder: Reminder, cases: dict[int, Case]) -> str | None:
    if reminder.case_id is None:
        subject = SUBJECTS.get(reminder.kind)
        if subject is None:
            return f"nobody reads reminders of kind {reminder.kind}"
        return await subject.stale(tx, reminder)
    return stale_reason(reminder, cases.get(reminder.case_id), tx.now)


def stale_reason(reminder: Reminder, case: Case | None, now: datetime) -> str | None:
    """Why `reminder` no longer speaks of its case's state; None while it does.

    For `gridbot outbox` and the log: plain English, no names."""
    if case is None:
        return f"case #{reminder.case_id} is gone"
    if case.status == CaseStatus.MERGED:
        return f"#{case.id} was merged into #{case.merged_into_id}"
    if case.round != reminder.round:
        return f"#{case.id} was reworked since"
    kind = ReminderKind(reminder.kind)
    if kind == ReminderKind.VERIFY:
        if case.status != CaseStatus.VERIFYING:
            return f"#{case.id} is no longer waiting to be verified ({case.status})"
        return None
    if case.status not in HANDLING:
        return f"#{case.id} is {case.status}"
    if case.level != reminder.level:
        # Gone up (or back down): its handlers now are others, told by the move itself.
        return f"#{case.id} is at the {case.level} now"
    if kind == ReminderKind.ESCALATED:
        return None
    if case.deadline_at != reminder.deadline_at:
        return f"#{case.id} has a new deadline"
    if kind == ReminderKind.OVERDUE and case.deadline_at > now:
        return f"#{case.id} is no longer overdue"
    return None


@dataclass(frozen=True)
class Line:
    """One case on a list: its most pressing reminder, and the others it stands for."""

    reminder: Reminder
    others: tuple[Reminder, ...]


def _weight(r: Reminder) -> int:
    return _WEIGHT[ReminderKind(r.kind)] if r.case_id is not None else OTHER_WEIGHT


def _lines(reminders: Sequence[Reminder]) -> list[Line]:
    """A line per case (its most pressing reminder), and one per other reminder."""
    by_case: dict[int, list[Reminder]] = {}
    lines = []
    for r in reminders:
        if r.case_id is None:
            lines.append(Line(r, ()))
        else:
            by_case.setdefault(r.case_id, []).append(r)
    for items in by_case.values():
        items.sort(key=lambda r: (_weight(r), -r.n, -r.id))
        lines.append(Line(items[0], tuple(items[1:])))
    # Red and escalated first, then by deadline.
    return sorted(lines, key=lambda ln: (_weight(ln.reminder),
                                         ln.reminder.deadline_at or ln.reminder.due_at,
                                         ln.reminder.case_id or 0, ln.reminder.id))


def day_start(tx: Tx) -> datetime:
    """Midnight of today in the district's time zone."""
    local = tx.now.astimezone(ZoneInfo(tx.policy.timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(tx.now.tzinfo)


async def _cases(db: AsyncSession, reminders: Sequence[Reminder]) -> dict[int, Case]:
    ids = {r.case_id for r in reminders if r.case_id is not None}
    if not ids:
        return {}
    rows = await db.scalars(select(Case).where(Case.id.in_(ids)))
    return {c.id: c for c in rows.all()}


async def gather(sessions: async_sessionmaker[AsyncSession], ctx: Ctx) -> int:
    """Write each person's list of due reminders; returns how many lists were written.

    One transaction per person, so one person's trouble never holds back another's list."""
    now = ctx.clock.now()
    async with sessions() as db:
        people = list((await db.scalars(
            select(Reminder.person_id).where(Reminder.status == ReminderStatus.WAITING,
                                             Reminder.due_at <= now)
            .group_by(Reminder.person_id).order_by(func.min(Reminder.id)))).all())
    written = 0
    for person_id in people:
        try:
            async with sessions() as db:
                tx = await begin(db, ctx)
                if await gather_for(tx, person_id):
                    written += 1
                await db.commit()
        except NotConfigured:
            return written
        except Exception:
            log.exception("the reminder list of %s failed; it is tried at the next sweep",
                          person_id)
    return written


async def _pressing(tx: Tx, news: Sequence[Reminder], cases: dict[int, Case]) -> bool:
    """Whether a new reminder may not wait for the gap: an escalation, an urgent case, or a
    subject's line that says so."""
    for r in news:
        if r.kind == ReminderKind.ESCALATED:
            return True
        if r.case_id is not None:
            if cases[r.case_id].urgent:
                return True
        elif (await SUBJECTS[r.kind].line(tx, r)).get("pressing"):
            return True
    return False


async def gather_for(tx: Tx, person_id: int) -> bool:
    """`person_id`'s due reminders as one list, if one is to go now; True when written."""
    db = tx.db
    waiting = list((await db.scalars(
        select(Reminder).where(Reminder.person_id == person_id,
                               Reminder.status == ReminderStatus.WAITING,
                               Reminder.due_at <= tx.now)
        .order_by(Reminder.id).with_for_update(skip_locked=True))).all())
    if not waiting:
        return False
    cases = await _cases(db, waiting)
    fresh = []
    for r in waiting:
        reason = await _stale(tx, r, cases)
        if reason is None:
            fresh.append(r)
        else:
            _settle(r, ReminderStatus.DROPPED, tx.now, reason=reason)
    if not fresh:
        return False
    since = day_start(tx)
    listed_today = set((await db.scalars(
        select(Reminder.case_id).where(Reminder.person_id == person_id,
                                       Reminder.status == ReminderStatus.LISTED,
                                       Reminder.done_at >= since))).all())
    news = [r for r in fresh if not (r.kind == ReminderKind.OVERDUE and r.n > 1
                                     and r.case_id in listed_today)]
    if not news:
        return False  # repeats only: they wait for the next list
    lists = (await db.execute(
        select(func.count(func.distinct(Reminder.outbox_id)), func.max(Reminder.done_at))
        .where(Reminder.person_id == person_id, Reminder.outbox_id.is_not(None),
               Reminder.done_at >= since))).one()
    count, last = int(lists[0] or 0), lists[1]
    if count >= PER_DAY:
        return False
    if last is not None and tx.now - last < GAP and not await _pressing(tx, news, cases):
        return False
    lines = _lines(fresh)[:LIST_MAX]
    text, buttons = await render(tx, lines, cases)
    fallbacks = {r.fallback_chat_id for ln in lines for r in (ln.reminder, *ln.others)}
    row_id = await enqueue(
        db, f"{LIST_KIND}:{person_id}:{lines[0].reminder.id}:{int(tx.now.timestamp())}",
        person_id, text, tx.now, person_id=person_id, buttons=buttons,
        # A copy to a group only when every case on it is of that one grid's work chat.
        fallback_chat_id=fallbacks.pop() if len(fallbacks) == 1 else None,
        kind=LIST_KIND)
    for ln in lines:
        _settle(ln.reminder, ReminderStatus.LISTED, tx.now, outbox_id=row_id)
        for other in ln.others:
            _settle(other, ReminderStatus.FOLDED, tx.now, outbox_id=row_id)
    return True


def _settle(r: Reminder, status: ReminderStatus, now: datetime, *,
            reason: str | None = None, outbox_id: int | None = None) -> None:
    r.status = status.value
    r.done_at = now
    r.reason = reason
    if outbox_id is not None:
        r.outbox_id = outbox_id


async def render(tx: Tx, lines: Sequence[Line],
                 cases: dict[int, Case]) -> tuple[str, notify.Buttons]:
    """The list's text and its buttons: one per case, opening its card, and those of the
    other subjects' lines."""
    d = await directory(tx.db)
    items: list[dict[str, Any]] = []
    buttons: list[dict[str, Any]] = []
    for ln in lines:
        r = ln.reminder
        if r.case_id is None:
            line = await SUBJECTS[r.kind].line(tx, r)
            items.append({"kind": r.kind, "text": line["text"]})
            if line.get("button"):
                buttons.append(line["button"])
            continue
        case = cases[r.case_id]
        lin = await lineage_of(tx.db, case.building_id, case.unit_id)
        cat = d.categories.get(case.category)
        case_light = light(case, tx.policy, tx.now).value
        items.append({
            "id": case.id, "kind": r.kind, "n": r.n, "light": case_light, "text": None,
            "category": cat.name(tx.texts.locale) if cat else case.category,
            "place": lin.place, "deadline_at": case.deadline_at, "urgent": case.urgent,
            "level": tx.texts.label(f"level_{case.level}"),
        })
        buttons.append(button(tx.texts.plain(f"remind_open_{case_light}", case_id=case.id),
                              Action.OPEN, case.id, case.rev))
    text = tx.texts.render("reminders", items=items)
    rows = [buttons[i:i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)]
    return text, rows


async def freshen(tx: Tx, row: Outbox) -> str | None:
    """A list whose turn has come at the sender: the reminders whose case moved on since it
    was written are dropped and the list rewritten without them. Returns the reason when
    none is left (the caller drops the row); None when the row (perhaps rewritten) goes."""
    listed = list((await tx.db.scalars(
        select(Reminder).where(Reminder.outbox_id == row.id).order_by(Reminder.id))).all())
    if not listed:
        return None  # written before reminders were kept (or erased): goes as it is
    cases = await _cases(tx.db, listed)
    reasons = []
    for r in listed:
        if r.status == ReminderStatus.DROPPED:
            continue
        reason = await _stale(tx, r, cases)
        if reason is not None:
            _settle(r, ReminderStatus.DROPPED, tx.now, reason=reason)
            reasons.append(reason)
    if not reasons:
        return None
    kept = [r for r in listed if r.status != ReminderStatus.DROPPED]
    if not kept:
        return "stale: " + "; ".join(reasons)
    shown = [Line(r, ()) for r in kept if r.status == ReminderStatus.LISTED]
    if not shown:
        return "stale: " + "; ".join(reasons)
    row.text, row.buttons = await render(tx, _lines([ln.reminder for ln in shown]), cases)
    return None

