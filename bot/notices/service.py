"""Notices (通知) with read receipts: a grid leader or supervisor sends one text (and up to
ten photos) to every bound building and unit chat of a scope; a head of each place confirms
it with 已阅; the sender follows the count and reminds the heads who have not confirmed.

A notice is a row from its draft on (`notices`); sending makes one `notice_copies` row and
one outbox row per chat in the transaction that marks it sent, so the outbox paces the
messages within Telegram's limits and a restart neither loses nor repeats one. A copy is
confirmed with a conditional UPDATE: two heads pressing at once confirm it once.

A place can confirm while someone may press its 已阅: its building head (a unit group: its unit
head or the building's). A place with a group but nobody to confirm (no head yet) still gets
the notice, but is counted apart (`Tally.nobody`): it neither keeps a notice from being
complete nor is anyone reminded for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from markupsafe import Markup
from sqlalchemy import select, update

from bot.cases import notify
from bot.cases.buttons import NoticeAnswer, notice_button
from bot.cases.outbox import enqueue
from bot.context import Tx
from bot.errors import DomainError
from bot.org.directory import Directory, NodeKind, Place, directory
from bot.org.roles import Actor, RoleName
from bot.texts import Texts
from bot.user_text import clean_text, visible
from storage.models import Notice, NoticeCopy


class NoticeStatus(StrEnum):
    """Where a notice stands (`notices.status`; stored, never renamed)."""

    DRAFT = "draft"  # being written: text and photos not yet sent
    SENT = "sent"
    CANCELLED = "cancelled"  # the sender dropped the draft


SENDER_ROLES = (RoleName.STREET_SUPERVISOR, RoleName.COMMUNITY_SUPERVISOR,
                RoleName.GRID_LEADER)
KIND_RANK: dict[str, int] = {NodeKind.STREET: 0, NodeKind.COMMUNITY: 1, NodeKind.GRID: 2}
TEXT_LIMIT = 3500
MAX_PHOTOS = 10
# Heads are reminded of one notice at most this often: a reminder is a private message.
REMIND_EVERY = timedelta(minutes=30)
# The summary names this many places not yet confirmed, then says how many more.
MISSING_SHOWN = 15
RECENT = 10
# A scope picker with more options than this shows the sender's own places and one level
# below only.
MAX_SCOPES = 24


# --- scope -----------------------------------------------------------------------------------


def _children(d: Directory) -> dict[int, list[Place]]:
    kids: dict[int, list[Place]] = {}
    for place in d.places.values():
        if place.active and place.parent_id is not None:
            kids.setdefault(place.parent_id, []).append(place)
    for items in kids.values():
        items.sort(key=lambda p: (p.position, p.id))
    return kids


def held(d: Directory, actor: Actor) -> list[Place]:
    """The streets, communities and grids `actor` may send notices to, widest first."""
    places = [p for n in actor.node_ids(*SENDER_ROLES) if (p := d.place(n)) is not None
              and p.kind in KIND_RANK and p.active]
    return sorted(places, key=lambda p: (KIND_RANK[p.kind], p.position, p.id))


def may_send(actor: Actor) -> bool:
    return bool(actor.node_ids(*SENDER_ROLES))


def scopes(d: Directory, actor: Actor) -> list[Place]:
    """The places offered as a notice's scope: what they hold and the grids and communities
    below it (only one level below when that would be too many buttons)."""
    kids = _children(d)
    out: list[Place] = []
    for top in held(d, actor):
        below = [c for c in kids.get(top.id, []) if c.kind in KIND_RANK]
        grand = [g for c in below for g in kids.get(c.id, []) if g.kind in KIND_RANK]
        for place in (top, *below, *grand):
            if place not in out:
                out.append(place)
    if len(out) > MAX_SCOPES:
        out = []
        for top in held(d, actor):
            for place in (top, *(c for c in kids.get(top.id, []) if c.kind in KIND_RANK)):
                if place not in out:
                    out.append(place)
    return out


def within(d: Directory, actor: Actor, place: Place) -> bool:
    """Whether `place` is under (or is) a node `actor` may send notices to."""
    mine = {p.id for p in held(d, actor)}
    return place.id in mine or any(a.id in mine for a in d.ancestors(place))


def buildings_of(d: Directory, actor: Actor) -> list[Place]:
    """The buildings a sender may choose one by one (选择楼栋), in the registry's order."""
    return [b for b in d.buildings() if within(d, actor, b)]


def targets(d: Directory, kind: str, codes: Sequence[str]) -> list[Place]:
    """The bound building and unit chats a scope reaches, each once, in tree order."""
    kids = _children(d)
    roots = [p for c in codes if (p := d.by_code.get(c)) is not None]
    out: list[Place] = []
    seen: set[int] = set()

    def walk(place: Place) -> None:
        if place.id in seen or not place.active:
            return
        seen.add(place.id)
        if place.kind in (NodeKind.BUILDING, NodeKind.UNIT) and place.chat_id:
            out.append(place)
        for child in kids.get(place.id, []):
            walk(child)

    for root in roots:
        walk(root)
    return out


# --- drafting and sending -------------------------------------------------------------------


async def create(tx: Tx, actor: Actor, kind: str, codes: Sequence[str]) -> Notice:
    """A draft notice to `codes` (one street, community or grid; or buildings)."""
    d = await directory(tx.db)
    if not may_send(actor):
        raise DomainError("not_allowed")
    places = [d.by_code.get(c) for c in codes]
    if not places or any(p is None or not within(d, actor, p) for p in places):
        raise DomainError("notice_out_of_scope")
    notice = Notice(sender_id=actor.id, scope_kind=kind, scope=list(codes),
                    status=NoticeStatus.DRAFT, created_at=tx.now)
    tx.db.add(notice)
    await tx.db.flush()
    return notice


def clean(text: str) -> str:
    """The notice's text as it will be sent; refused when longer than TEXT_LIMIT."""
    text = clean_text(text, TEXT_LIMIT * 2)
    if len(text) > TEXT_LIMIT:
        raise DomainError("notice_too_long", limit=TEXT_LIMIT, count=len(text))
    return text if visible(text) else ""


async def reach(tx: Tx, notice: Notice) -> list[Place]:
    return targets(await directory(tx.db), notice.scope_kind, notice.scope)


async def _draft(tx: Tx, actor: Actor, notice_id: int) -> Notice:
    notice = await tx.db.get(Notice, notice_id, with_for_update=True)
    if notice is None or notice.sender_id != actor.id:
        raise DomainError("notice_gone")
    if notice.status != NoticeStatus.DRAFT:
        raise DomainError("notice_not_draft")
    return notice


def message(tx: Tx, notice: Notice, sender: str) -> str:
    """The notice as the groups read it."""
    return tx.texts.render("notice_message", text=notice.text, sender=sender)


async def sender_line(tx: Tx, notice: Notice) -> str:
    """Who sends it: the widest place they hold and their name (网格长 张三，柏树郢社区)."""
    d = await directory(tx.db)
    roles = d.roles_of.get(notice.sender_id, ()) if notice.sender_id is not None else ()
    places = sorted(((RoleName(r), p) for r, n in roles if (p := d.place(n)) is not None
                     and RoleName(r) in SENDER_ROLES),
                    key=lambda rp: KIND_RANK.get(rp[1].kind, 9))
    name = await notify.person_name(tx, notice.sender_id)
    if not places:
        return name
    role, place = places[0]
    return tx.texts.plain("notice_sender", place=place.name,
                          role=tx.texts.plain(f"role_{role.value}"), name=name)


async def send(tx: Tx, actor: Actor, notice_id: int, text: str,
               photos: Sequence[str]) -> tuple[Notice, int]:
    """Send the draft: one copy and one outbox row per chat, and the notice marked sent, in
    one commit. Returns the notice and the number of chats."""
    notice = await _draft(tx, actor, notice_id)
    notice.text = clean(text)
    notice.photos = list(photos[:MAX_PHOTOS])
    if not notice.text:
        raise DomainError("notice_empty")
    places = await reach(tx, notice)
    if not places:
        raise DomainError("notice_no_chats")
    copies = [NoticeCopy(notice_id=notice.id, node_id=p.id, chat_id=p.chat_id) for p in places]
    tx.db.add_all(copies)
    await tx.db.flush()
    body = message(tx, notice, await sender_line(tx, notice))
    label = tx.texts.plain("btn_notice_read")
    for copy in copies:
        await enqueue(tx.db, f"notice:{notice.id}:{copy.node_id}", copy.chat_id, body, tx.now,
                      photos=notice.photos,
                      buttons=[[notice_button(label, copy.id, NoticeAnswer.READ)]])
    notice.status, notice.sent_at = NoticeStatus.SENT, tx.now
    await tx.db.commit()
    return notice, len(copies)


async def cancel(tx: Tx, actor: Actor, notice_id: int) -> None:
    notice = await tx.db.get(Notice, notice_id)
    if (notice is not None and notice.sender_id == actor.id
            and notice.status == NoticeStatus.DRAFT):
        notice.status = NoticeStatus.CANCELLED
        await tx.db.commit()


# --- 已阅 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Confirmed:
    notice: Notice
    copy: NoticeCopy
    confirmed: int
    total: int


def _may_confirm(d: Directory, actor: Actor, place: Place) -> bool:
    """A head of the place: of the building; of a unit, its unit head or the building's."""
    if place.kind == NodeKind.UNIT:
        return (actor.has(RoleName.UNIT_HEAD, place.id)
                or (place.parent_id is not None
                    and actor.has(RoleName.BUILDING_HEAD, place.parent_id)))
    return actor.has(RoleName.BUILDING_HEAD, place.id)


async def confirm(tx: Tx, actor: Actor, copy_id: int) -> Confirmed:
    copy = await tx.db.get(NoticeCopy, copy_id)
    if copy is None:
        raise DomainError("notice_gone")
    d = await directory(tx.db)
    place = d.place(copy.node_id)
    if place is None or not _may_confirm(d, actor, place):
        raise DomainError("notice_not_head")
    # The notice's row is locked first: the confirmations of one notice are made one after
    # the other, so of the last two pressed at once the second counts after the first has
    # committed and sees both (each counting only its own would leave the notice incomplete
    # for ever, and 已全部确认 unsent). SQLite has one writer at a time anyway.
    notice = await tx.db.get(Notice, copy.notice_id, with_for_update=True)
    assert notice is not None
    done = await tx.db.execute(
        update(NoticeCopy).where(NoticeCopy.id == copy.id, NoticeCopy.confirmed_at.is_(None))
        .values(confirmed_by_id=actor.id, confirmed_at=tx.now)
        .execution_options(synchronize_session=False))
    await tx.db.refresh(copy)  # who confirmed it, read after the lock
    if not getattr(done, "rowcount", 1):
        raise DomainError("notice_already",
                          name=await notify.person_name(tx, copy.confirmed_by_id))
    tally = await tally_of(tx, notice.id)
    if tally.complete and notice.sender_id is not None:
        await notify.send_to_person(
            tx, f"notice:{notice.id}:all", notice.sender_id,
            tx.texts.label("notice_all_confirmed", id=notice.id, total=tally.can,
                           count=len(tally.nobody)))
    await tx.db.commit()
    return Confirmed(notice, copy, tally.confirmed, tally.can)


# --- who can confirm ------------------------------------------------------------------------


def _heads(d: Directory) -> dict[int, list[int]]:
    """The building and unit heads of the registry, by the node they head."""
    out: dict[int, list[int]] = {}
    for person_id, roles in d.roles_of.items():
        for role, node_id in roles:
            if role in (RoleName.BUILDING_HEAD, RoleName.UNIT_HEAD):
                out.setdefault(node_id, []).append(person_id)
    for people in out.values():
        people.sort()
    return out


def _to_remind(heads: dict[int, list[int]], place: Place) -> list[int]:
    """Who is reminded for a place not yet confirmed: a unit group's unit heads, else (and
    for a building group) the building's heads. Nobody: the place cannot be confirmed."""
    if place.kind == NodeKind.UNIT and heads.get(place.id):
        return heads[place.id]
    building = place.id if place.kind == NodeKind.BUILDING else place.parent_id
    return heads.get(building, []) if building is not None else []


def nobody_to_confirm(d: Directory, places: Sequence[Place]) -> list[Place]:
    """The places among `places` where nobody may press 已阅 (no building or unit head)."""
    heads = _heads(d)
    return [p for p in places if not _to_remind(heads, p)]


@dataclass(frozen=True)
class Tally:
    """A sent notice's groups as the sender follows them."""

    confirmed: int  # groups confirmed
    waiting: list[Place]  # not yet confirmed, by a place with someone who may confirm
    nobody: list[Place]  # not confirmed, and nobody may: no head (counted apart)

    @property
    def can(self) -> int:
        """The groups that can be confirmed: those confirmed and those waiting."""
        return self.confirmed + len(self.waiting)

    @property
    def complete(self) -> bool:
        """Every group that can be confirmed has been (and there is at least one)."""
        return self.can > 0 and not self.waiting


async def tally_of(tx: Tx, notice_id: int) -> Tally:
    d = await directory(tx.db)
    heads = _heads(d)
    rows = (await tx.db.execute(
        select(NoticeCopy.node_id, NoticeCopy.confirmed_at)
        .where(NoticeCopy.notice_id == notice_id).order_by(NoticeCopy.id))).all()
    confirmed, waiting, nobody = 0, [], []
    for node_id, confirmed_at in rows:
        place = d.place(node_id)
        if confirmed_at is not None:
            confirmed += 1
        elif place is not None and place.active and _to_remind(heads, place):
            waiting.append(place)
        elif place is not None:
            nobody.append(place)
    return Tally(confirmed, waiting, nobody)


# --- the sender's view ----------------------------------------------------------------------


async def visible_to(tx: Tx, actor: Actor, notice: Notice) -> bool:
    """The sender, and supervisors whose area the notice went to."""
    if notice.sender_id == actor.id:
        return True
    d = await directory(tx.db)
    supervised = [p for p in held(d, actor) if p.kind in (NodeKind.STREET, NodeKind.COMMUNITY)]
    if not supervised:
        return False
    ids = {p.id for p in supervised}
    places = [p for c in notice.scope if (p := d.by_code.get(c)) is not None]
    return bool(places) and all(p.id in ids or any(a.id in ids for a in d.ancestors(p))
                                for p in places)


async def get_sent(tx: Tx, actor: Actor, notice_id: int) -> Notice:
    notice = await tx.db.get(Notice, notice_id) if 0 < notice_id <= 2**31 - 1 else None
    if (notice is None or notice.status != NoticeStatus.SENT
            or not await visible_to(tx, actor, notice)):
        raise DomainError("notice_gone")
    return notice


def _describe(d: Directory, place: Place) -> str:
    if place.kind == NodeKind.UNIT:
        parent = d.place(place.parent_id)
        return f"{parent.name} {place.name}" if parent is not None else place.name
    return place.name


def named(d: Directory, places: Sequence[Place]) -> tuple[list[str], int]:
    """The first MISSING_SHOWN places by name, and how many more there are."""
    return ([_describe(d, p) for p in places[:MISSING_SHOWN]],
            max(0, len(places) - MISSING_SHOWN))


async def summary(tx: Tx, notice: Notice) -> tuple[str, list[list[dict[str, Any]]]]:
    """已确认 32/40 (of the groups that can confirm), the places missing (capped), the places
    with nobody to confirm (counted apart), with 刷新 and 提醒未确认 (while someone is left to
    remind)."""
    d = await directory(tx.db)
    tally = await tally_of(tx, notice.id)
    missing, more = named(d, tally.waiting)
    nobody, nobody_more = named(d, tally.nobody)
    text = tx.texts.render(
        "notice_summary", id=notice.id, sent_at=notice.sent_at,
        text=_line(notice.text), confirmed=tally.confirmed, can=tally.can,
        complete=tally.complete, missing=missing, more=more, nobody=nobody,
        nobody_count=len(tally.nobody), nobody_more=nobody_more,
        reminded_at=notice.reminded_at)
    t = tx.texts
    buttons = [[notice_button(t.plain("btn_notice_refresh"), notice.id, NoticeAnswer.REFRESH)]]
    if tally.waiting:
        buttons[0].append(notice_button(t.plain("btn_notice_remind"), notice.id,
                                        NoticeAnswer.REMIND))
    return text, buttons


def _line(text: str, size: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


# An alert (the answer to 提醒未确认) holds at most 200 characters.
ALERT_LIMIT = 200


@dataclass(frozen=True)
class Reminded:
    """Who 提醒未确认 reminded, for which places, and the places nobody could be."""

    people: list[tuple[str, list[str]]]  # name, the places they were reminded of
    nobody: list[str]  # places not confirmed where nobody may confirm

    def answer(self, texts: Texts) -> str:
        """The sender's answer: each person named with their places; when that would not fit
        an alert, how many people for how many places."""
        places = sum(len(p) for _n, p in self.people)
        people = [{"name": n, "places": p, "first": i == 0}
                  for i, (n, p) in enumerate(self.people)]
        for shown, nobody in ((people, self.nobody), ([], self.nobody), ([], [])):
            text = Markup(texts.render("notice_reminded", count=len(self.people),
                                       places=places, people=shown, nobody=nobody[:3],
                                       nobody_count=len(self.nobody))).unescape()
            if len(text) <= ALERT_LIMIT:
                break
        return text


async def remind(tx: Tx, actor: Actor, notice_id: int) -> Reminded:
    """A private reminder, with the notice's text, to each head of a place that has not
    confirmed (the unit head for a unit group, else the building head); at most once per
    REMIND_EVERY. Places with nobody to confirm are named, not reminded; when nobody at all
    was reminded the last reminder's time stays as it was."""
    notice = await tx.db.get(Notice, notice_id, with_for_update=True)
    if notice is None or notice.sender_id != actor.id or notice.status != NoticeStatus.SENT:
        raise DomainError("notice_gone")
    if notice.reminded_at is not None and tx.now < notice.reminded_at + REMIND_EVERY:
        wait = notice.reminded_at + REMIND_EVERY - tx.now
        raise DomainError("notice_reminded_recently",
                          minutes=max(1, int(wait.total_seconds() // 60) + 1))
    d = await directory(tx.db)
    heads = _heads(d)
    tally = await tally_of(tx, notice.id)
    people: dict[int, list[str]] = {}
    for place in tally.waiting:
        for person_id in _to_remind(heads, place):
            people.setdefault(person_id, []).append(_describe(d, place))
    stamp = tx.now.strftime("%Y%m%d%H%M")
    for person_id, places in people.items():
        await notify.send_to_person(
            tx, f"notice:{notice.id}:remind:{stamp}:{person_id}", person_id,
            tx.texts.render("notice_remind", text=notice.text, places=places,
                            sender=await sender_line(tx, notice)),
            photos=list(notice.photos or []))
    if people:
        notice.reminded_at = tx.now
    names = await notify.names_of(tx, people)
    await tx.db.commit()
    return Reminded([(names.get(i, str(i)), places) for i, places in people.items()],
                    [_describe(d, p) for p in tally.nobody])


async def recent(tx: Tx, actor: Actor) -> str:
    """The notices the person sent (supervisors: also those sent to their area), newest
    first, with their counts."""
    rows = (await tx.db.scalars(select(Notice).where(Notice.status == NoticeStatus.SENT)
                                .order_by(Notice.id.desc()).limit(RECENT * 5))).all()
    shown = [n for n in rows if await visible_to(tx, actor, n)][:RECENT]
    items = []
    for n in shown:
        tally = await tally_of(tx, n.id)
        items.append({"id": n.id, "sent_at": n.sent_at, "text": _line(n.text, 24),
                      "confirmed": tally.confirmed, "can": tally.can,
                      "nobody": len(tally.nobody)})
    return tx.texts.render("notice_list", items=items)
