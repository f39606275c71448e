"""Campaigns (专项任务): a community or street supervisor sends a task to grids (防汛巡查,
消防检查, 入户摸排) with a deadline; each grid's leader gets a task card, and the grid's leader
or a member completes the grid's part with photos (and a location where the task asks for
one) and a note, or reports it cannot be done with a reason.

A campaign is a `campaigns` row and one `campaign_grids` row per grid, written with the
cards in one commit at 发布. A grid's part moves once, from `pending` to `done` or
`cannot`, by a conditional UPDATE: two people pressing 提交 at once record it once.

The sender's summary (one private message, refreshed in place by the handlers when a grid
reports) shows each grid: ✅ done with its photo count and who, ⏳ not done, 🔴 overdue, ⚠️
cannot with the reason; 提醒未完成 reminds the grids not done, at most every REMIND_EVERY.

Overdue (`run_due`, a periodic job of the sweep): a grid not done by the deadline owes its
leader (else its members) a `task_overdue` line on their reminder list, once; a grid still not
done SENDER_AFTER past the deadline is named to the sender, once, in one message per campaign.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from bot.cases import notify, reminders
from bot.cases.outbox import enqueue
from bot.context import Tx
from bot.errors import DomainError
from bot.org.directory import Directory, NodeKind, Place, directory
from bot.org.roles import Actor, RoleName, holders
from bot.user_text import ascii_digits, clean_text, visible
from storage.models import Campaign, CampaignGrid, Outbox, Person, Reminder

log = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    """Where a grid's part of a campaign stands (`campaign_grids.status`; stored, never
    renamed). Overdue is no status: a pending part past the campaign's deadline."""

    PENDING = "pending"
    DONE = "done"
    CANNOT = "cannot"


SENDER_ROLES = (RoleName.STREET_SUPERVISOR, RoleName.COMMUNITY_SUPERVISOR)
STAFF_ROLES = (RoleName.GRID_LEADER, RoleName.GRID_MEMBER)
TITLE_LIMIT = 60
# What to do: the card carries it as a photo's caption (1024 characters) with the rest.
BODY_LIMIT = 700
NOTE_LIMIT = 500
MAX_PHOTOS = 10
# 提醒未完成 at most this often for one campaign.
REMIND_EVERY = timedelta(minutes=30)
# A grid still not done this long after the deadline is named to the sender (once).
SENDER_AFTER = timedelta(hours=24)
# The deadline presets: the local time of day they fall at, and the days from today.
DAY_END = time(18, 0)
PRESETS = {"t": 0, "m": 1, "3": 3, "7": 7}
# A typed deadline lies at most this far ahead.
MAX_AHEAD = timedelta(days=366)
# The summary names this many grids, then says how many more.
SUMMARY_ROWS = 40
RECENT = 10
# The summary's 📷 buttons: the photos of this many grids done.
EVIDENCE_BUTTONS = 8
OVERDUE_KIND = "task_overdue"

_TYPED = re.compile(r"^([0-9]{1,2})[-/.月]([0-9]{1,2})日?\s*([0-9]{1,2})(?:[:点]([0-9]{2}))?分?$")


# --- who ------------------------------------------------------------------------------------


def may_send(actor: Actor) -> bool:
    return bool(actor.node_ids(*SENDER_ROLES))


def is_staff_of(actor: Actor, grid_id: int) -> bool:
    """The grid's leader or one of its members: who may complete its part."""
    return any(actor.has(role, grid_id) for role in STAFF_ROLES)


def _children(d: Directory, place: Place) -> list[Place]:
    kids = [p for p in d.places.values() if p.parent_id == place.id and p.active]
    return sorted(kids, key=lambda p: (p.position, p.id))


def communities(d: Directory, actor: Actor) -> list[tuple[Place, list[Place]]]:
    """The communities the sender supervises (every one of their street's), each with its
    active grids, in the registry's order."""
    held = [p for n in actor.node_ids(*SENDER_ROLES) if (p := d.place(n)) is not None
            and p.active]
    out: list[tuple[Place, list[Place]]] = []
    seen: set[int] = set()
    for place in sorted(held, key=lambda p: (p.kind != NodeKind.STREET, p.position, p.id)):
        comms = (_children(d, place) if place.kind == NodeKind.STREET
                 else [place] if place.kind == NodeKind.COMMUNITY else [])
        for c in comms:
            if c.id not in seen and c.kind == NodeKind.COMMUNITY:
                seen.add(c.id)
                out.append((c, [g for g in _children(d, c) if g.kind == NodeKind.GRID]))
    return out


def streets(d: Directory, actor: Actor) -> list[Place]:
    return sorted((p for n in actor.node_ids(RoleName.STREET_SUPERVISOR)
                   if (p := d.place(n)) is not None and p.active), key=lambda p: p.id)


def grids_in(d: Directory, actor: Actor) -> list[Place]:
    return [g for _c, grids in communities(d, actor) for g in grids]


def _scope_node(d: Directory, actor: Actor, grid_ids: set[int]) -> int:
    """The node the campaign went to: the street or community whose grids are exactly the
    chosen ones, else the sender's widest own node."""
    for street in streets(d, actor):
        every = {g.id for c in _children(d, street) for g in _children(d, c)
                 if g.kind == NodeKind.GRID}
        if every == grid_ids:
            return street.id
    for community, grids in communities(d, actor):
        if {g.id for g in grids} == grid_ids:
            return community.id
    own = streets(d, actor) or [c for c, _g in communities(d, actor)
                                if actor.has(RoleName.COMMUNITY_SUPERVISOR, c.id)]
    return own[0].id


# --- the draft ------------------------------------------------------------------------------


def clean_title(text: str) -> str:
    text = " ".join(clean_text(text, TITLE_LIMIT * 2).split())
    if len(text) > TITLE_LIMIT:
        raise DomainError("task_too_long", limit=TITLE_LIMIT, count=len(text))
    return text if visible(text) else ""


def clean_body(text: str, limit: int = BODY_LIMIT) -> str:
    text = clean_text(text, limit * 2)
    if len(text) > limit:
        raise DomainError("task_too_long", limit=limit, count=len(text))
    return text if visible(text) else ""


def _at(day: Any, zone: ZoneInfo, at: time = DAY_END) -> datetime:
    return datetime.combine(day, at, tzinfo=zone)


def preset_deadline(code: str, now: datetime, tz: str) -> datetime:
    """今天 18:00 (`t`), 明天 18:00 (`m`), 3 天后 (`3`), 7 天后 (`7`): 18:00 local on that day."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    return _at(today + timedelta(days=PRESETS[code]), zone).astimezone(now.tzinfo)


def presets(now: datetime, tz: str) -> list[str]:
    """The presets still ahead of `now` (今天 18:00 only before 18:00)."""
    return [c for c in PRESETS if preset_deadline(c, now, tz) > now]


def parse_deadline(text: str, now: datetime, tz: str) -> datetime:
    """A deadline typed as `12-10 18:00` (also 12月10日 18点, full-width digits): its next
    occurrence after now. DomainError for anything else or more than a year ahead."""
    raw = ascii_digits(text)
    if any(unicodedata.category(ch).startswith("N") and not "0" <= ch <= "9" for ch in raw):
        raise DomainError("task_deadline_bad")
    raw = unicodedata.normalize("NFKC", raw).strip()
    m = _TYPED.match(raw)
    if m is None:
        raise DomainError("task_deadline_bad")
    month, day, hour, minute = (int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                int(m.group(4) or 0))
    zone = ZoneInfo(tz)
    year = now.astimezone(zone).year
    for y in (year, year + 1):
        try:
            at = datetime(y, month, day, hour, minute, tzinfo=zone).astimezone(now.tzinfo)
        except ValueError:
            raise DomainError("task_deadline_bad") from None
        if at > now:
            if at - now > MAX_AHEAD:
                break
            return at
    raise DomainError("task_deadline_bad")


@dataclass(frozen=True)
class Draft:
    title: str
    body: str
    grid_ids: tuple[int, ...]
    deadline_at: datetime
    needs_location: bool


# --- 发布 -------------------------------------------------------------------------------------


async def _staff(tx: Tx, grid_id: int) -> list[Person]:
    """Who gets a grid's card and its alerts: the leader, else the members."""
    return (await holders(tx.db, RoleName.GRID_LEADER, grid_id)
            or await holders(tx.db, RoleName.GRID_MEMBER, grid_id))


async def publish(tx: Tx, actor: Actor, draft: Draft, photos: Sequence[str]) -> Campaign:
    """The campaign and a part per grid, and each grid's card to its leader, in one commit.
    Checked again here: who sends, their grids, the deadline still ahead."""
    if not may_send(actor):
        raise DomainError("task_not_sender")
    d = await directory(tx.db)
    mine = {g.id for g in grids_in(d, actor)}
    chosen = set(draft.grid_ids)
    if not chosen:
        raise DomainError("task_no_grids")
    if not chosen <= mine:
        raise DomainError("task_out_of_scope")
    if draft.deadline_at <= tx.now:
        raise DomainError("task_deadline_past")
    title, body = clean_title(draft.title), clean_body(draft.body)
    if not title or not body:
        raise DomainError("task_empty")
    campaign = Campaign(title=title, body=body, photos=list(photos[:MAX_PHOTOS]),
                        sender_id=actor.id, scope_node_id=_scope_node(d, actor, chosen),
                        deadline_at=draft.deadline_at, needs_location=draft.needs_location,
                        created_at=tx.now)
    tx.db.add(campaign)
    await tx.db.flush()
    order = {g.id: i for i, g in enumerate(grids_in(d, actor))}
    parts = [CampaignGrid(campaign_id=campaign.id, grid_id=g, status=TaskStatus.PENDING.value,
                          photos=[]) for g in sorted(chosen, key=order.__getitem__)]
    tx.db.add_all(parts)
    await tx.db.flush()
    for part in parts:
        await send_card(tx, campaign, part, "new")
    await tx.db.commit()
    return campaign


async def send_card(tx: Tx, campaign: Campaign, part: CampaignGrid, kind: str,
                    stamp: str = "") -> int:
    """The grid's task card to its leader (else its members), privately; where Telegram
    will not let us write to them, to the grid's work chat. Returns how many people."""
    d = await directory(tx.db)
    grid = d.place(part.grid_id)
    people = await _staff(tx, part.grid_id)
    text, buttons = await card(tx, campaign, part, kind)
    for person in people:
        await notify.send_to_person(
            tx, f"task:{campaign.id}:{kind}{stamp}:{part.id}:{person.id}", person.id, text,
            fallback_chat_id=grid.chat_id if grid is not None else None,
            photos=list(campaign.photos or []), buttons=buttons)
    return len(people)


async def sender_line(tx: Tx, campaign: Campaign) -> str:
    d = await directory(tx.db)
    place = d.place(campaign.scope_node_id)
    name = await notify.person_name(tx, campaign.sender_id)
    return f"{place.name} {name}" if place is not None else name


async def card(tx: Tx, campaign: Campaign, part: CampaignGrid,
               kind: str) -> tuple[str, notify.Buttons]:
    d = await directory(tx.db)
    grid = d.place(part.grid_id)
    text = tx.texts.render("task_card", task=view(campaign),
                           task_grid=grid.name if grid else "",
                           task_sender=await sender_line(tx, campaign), task_kind=kind)
    t = tx.texts
    buttons: notify.Buttons = []
    if part.status == TaskStatus.PENDING:
        buttons = [[{"text": t.plain("btn_task_done"), "callback_data": f"tk:d:{part.id}"},
                    {"text": t.plain("btn_task_cannot"), "callback_data": f"tk:x:{part.id}"}]]
    return text, buttons


def view(campaign: Campaign) -> dict[str, Any]:
    return {"id": campaign.id, "title": campaign.title, "body": campaign.body,
            "deadline_at": campaign.deadline_at, "needs_location": campaign.needs_location,
            "photos": len(campaign.photos or [])}


async def set_summary(tx: Tx, campaign_id: int, chat_id: int, message_id: int) -> None:
    await tx.db.execute(update(Campaign).where(Campaign.id == campaign_id)
                        .values(summary_chat_id=chat_id, summary_message_id=message_id))
    await tx.db.commit()


# --- a grid's report ------------------------------------------------------------------------


async def part_of(tx: Tx, actor: Actor, part_id: int) -> tuple[Campaign, CampaignGrid]:
    """A grid's part that `actor` may report on, still pending."""
    part = await tx.db.get(CampaignGrid, part_id) if 0 < part_id <= 2**31 - 1 else None
    campaign = await tx.db.get(Campaign, part.campaign_id) if part is not None else None
    if part is None or campaign is None:
        raise DomainError("task_gone")
    if not is_staff_of(actor, part.grid_id):
        raise DomainError("task_not_staff")
    if part.status != TaskStatus.PENDING:
        raise DomainError(f"task_already_{part.status}",
                          name=await notify.person_name(tx, part.done_by_id))
    return campaign, part


async def _settle(tx: Tx, actor: Actor, part_id: int, status: TaskStatus,
                  **values: Any) -> Campaign:
    campaign, part = await part_of(tx, actor, part_id)
    done = await tx.db.execute(
        update(CampaignGrid).where(CampaignGrid.id == part.id,
                                   CampaignGrid.status == TaskStatus.PENDING.value)
        .values(status=status.value, done_at=tx.now, done_by_id=actor.id, **values)
        .execution_options(synchronize_session=False))
    if not getattr(done, "rowcount", 1):
        await tx.db.refresh(part)
        raise DomainError(f"task_already_{part.status}",
                          name=await notify.person_name(tx, part.done_by_id))
    await tx.db.commit()
    return campaign


async def complete(tx: Tx, actor: Actor, part_id: int, note: str, photos: Sequence[str],
                   location: tuple[float, float] | None) -> Campaign:
    """完成: at least one photo, a note, and a location where the task asks for one."""
    campaign, _part = await part_of(tx, actor, part_id)
    note = clean_body(note, NOTE_LIMIT)
    if not photos:
        raise DomainError("task_need_photo")
    if not note:
        raise DomainError("task_need_note")
    if campaign.needs_location and location is None:
        raise DomainError("task_need_location")
    lat, lon = location if location is not None else (None, None)
    return await _settle(tx, actor, part_id, TaskStatus.DONE, note=note,
                         photos=list(photos[:MAX_PHOTOS]), lat=lat, lon=lon)


async def cannot(tx: Tx, actor: Actor, part_id: int, reason: str) -> Campaign:
    """无法完成, with the reason (kept as the part's note)."""
    reason = clean_body(reason, NOTE_LIMIT)
    if not reason:
        raise DomainError("task_need_reason")
    return await _settle(tx, actor, part_id, TaskStatus.CANNOT, note=reason)


# --- the sender's summary -------------------------------------------------------------------


async def parts(tx: Tx, campaign_id: int) -> list[CampaignGrid]:
    return list((await tx.db.scalars(select(CampaignGrid).where(
        CampaignGrid.campaign_id == campaign_id).order_by(CampaignGrid.id))).all())


def state_of(campaign: Campaign, part: CampaignGrid, now: datetime) -> str:
    """done, cannot, overdue or pending: what the summary and the lists show."""
    if part.status != TaskStatus.PENDING:
        return part.status
    return "overdue" if now >= campaign.deadline_at else "pending"


async def get_sent(tx: Tx, actor: Actor, campaign_id: int) -> Campaign:
    campaign = (await tx.db.get(Campaign, campaign_id) if 0 < campaign_id <= 2**31 - 1
                else None)
    if campaign is None or campaign.sender_id != actor.id:
        raise DomainError("task_gone")
    return campaign


async def _reminded_at(tx: Tx, campaign_id: int) -> datetime | None:
    """When 提醒未完成 last wrote a reminder for the campaign (its outbox rows' keys)."""
    at: datetime | None = await tx.db.scalar(
        select(func.max(Outbox.created_at))
        .where(Outbox.dedupe_key.like(f"task:{campaign_id}:remind%")))
    return at


def _grid_name(d: Directory, part: CampaignGrid) -> str:
    grid = d.place(part.grid_id)
    return grid.name if grid is not None else str(part.grid_id)


async def summary(tx: Tx, campaign: Campaign) -> tuple[str, notify.Buttons]:
    d = await directory(tx.db)
    rows = await parts(tx, campaign.id)
    names = await notify.names_of(tx, (p.done_by_id for p in rows))
    order = {"overdue": 0, "pending": 1, "cannot": 2, "done": 3}
    shown: list[dict[str, Any]] = []
    for p in rows:
        grid = d.place(p.grid_id)
        shown.append({"grid": grid.name if grid else str(p.grid_id),
                      "state": state_of(campaign, p, tx.now), "photos": len(p.photos or []),
                      "by": names.get(p.done_by_id or 0, ""), "at": p.done_at,
                      "reason": p.note or ""})
    shown.sort(key=lambda r: order[r["state"]])
    done = sum(1 for p in rows if p.status == TaskStatus.DONE)
    waiting = [p for p in rows if p.status == TaskStatus.PENDING]
    text = tx.texts.render(
        "task_summary", task=view(campaign), task_rows=shown[:SUMMARY_ROWS],
        task_more=max(0, len(shown) - SUMMARY_ROWS), task_done=done, task_total=len(rows),
        task_reminded_at=await _reminded_at(tx, campaign.id))
    t = tx.texts
    buttons: notify.Buttons = [[{"text": t.plain("btn_task_refresh"),
                                 "callback_data": f"ts:f:{campaign.id}"}]]
    if waiting:
        buttons[0].append({"text": t.plain("btn_task_remind"),
                           "callback_data": f"ts:m:{campaign.id}"})
    # The photos of the grids done, one button each (the first few: few buttons).
    photos = [{"text": t.plain("btn_task_photos", place=_grid_name(d, p)),
               "callback_data": f"ts:p:{p.id}"}
              for p in rows if p.status == TaskStatus.DONE][:EVIDENCE_BUTTONS]
    buttons += [photos[i:i + 2] for i in range(0, len(photos), 2)]
    return text, buttons


async def send_evidence(tx: Tx, actor: Actor, part_id: int) -> None:
    """A done grid's photos and note, privately to the sender who asks (📷 on the summary)."""
    part = await tx.db.get(CampaignGrid, part_id) if 0 < part_id <= 2**31 - 1 else None
    if part is None or part.status != TaskStatus.DONE:
        raise DomainError("task_gone")
    campaign = await get_sent(tx, actor, part.campaign_id)
    grid = (await directory(tx.db)).place(part.grid_id)
    text = tx.texts.label("task_evidence", id=campaign.id, place=grid.name if grid else "",
                          name=await notify.person_name(tx, part.done_by_id),
                          text=part.note or "")
    await enqueue(tx.db, f"task:{campaign.id}:evidence:{part.id}:{int(tx.now.timestamp())}",
                  actor.id, str(text), tx.now, person_id=actor.id,
                  photos=list(part.photos or []))
    await tx.db.commit()


async def remind(tx: Tx, actor: Actor, campaign_id: int) -> int:
    """提醒未完成: the card again to each grid not done, at most every REMIND_EVERY.
    Returns how many grids were reminded."""
    campaign = await get_sent(tx, actor, campaign_id)
    last = await _reminded_at(tx, campaign.id)
    if last is not None and tx.now < last + REMIND_EVERY:
        wait = last + REMIND_EVERY - tx.now
        raise DomainError("task_reminded_recently",
                          minutes=max(1, int(wait.total_seconds() // 60) + 1))
    stamp = tx.now.strftime("%Y%m%d%H%M")
    grids = 0
    for part in await parts(tx, campaign.id):
        if part.status == TaskStatus.PENDING and await send_card(tx, campaign, part, "remind",
                                                                 stamp):
            grids += 1
    await tx.db.commit()
    return grids


# --- /tasks ---------------------------------------------------------------------------------


async def recent(tx: Tx, actor: Actor) -> tuple[str, notify.Buttons]:
    """The campaigns the person sent (with done/total), and those sent to the grids they
    work in (with their grid's state); RECENT of each, newest first. A button opens the card
    of each of their grids' parts not yet done (a member gets none of the cards)."""
    sent_items = []
    if may_send(actor):
        sent = (await tx.db.scalars(select(Campaign).where(Campaign.sender_id == actor.id)
                                    .order_by(Campaign.id.desc()).limit(RECENT))).all()
        for c in sent:
            rows = await parts(tx, c.id)
            sent_items.append({**view(c), "done": sum(1 for p in rows
                                                      if p.status == TaskStatus.DONE),
                               "total": len(rows)})
    grid_ids = actor.node_ids(*STAFF_ROLES)
    mine = []
    opens: list[dict[str, Any]] = []
    if grid_ids:
        d = await directory(tx.db)
        found = (await tx.db.execute(
            select(Campaign, CampaignGrid).join(CampaignGrid,
                                                CampaignGrid.campaign_id == Campaign.id)
            .where(CampaignGrid.grid_id.in_(grid_ids))
            .order_by(Campaign.id.desc(), CampaignGrid.id).limit(RECENT))).all()
        for c, p in found:
            grid = d.place(p.grid_id)
            mine.append({**view(c), "grid": grid.name if grid else "",
                         "state": state_of(c, p, tx.now)})
            if p.status == TaskStatus.PENDING:
                opens.append({"text": tx.texts.plain("btn_task_open", id=c.id),
                              "callback_data": f"tk:o:{p.id}"})
    text = tx.texts.render("task_list", task_sent=sent_items, task_mine=mine)
    return text, [opens[i:i + 4] for i in range(0, len(opens), 4)]


# --- overdue --------------------------------------------------------------------------------


async def _stale(tx: Tx, reminder: Reminder) -> str | None:
    part = (await tx.db.get(CampaignGrid, reminder.campaign_grid_id)
            if reminder.campaign_grid_id is not None else None)
    if part is None:
        return "the campaign's grid is gone"
    if part.status != TaskStatus.PENDING:
        return f"campaign grid {part.id} is {part.status}"
    return None


async def _line(tx: Tx, reminder: Reminder) -> dict[str, Any]:
    part = await tx.db.get(CampaignGrid, reminder.campaign_grid_id)
    assert part is not None
    campaign = await tx.db.get(Campaign, part.campaign_id)
    assert campaign is not None
    grid = (await directory(tx.db)).place(part.grid_id)
    t = tx.texts
    return {"text": t.label("task_overdue_line", id=campaign.id, text=campaign.title,
                            place=grid.name if grid else ""),
            "button": {"text": t.plain("btn_task_open", id=campaign.id),
                       "callback_data": f"tk:o:{part.id}"},
            "pressing": False}


reminders.register(OVERDUE_KIND, reminders.Subject(stale=_stale, line=_line))


async def run_due(tx: Tx) -> int:
    """The sweep's periodic step: grids past their campaign's deadline and not done owe
    their leader a reminder line, once; still not done SENDER_AFTER past the deadline, the
    sender is told once per campaign. Each part is claimed by a conditional UPDATE in the
    commit that writes what it owes. Returns how many messages (reminders) were written."""
    try:
        return await _leaders_due(tx) + await _senders_due(tx)
    except Exception:
        await tx.db.rollback()
        log.exception("campaign deadlines failed; retried at the next sweep")
        return 0


async def _claim(tx: Tx, part_id: int, column: Any) -> bool:
    done = await tx.db.execute(
        update(CampaignGrid).where(CampaignGrid.id == part_id, column.is_(None),
                                   CampaignGrid.status == TaskStatus.PENDING.value)
        .values({column.key: tx.now}).execution_options(synchronize_session=False))
    return bool(getattr(done, "rowcount", 1))


async def _leaders_due(tx: Tx) -> int:
    due = (await tx.db.execute(
        select(CampaignGrid.id, CampaignGrid.grid_id, Campaign.id)
        .join(Campaign, Campaign.id == CampaignGrid.campaign_id)
        .where(CampaignGrid.status == TaskStatus.PENDING.value,
               CampaignGrid.leader_alerted_at.is_(None), Campaign.deadline_at <= tx.now)
        .order_by(CampaignGrid.id))).all()
    written = 0
    for part_id, grid_id, campaign_id in due:
        if not await _claim(tx, part_id, CampaignGrid.leader_alerted_at):
            continue
        people = await _staff(tx, grid_id)
        await reminders.owe_about(tx, f"task:{campaign_id}:overdue:{part_id}", people,
                                  OVERDUE_KIND, campaign_grid_id=part_id,
                                  due_at=tx.policy.quiet_until(tx.now))
        written += len(people)
    if due:
        await tx.db.commit()
    return written


async def _senders_due(tx: Tx) -> int:
    due = (await tx.db.execute(
        select(CampaignGrid.id, CampaignGrid.grid_id, Campaign.id)
        .join(Campaign, Campaign.id == CampaignGrid.campaign_id)
        .where(CampaignGrid.status == TaskStatus.PENDING.value,
               CampaignGrid.sender_alerted_at.is_(None),
               Campaign.deadline_at <= tx.now - SENDER_AFTER)
        .order_by(Campaign.id, CampaignGrid.id))).all()
    by_campaign: dict[int, list[int]] = {}
    for part_id, grid_id, campaign_id in due:
        if await _claim(tx, part_id, CampaignGrid.sender_alerted_at):
            by_campaign.setdefault(campaign_id, []).append(grid_id)
    d = await directory(tx.db)
    for campaign_id, grid_ids in by_campaign.items():
        campaign = await tx.db.get(Campaign, campaign_id)
        assert campaign is not None
        names = [p.name for g in grid_ids if (p := d.place(g)) is not None]
        text = tx.texts.label("task_overdue_sender", id=campaign.id, text=campaign.title,
                              count=len(names), place="、".join(names[:SUMMARY_ROWS]))
        buttons = [[{"text": tx.texts.plain("btn_task_refresh"),
                     "callback_data": f"ts:f:{campaign.id}"},
                    {"text": tx.texts.plain("btn_task_remind"),
                     "callback_data": f"ts:m:{campaign.id}"}]]
        await enqueue(tx.db, f"task:{campaign.id}:late", campaign.sender_id, str(text),
                      tx.now, person_id=campaign.sender_id, buttons=buttons,
                      not_before=tx.policy.quiet_until(tx.now))
    if due:
        await tx.db.commit()
    return len(by_campaign)
