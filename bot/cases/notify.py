"""Who is told what about a case: renders the texts and writes them to the outbox.

Every function here runs inside the transaction of the change that makes the message owed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from bot.cases import followers, hooks, phones, voice
from bot.cases.buttons import Action, CaseButton, button
from bot.cases.deadlines import light, original_deadline
from bot.cases.outbox import enqueue
from bot.cases.status import HANDLING, CaseStatus
from bot.context import Tx
from bot.errors import DomainError
from bot.org import geo
from bot.org import roles as org
from bot.org.directory import CategoryInfo, NodeKind, directory
from bot.org.roles import (
    Actor,
    Level,
    Lineage,
    RoleName,
    handlers_at,
    holders,
    lineage_of,
    node_by_chat,
    works_in_grid,
)
from storage.models import Case, CaseEvent, CasePhoto, Person

Buttons = list[list[dict[str, Any]]]


async def category_name(tx: Tx, code: str) -> str:
    cat = (await directory(tx.db)).categories.get(code)
    return cat.name(tx.texts.locale) if cat is not None else code


async def person_name(tx: Tx, person_id: int | None) -> str:
    if person_id is None:
        return tx.texts.label("anonymous")
    person = await tx.db.get(Person, person_id)
    return person.name if person else str(person_id)


async def names_of(tx: Tx, ids: Iterable[int | None]) -> dict[int, str]:
    """People's names in one query, however many are asked for."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = await tx.db.execute(select(Person.id, Person.name).where(Person.id.in_(wanted)))
    return {pid: name for pid, name in rows.all()}


async def photos_of(tx: Tx, case: Case, kind: str = "report") -> list[str]:
    rows = await tx.db.scalars(
        select(CasePhoto.file_id)
        .where(CasePhoto.case_id == case.id, CasePhoto.kind == kind)
        .order_by(CasePhoto.id)
    )
    return list(rows.all())


async def case_view(tx: Tx, case: Case, lin: Lineage,
                    photos: list[str] | None = None) -> dict[str, Any]:
    """What templates may show of a case to staff: built with one query for the names and
    one for the photos (none when the caller has them), whatever the case holds."""
    if photos is None:
        photos = await photos_of(tx, case)
    on_behalf = case.submitted_by_id if case.submitted_by_id != case.reporter_id else None
    names = await names_of(tx, (case.reporter_id, on_behalf, case.assignee_id))

    def name(person_id: int | None) -> str:
        if person_id is None:
            return tx.texts.label("anonymous")
        return names.get(person_id, str(person_id))

    return {
        "id": case.id,
        "status": tx.texts.label(f"status_{case.status}"),
        "level": tx.texts.label(f"level_{case.level}"),
        "category": await category_name(tx, case.category),
        "urgent": case.urgent,
        "verified": tx.texts.label(f"verified_{case.verified}"),
        "place": lin.place,
        "grid": lin.grid.name,
        # A voice report's line (🎤 语音 0:42) leads its description.
        "description": voice.described(tx.texts, case),
        "reporter": name(case.reporter_id),
        "submitted_by": name(on_behalf) if on_behalf else None,
        "reported_at": case.reported_at,
        "deadline_at": case.deadline_at,
        "light": light(case, tx.policy, tx.now).value,
        "latitude": case.latitude,
        "longitude": case.longitude,
        # A link to the map staff use (高德, GCJ-02); staff cards only, never a group's text.
        "map_url": (geo.amap_url(case.longitude, case.latitude)
                    if case.latitude is not None and case.longitude is not None else None),
        "result": case.result,
        "photo_count": len(photos),
        # 是同一问题 and merged cases: the residents the problem affects (None: only one).
        "affected": followers.affected(case) if case.followers else None,
        "merged_into": case.merged_into_id,
        "split_from": case.split_from_id,
        "assignee": name(case.assignee_id) if case.assignee_id else None,
        # The workflow's lines, all from the case's own columns.
        "extended": case.extended_seconds > 0,
        "original_deadline_at": original_deadline(tx.policy, case),
        "rework": case.round - 1,
        "review_at": case.review_at,
        "checked": tx.texts.label(f"checked_{case.checked}") if case.checked else None,
    }


async def send_to_person(
    tx: Tx,
    key: str,
    person_id: int,
    text: str,
    *,
    case: Case | None = None,
    fallback_chat_id: int | None = None,
    fallback_reply_to: int | None = None,
    photos: list[str] | None = None,
    buttons: Buttons | None = None,
    not_before: datetime | None = None,
    kind: str = "",
    with_voice: voice.Voice | None = None,
) -> None:
    """A private message; if Telegram will not let us write to the person, a copy goes to
    `fallback_chat_id`: the reporter's own group for a notice to a reporter, and for staff
    only the work chat of a grid they work in (see `staff_fallback`). A department's card
    (`kind="department"`) goes to the department's own work chat as given."""
    if fallback_chat_id is not None and kind not in ("reporter", "department"):
        fallback_chat_id = await staff_fallback(tx, person_id, fallback_chat_id, case,
                                                not_before)
    await enqueue(
        tx.db,
        key,
        person_id,
        text,
        tx.now,
        person_id=person_id,
        case_id=case.id if case else None,
        photos=photos or [],
        buttons=buttons or [],
        fallback_chat_id=fallback_chat_id,
        fallback_reply_to=fallback_reply_to,
        not_before=not_before,
        kind=kind,
        voice=with_voice,
    )


async def staff_fallback(tx: Tx, person_id: int, chat_id: int, case: Case | None,
                         not_before: datetime | None) -> int | None:
    """Where a copy of a staff message may go when its person cannot be written to.

    A staff card names the reporter and carries buttons, so a copy goes only to a grid's work
    chat, and only for someone who works in that grid. A community or street supervisor may
    not be in it: their messages are held until they start the bot (`gridbot outbox` lists
    them), and the work chat is told, once per case, that the card waits for them, with the
    link to start the bot to pass on; never the card itself.
    """
    grid = await node_by_chat(tx.db, chat_id)
    if grid is None or grid.kind != NodeKind.GRID:
        return None
    if await works_in_grid(tx.db, person_id, grid.id):
        return chat_id
    person = await tx.db.get(Person, person_id)
    if case is not None and (person is None or person.dm_ok is not True):
        text = tx.texts.label("start_invite", name=person.name if person else str(person_id),
                              case_id=case.id, link=tx.ctx.deep_link("start"))
        await enqueue(tx.db, f"case:{case.id}:invite:{person_id}", chat_id, str(text), tx.now,
                      case_id=case.id, not_before=not_before)
    return None


def category_buttons(tx: Tx, case: Case, categories: list[CategoryInfo]) -> Buttons:
    names = [
        button(c.name_zh if tx.texts.locale == "zh_CN" else c.name_en, Action.SET_CATEGORY,
               case.id, case.rev, c.code)
        for c in categories
    ]
    return [names[i:i + 2] for i in range(0, len(names), 2)]


def handler_buttons(tx: Tx, case: Case, lin: Lineage, has_head: bool, above: bool = False,
                    departments: bool = False) -> Buttons:
    """The handler's buttons. `above`: there is someone above to ask (延期, 挂账), and the
    features are on; `departments`: there is a department to call in (吹哨)."""
    t = tx.texts
    rows: Buttons = []
    first = []
    if case.status == CaseStatus.OPEN:
        first.append(button(t.plain("btn_accept"), Action.ACCEPT, case.id, case.rev))
    if has_head and case.status in (CaseStatus.OPEN, CaseStatus.ACCEPTED):
        first.append(button(t.plain("btn_assign"), Action.ASSIGN, case.id, case.rev))
    if first:
        rows.append(first)
    second = [button(t.plain("btn_resolve"), Action.RESOLVE, case.id, case.rev)]
    if case.level != Level.STREET:
        second.append(button(t.plain("btn_escalate"), Action.ESCALATE, case.id, case.rev))
    rows.append(second)
    third = [button(t.plain("btn_category"), Action.CATEGORY, case.id, case.rev)]
    if case.level != Level.GRID:
        third.append(button(t.plain("btn_send_back"), Action.SEND_BACK, case.id, case.rev))
    rows.append(third)
    fourth = []
    if case.status in HANDLING:
        offers = hooks.workflow().offers()
        asking = above and case.request_at is None
        if (asking and offers.extension and tx.now < case.deadline_at
                and case.extension_count < tx.policy.max_extensions):
            fourth.append(button(t.plain("btn_extend"), Action.EXTEND, case.id, case.rev))
        if asking and offers.suspension:
            fourth.append(button(t.plain("btn_suspend"), Action.SUSPEND, case.id, case.rev))
        if departments and offers.whistle:
            fourth.append(button(t.plain("btn_whistle"), Action.WHISTLE, case.id, case.rev))
    if fourth:
        rows.append(fourth)
    if case.status in HANDLING:
        rows.append([button(t.plain("btn_merge"), Action.MERGE, case.id, case.rev),
                     button(t.plain("btn_split"), Action.SPLIT, case.id, case.rev)])
    return rows


async def _asks_above(tx: Tx, case: Case, lin: Lineage) -> bool:
    """Whether a request could go above the case's level: one query, only when a feature
    that asks is on."""
    offers = hooks.workflow().offers()
    if not (offers.extension or offers.suspension):
        return False
    return await org.approvers(tx.db, lin, case.level) is not None


async def _has_departments(tx: Tx) -> bool:
    return hooks.workflow().offers().whistle and bool((await directory(tx.db)).departments)


async def handler_card(
    tx: Tx, case: Case, lin: Lineage, kind: str, note: str | None = None, *,
    deferrable: bool = False, key: str = "",
) -> list[Person]:
    """The case card to whoever handles the case's current level; returns who got it. `key`
    tells apart a card owed without a new rev (an approved extension) from the rev's own."""
    recipients = await handlers_at(tx.db, lin, case.level)
    heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
    photos = await photos_of(tx, case)
    view = await case_view(tx, case, lin, photos)
    text = tx.texts.render("case_card", case=view, kind=kind, note=note)
    buttons = card_page(tx, case, handler_role(case), with_location(tx, case, handler_buttons(
        tx, case, lin, has_head=bool(heads), above=await _asks_above(tx, case, lin),
        departments=await _has_departments(tx))))
    not_before = quiet_delay(tx, case) if deferrable else None
    for person in recipients:
        await send_to_person(
            tx, f"case:{case.id}:card:{case.rev}{key}:{person.id}", person.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, photos=photos, buttons=buttons,
            not_before=not_before, with_voice=voice.of_case(case),
        )
    return recipients


def verify_buttons(tx: Tx, case: Case) -> Buttons:
    t = tx.texts
    return [
        [
            button(t.plain("btn_confirm"), Action.CONFIRM, case.id, case.rev),
            button(t.plain("btn_reject"), Action.REJECT, case.id, case.rev),
        ],
        [button(t.plain("btn_category"), Action.CATEGORY, case.id, case.rev)],
    ]


def task_buttons(tx: Tx, case: Case) -> Buttons:
    t = tx.texts
    row = []
    if case.assignee_ack_at is None:
        row.append(button(t.plain("btn_ack"), Action.ACK, case.id, case.rev))
    row.append(button(t.plain("btn_done"), Action.DONE, case.id, case.rev))
    return [row]


def with_location(tx: Tx, case: Case, buttons: Buttons) -> Buttons:
    """A staff card's buttons, and 📍 under them when the report came with a location: the
    place as a Telegram venue, privately to whoever presses it (never to a group)."""
    if case.latitude is None or case.longitude is None:
        return buttons
    return [*buttons, [button(tx.texts.plain("btn_location"), Action.LOCATION, case.id,
                              case.rev)]]


def may_locate(actor: Actor, lin: Lineage) -> bool:
    """Staff of the case's place (not a unit head: what a resident reported is not theirs)
    may have its location."""
    return bool(actor.node_ids(*(r for r in RoleName if r != RoleName.UNIT_HEAD)) & lin.ids)


async def buttons_for(tx: Tx, actor: Actor, case: Case, lin: Lineage, *,
                      more: bool = False) -> Buttons:
    """The buttons `actor` may use on `case` now, as a live card shows them: its primary
    actions and 更多, or with `more` the rest and ← 返回 (see `card_page`); 📍 for staff when
    the case has a location."""
    role, buttons = await _buttons_for(tx, actor, case, lin)
    if may_locate(actor, lin):
        buttons = with_location(tx, case, buttons)
    return card_page(tx, case, role, buttons, more=more)


async def _buttons_for(tx: Tx, actor: Actor, case: Case,
                       lin: Lineage) -> tuple[CardRole, Buttons]:
    """Every action `actor` may use on `case` now, and the card they are drawn on."""
    if case.status == CaseStatus.VERIFYING and actor.has(RoleName.BUILDING_HEAD, lin.building.id):
        return CardRole.BUILDING_HEAD, verify_buttons(tx, case)
    if (case.status == CaseStatus.ASSIGNED and case.assignee_id == actor.id
            and actor.has(RoleName.BUILDING_HEAD, lin.building.id)):
        return CardRole.BUILDING_HEAD, task_buttons(tx, case)
    if case.status in HANDLING and actor.handles(lin, case.level):
        heads = await holders(tx.db, RoleName.BUILDING_HEAD, lin.building.id)
        # Only who holds the level asks above; only the grid leader and those above whistle.
        above = (await _asks_above(tx, case, lin)
                 and await org.holds_level(tx.db, actor, lin, case.level))
        whistle = (actor.has(RoleName.GRID_LEADER, lin.grid.id)
                   or actor.handles(lin, Level.COMMUNITY))
        return handler_role(case), handler_buttons(
            tx, case, lin, has_head=bool(heads), above=above,
            departments=whistle and await _has_departments(tx))
    if case.status == CaseStatus.CHECKING:
        may_check = hooks.workflow().may_check
        if may_check is not None and await may_check(tx, actor, case, lin):
            return CardRole.CHECKER, check_buttons(tx, case)
    if case.status == CaseStatus.SUSPENDED and await _may_resume(tx, actor, case, lin):
        return handler_role(case), resume_buttons(tx, case)
    if case.status == CaseStatus.RESOLVED and (case.reporter_id == actor.id
                                      or await followers.follows(tx.db, case, actor.id)):
        return CardRole.RESIDENT, rating_buttons(tx, case)
    return handler_role(case), []


class CardRole(StrEnum):
    """Whom a card is drawn for: with the case's status, the key of `PRIMARY`."""

    GRID = "grid"  # a case at the grid: its leader and members (and those above, in /case)
    SUPERVISOR = "supervisor"  # a case escalated to the community or the street
    BUILDING_HEAD = "building_head"  # 核实 and the task handed to the head
    CHECKER = "checker"  # 核查 (the building head, or the grid leader standing in)
    RESIDENT = "resident"  # the rating


def handler_role(case: Case) -> CardRole:
    return CardRole.GRID if case.level == Level.GRID else CardRole.SUPERVISOR


# The primary actions of a card, in the order shown, by whom it is drawn for and the case's
# status: the next step people take there. A card with more than `MAX_SHOWN` actions shows
# only those of its row that the person may use, and 更多, which redraws the same message with
# all the others (改类别, 申请延期, 挂账, 吹哨, 合并, 拆分, 退回, 📍 …) and ← 返回; a card with
# `MAX_SHOWN` or fewer shows them all. A card without a row here shows its first three.
PRIMARY: dict[tuple[CardRole, CaseStatus], tuple[Action, ...]] = {
    (CardRole.GRID, CaseStatus.OPEN): (Action.ACCEPT, Action.ASSIGN, Action.RESOLVE),
    (CardRole.GRID, CaseStatus.ACCEPTED): (Action.RESOLVE, Action.ESCALATE, Action.ASSIGN),
    (CardRole.GRID, CaseStatus.ASSIGNED): (Action.RESOLVE, Action.ESCALATE),
    (CardRole.GRID, CaseStatus.SUSPENDED): (Action.RESUME,),
    (CardRole.SUPERVISOR, CaseStatus.OPEN): (Action.ACCEPT, Action.RESOLVE, Action.SEND_BACK),
    (CardRole.SUPERVISOR, CaseStatus.ACCEPTED): (Action.RESOLVE, Action.ESCALATE,
                                                 Action.SEND_BACK),
    (CardRole.SUPERVISOR, CaseStatus.ASSIGNED): (Action.RESOLVE, Action.ESCALATE,
                                                 Action.SEND_BACK),
    (CardRole.SUPERVISOR, CaseStatus.SUSPENDED): (Action.RESUME,),
    (CardRole.BUILDING_HEAD, CaseStatus.VERIFYING): (Action.CONFIRM, Action.REJECT,
                                                     Action.CATEGORY),
    (CardRole.BUILDING_HEAD, CaseStatus.ASSIGNED): (Action.ACK, Action.DONE),
    (CardRole.CHECKER, CaseStatus.CHECKING): (Action.CHECK_PASS, Action.CHECK_FAIL),
    (CardRole.RESIDENT, CaseStatus.RESOLVED): (Action.RATE,),
}
MAX_SHOWN = 4  # a card with this many actions or fewer needs no 更多
MORE_PER_ROW = 3


def _action(b: dict[str, Any]) -> Action | None:
    btn = CaseButton.unpack(str(b.get("callback_data", "")))
    return btn.action if btn is not None else None


def card_page(tx: Tx, case: Case, role: CardRole, buttons: Buttons, *,
              more: bool = False) -> Buttons:
    """A card's buttons as drawn: with more than `MAX_SHOWN` actions, the primary ones (by
    `PRIMARY`) and 更多, or with `more` the others and ← 返回; both carry the case's rev, so a
    stale card's 更多 is stale like its other buttons. Nothing is dropped: the two pages
    together hold every action of `buttons`."""
    flat = [b for row in buttons for b in row]
    if len(flat) <= MAX_SHOWN:
        return buttons
    primary = PRIMARY.get((role, CaseStatus(case.status)))
    if primary is None:
        first, rest = flat[:3], flat[3:]
    else:
        first = [b for action in primary for b in flat if _action(b) == action]
        rest = [b for b in flat if _action(b) not in primary]
    t = tx.texts
    if more:
        rows = [rest[i:i + MORE_PER_ROW] for i in range(0, len(rest), MORE_PER_ROW)]
        return [*rows, [button(t.plain("btn_back"), Action.BACK, case.id, case.rev)]]
    return [*([first] if first else []),
            [button(t.plain("btn_more"), Action.MORE, case.id, case.rev)]]


async def card_page_for(tx: Tx, actor: Actor, case_id: int, rev: int, *,
                        more: bool) -> Buttons:
    """更多 / ← 返回 pressed: the page of the card as `actor` may use it now. A card the case
    has moved past is stale, as for any of its buttons; someone who may do nothing on the
    case is refused."""
    if not 0 < case_id <= 2**31 - 1:
        raise DomainError("no_case", case_id=case_id)
    case = await tx.db.get(Case, case_id)
    if case is None:
        raise DomainError("no_case", case_id=case_id)
    if case.rev != rev:
        raise DomainError("stale", case_id=case_id)
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    buttons = await buttons_for(tx, actor, case, lin, more=more)
    if not buttons:
        raise DomainError("not_allowed")
    return buttons


async def _may_resume(tx: Tx, actor: Actor, case: Case, lin: Lineage) -> bool:
    if not hooks.workflow().offers().suspension:
        return False
    above = org.level_above(case.level)
    return (await org.holds_level(tx.db, actor, lin, case.level)
            or (above is not None and actor.handles(lin, above)))


def check_buttons(tx: Tx, case: Case) -> Buttons:
    """通过 / 不通过 on a check card (none while the feature is off)."""
    if not hooks.workflow().offers().check:
        return []
    t = tx.texts
    return [[button(t.plain("btn_check_pass"), Action.CHECK_PASS, case.id, case.rev),
             button(t.plain("btn_check_fail"), Action.CHECK_FAIL, case.id, case.rev)]]


def resume_buttons(tx: Tx, case: Case) -> Buttons:
    return [[button(tx.texts.plain("btn_resume"), Action.RESUME, case.id, case.rev)]]


async def verify_card(tx: Tx, case: Case, lin: Lineage, head: Person) -> None:
    t = tx.texts
    photos = await photos_of(tx, case)
    view = await case_view(tx, case, lin, photos)
    buttons = card_page(tx, case, CardRole.BUILDING_HEAD,
                        with_location(tx, case, verify_buttons(tx, case)))
    await send_to_person(
        tx, f"case:{case.id}:verify:{head.id}", head.id,
        t.render("case_card", case=view, kind="verify", note=None), case=case,
        fallback_chat_id=lin.grid.chat_id, photos=photos, buttons=buttons,
        with_voice=voice.of_case(case),
    )


async def task_card(tx: Tx, case: Case, lin: Lineage, head: Person, note: str | None) -> None:
    t = tx.texts
    photos = await photos_of(tx, case)
    view = await case_view(tx, case, lin, photos)
    buttons = card_page(tx, case, CardRole.BUILDING_HEAD,
                        with_location(tx, case, task_buttons(tx, case)))
    await send_to_person(
        tx, f"case:{case.id}:task:{case.rev}:{head.id}", head.id,
        t.render("case_card", case=view, kind="task", note=note), case=case,
        fallback_chat_id=lin.grid.chat_id, photos=photos, buttons=buttons,
        with_voice=voice.of_case(case),
    )


async def join_note(
    tx: Tx, key: str, people: list[Person], case: Case, lin: Lineage, *, said: str,
    photos: list[str], spoken: voice.Voice | None,
) -> None:
    """又有居民反映同一问题 to staff: what the resident who joined said, with their own photos
    and their voice note (re-sent by its file_id, as a card's is). Quiet hours respected."""
    if not people:
        return
    view = await case_view(tx, case, lin)
    text = tx.texts.render("duplicate_staff", case=view, description=said, photos=len(photos))
    for person in people:
        await send_to_person(
            tx, f"{key}:{person.id}", person.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, photos=photos,
            not_before=quiet_delay(tx, case), with_voice=spoken,
        )


async def tell_staff(
    tx: Tx, key: str, people: list[Person], case: Case, lin: Lineage, template: str,
    *, deferrable: bool = False, **context: Any,
) -> None:
    """A short notice (no buttons) to staff about a case."""
    if not people:
        return
    view = await case_view(tx, case, lin)
    text = tx.texts.render(template, case=view, **context)
    not_before = quiet_delay(tx, case) if deferrable else None
    for person in people:
        await send_to_person(
            tx, f"{key}:{person.id}", person.id, text, case=case,
            fallback_chat_id=lin.grid.chat_id, not_before=not_before,
        )


async def tell_reporter(
    tx: Tx, key: str, case: Case, text: str, buttons: Buttons | None = None,
    photos: list[str] | None = None, *, private: bool = False,
) -> None:
    """A message to the reporter, and to every resident who follows the case (是同一问题,
    合并): privately, or as a reply to their report in the group; with `private`, never in
    the group (what the neighbours need not read)."""
    residents = [(case.reporter_id, case.source_chat_id, case.source_message_id, key)]
    residents += [(f.person_id, f.source_chat_id, f.source_message_id, f"{key}:f{f.person_id}")
                  for f in await followers.of_case(tx.db, case)]
    for person_id, chat_id, message_id, dedupe in residents:
        if person_id is None:
            continue
        in_group = not private and chat_id is not None and chat_id < 0
        await send_to_person(
            tx, dedupe, person_id, text, case=case, buttons=buttons, photos=photos,
            fallback_chat_id=chat_id if in_group else None,
            fallback_reply_to=message_id if in_group else None,
            kind="reporter",
        )


async def reporter_unreachable(tx: Tx, case: Case) -> None:
    """No notice reaches the reporter, privately or in their group: the grid is told."""
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    people = await handlers_at(tx.db, lin, Level.GRID)
    await tell_staff(tx, f"case:{case.id}:r{case.round}:unreachable", people, case, lin,
                     "reporter_unreachable")


async def acknowledge(tx: Tx, case: Case) -> None:
    """The receipt with the case number, in the chat the report came from."""
    if case.source_chat_id is None:
        return
    text = tx.texts.render(
        "ack", case_id=case.id, urgent=case.urgent, verifying=case.status == CaseStatus.VERIFYING,
        on_behalf=case.submitted_by_id not in (None, case.reporter_id),
        category=await category_name(tx, case.category),
        deadline_at=case.deadline_at,
    )
    await enqueue(
        tx.db, f"case:{case.id}:ack", case.source_chat_id, text, tx.now, case_id=case.id,
        reply_to=case.source_message_id,
    )


def public_chat(case: Case, lin: Lineage) -> int | None:
    """The residents' chat a case belongs to: its unit's, else its building's."""
    if lin.unit is not None and lin.unit.chat_id:
        return lin.unit.chat_id
    return lin.building.chat_id


async def public_notice(tx: Tx, case: Case, lin: Lineage) -> None:
    chat = public_chat(case, lin)
    # A need found on a care visit (走访) is a vulnerable household's: never told in a group.
    if chat is None or case.source == "visit":
        return
    text = tx.texts.render(
        "resolved_public", case_id=case.id, category=await category_name(tx, case.category),
        result=mask_phones(case.result or ""),
    )
    await enqueue(
        tx.db, f"case:{case.id}:r{case.round}:public", chat, text, tx.now, case_id=case.id,
    )


def rating_buttons(tx: Tx, case: Case) -> Buttons:
    return [[
        button(tx.texts.plain(f"rating_{score}"), Action.RATE, case.id, case.rev, score)
        for score in ("good", "fair", "bad")
    ]]


def quiet_delay(tx: Tx, case: Case) -> datetime | None:
    """Clock-driven messages wait for the end of the quiet hours, unless the case is urgent."""
    if case.urgent:
        return None
    return tx.policy.quiet_until(tx.now)


def mask_phones(text: str) -> str:
    """Hide phone numbers, in any format people write them, in text posted to groups."""
    return phones.mask_phones(text)


async def history(tx: Tx, case: Case) -> list[dict[str, Any]]:
    events = (await tx.db.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
    )).all()
    names = await names_of(tx, (ev.actor_id for ev in events))
    rows = []
    for ev in events:
        rows.append({
            "at": ev.at,
            "actor": names.get(ev.actor_id, str(ev.actor_id)) if ev.actor_id else None,
            # The source of a rework (不满意 or a failed check) is the status it left.
            "action": tx.texts.label(f"event_{ev.action}", from_status=ev.from_status),
            "note": ev.note,
        })
    return rows

