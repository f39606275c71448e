"""What people look up: their open cases, one case with its history, their roles; and the
question a `/bind` asks."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import aliased, join

from bot.cases import followers, notify, voice
from bot.cases.deadlines import light
from bot.cases.phones import mask_phones
from bot.cases.status import OPEN_STATUSES, CaseStatus
from bot.context import Tx
from bot.errors import DomainError
from bot.org import binding
from bot.org.roles import Actor, RoleName, lineage_of, place_by_id
from bot.texts import TEXT_LIMIT, Texts
from bot.user_text import clean_name
from storage.models import Case, Category, Node

# Roles that see a case as staff; a unit head sees their unit's cases with less.
STAFF_ROLES = tuple(r for r in RoleName if r != RoleName.UNIT_HEAD)

LIST_LIMIT = 30
MY_LIMIT = 20
# A case's history shown with long texts cut to this, when the whole of it does not fit.
SHORT_TEXT = 200
SHORT_NOTE = 80


def fits(text: str) -> bool:
    """Whether Telegram takes `text` as one message (it counts UTF-16 units)."""
    return len(text.encode("utf-16-le")) // 2 <= TEXT_LIMIT


def _page_note(tx: Tx, page: int, pages: int, cut: int | None) -> Markup:
    """The line under a page of the list: what was left out, and how to see the next page."""
    lines = []
    if cut is not None:
        lines.append(tx.texts.label("cases_cut", count=cut))
    if page < pages:
        lines.append(tx.texts.label("cases_next", count=page + 1))
    elif pages > 1:
        lines.append(tx.texts.label("cases_last_page"))
    return Markup("\n").join(lines)


async def staff_cases(tx: Tx, actor: Actor, page: int = 1) -> str:
    """One page of the open cases in the actor's scope, most urgent first, with their traffic
    light. Filtered, ordered, counted and paged by the database, with the place names joined
    in: no case of the district is loaded beyond the page shown.
    """
    if not actor.roles:
        raise DomainError("staff_only")
    unit_ids = actor.node_ids(RoleName.UNIT_HEAD)
    held = actor.node_ids() - unit_ids
    building, grid, community, unit = (aliased(Node) for _ in range(4))
    # The tree is street > community > grid > building > unit: a role at any of these levels
    # covers the building's cases; a unit head sees their unit's cases only.
    via_role = or_(building.id.in_(held), grid.id.in_(held), community.id.in_(held),
                   community.parent_id.in_(held))
    scope = or_(via_role, Case.unit_id.in_(unit_ids))
    where = and_(Case.status.in_([s.value for s in OPEN_STATUSES]), scope)

    tree = (join(Case, building, building.id == Case.building_id)
            .join(grid, grid.id == building.parent_id)
            .join(community, community.id == grid.parent_id))
    total = int(await tx.db.scalar(select(func.count()).select_from(tree).where(where)) or 0)
    pages = max(1, -(-total // LIST_LIMIT))
    page = min(page, pages)
    rows = (await tx.db.execute(
        select(Case, community.name, building.name, unit.name, Category.name_zh,
               Category.name_en, via_role)
        .select_from(tree.outerjoin(unit, unit.id == Case.unit_id)
                     .outerjoin(Category, Category.code == Case.category))
        .where(where)
        .order_by(Case.deadline_at, Case.id)
        .limit(LIST_LIMIT).offset((page - 1) * LIST_LIMIT)
    )).all()
    zh = tx.texts.locale == "zh_CN"
    items: list[dict[str, Any]] = []
    for case, community_name, building_name, unit_name, name_zh, name_en, staff_view in rows:
        summary = _summary(voice.described(tx.texts, case))
        items.append({
            "id": case.id,
            # A result waiting for its check or its rating has no deadline running.
            "light": (light(case, tx.policy, tx.now).value
                      if case.status not in (CaseStatus.RESOLVED, CaseStatus.CHECKING) else ""),
            "status": tx.texts.label(f"status_{case.status}"),
            "category": (name_zh if zh else name_en) or case.category,
            "place": " ".join(n for n in (community_name, building_name, unit_name) if n),
            "deadline_at": case.deadline_at,
            "urgent": case.urgent,
            # A unit head is not staff: phone numbers in what residents wrote stay masked.
            "summary": summary if staff_view else mask_phones(summary),
        })
    text = tx.texts.render("case_list", items=items, total=total,
                           note=_page_note(tx, page, pages, None))
    while not fits(text) and len(items) > 1:
        # Long names and markup-heavy summaries: show fewer, most urgent first, and say so.
        items.pop()
        text = tx.texts.render("case_list", items=items, total=total,
                               note=_page_note(tx, page, pages, len(items)))
    return text


def _summary(text: str, size: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


async def case_detail(tx: Tx, actor: Actor, case_id: int) -> tuple[str, notify.Buttons]:
    """One case as `actor` may see it, with the buttons they may use on it now."""
    case = await tx.db.get(Case, case_id)
    if case is None:
        raise DomainError("no_case", case_id=case_id)
    lin = await lineage_of(tx.db, case.building_id, case.unit_id)
    buttons = await notify.buttons_for(tx, actor, case, lin)
    if actor.sees(lin):
        view = await notify.case_view(tx, case, lin)
        events = await notify.history(tx, case)
        if not actor.node_ids(*STAFF_ROLES) & lin.ids:
            view, events = await _unit_head_view(tx, actor, case, view, events)
        return _detail(tx, view, events), buttons
    if case.reporter_id == actor.id or await followers.follows(tx.db, case, actor.id):
        # A resident who follows the case (是同一问题, 合并) reads it as its reporter does.
        return tx.texts.render("case_mine", case=await _resident_view(tx, case)), buttons
    # Say the same as for a missing case: existence is itself out of scope.
    raise DomainError("no_case", case_id=case_id)


async def _unit_head_view(tx: Tx, actor: Actor, case: Case, view: dict[str, Any],
                          events: list[dict[str, Any]]
                          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A unit head sees their unit's cases, but is not staff: they do not handle them (no
    buttons), the reporter is not named unless they reported it themselves or on the
    reporter's behalf, and phone numbers in every text are masked."""
    knows_reporter = actor.id in (case.reporter_id, case.submitted_by_id)
    hidden = tx.texts.label("reporter_hidden")
    reporter = view["reporter"]
    view = {**view, "description": mask_phones(view["description"]),
            "result": mask_phones(view["result"]) if view["result"] else None}
    if not knows_reporter:
        view["reporter"] = hidden
    events = [{**e, "note": mask_phones(e["note"]) if e["note"] else None,
               "actor": hidden if not knows_reporter and e["actor"] == reporter
               else e["actor"]} for e in events]
    return view, events


def _detail(tx: Tx, view: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """The case with its history, in one message: when the whole does not fit (long texts, a
    long overdue stretch), long texts are shortened, then the middle of the history is left
    out, keeping the report and the latest events."""
    text = tx.texts.render("case_detail", case=view, events=events)
    if fits(text):
        return text
    view = {**view, "description": _summary(view["description"], SHORT_TEXT),
            "result": _summary(view["result"], SHORT_TEXT) if view["result"] else None}
    events = [{**e, "note": _summary(e["note"], SHORT_NOTE) if e["note"] else None}
              for e in events]
    for keep in range(len(events) - 1, -1, -1):
        left_out = len(events) - 1 - keep
        shown = events[:1]
        if left_out:
            shown.append({"at": events[1]["at"], "actor": "…", "note": None,
                          "action": tx.texts.label("history_omitted", count=left_out)})
        shown += events[len(events) - keep:] if keep else []
        text = tx.texts.render("case_detail", case=view, events=shown)
        if fits(text):
            return text
    return text  # pragma: no cover - a case without its history always fits


async def _resident_view(tx: Tx, case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "status": tx.texts.label(f"status_{case.status}"),
        "category": await notify.category_name(tx, case.category),
        "description": _summary(voice.described(tx.texts, case), 60),
        "reported_at": case.reported_at,
        "result": case.result,
        "reject_reason": case.reject_reason,
        "rating": tx.texts.label(f"rating_{case.rating}") if case.rating else None,
        "merged_into": case.merged_into_id,
    }


async def my_cases(tx: Tx, actor: Actor) -> str:
    rows = (await tx.db.scalars(
        select(Case).where(Case.reporter_id == actor.id).order_by(Case.id.desc())
        .limit(MY_LIMIT)
    )).all()
    items = [await _resident_view(tx, c) for c in rows]
    text = tx.texts.render("my_cases", items=items)
    while not fits(text) and len(items) > 1:
        items.pop()  # the oldest
        text = tx.texts.render("my_cases", items=items)
    return text


async def whoami(tx: Tx, actor: Actor) -> str:
    roles = []
    for role, node_id in actor.roles:
        node = await place_by_id(tx.db, node_id)
        if node is not None:
            roles.append({"role": tx.texts.label(f"role_{role.value}"), "place": node.name,
                          "code": node.code})
    return tx.texts.render("whoami", name=clean_name(actor.name) or str(actor.id),
                           user_id=actor.id, roles=roles)


def bind_question(texts: Texts, ask: binding.Ask) -> Markup:
    """What a `/bind` that needs confirming asks: the old place and the new one, named."""
    lines = []
    if ask.old_node is not None:
        lines.append(texts.label("bind_ask_from", place=binding.describe(texts, ask.old_node),
                                 code=ask.old_node.code))
    lines.append(texts.label("bind_ask_to", place=binding.describe(texts, ask.node),
                             code=ask.node.code))
    if ask.node_had_chat:
        lines.append(texts.label("bind_ask_moves", place=binding.describe(texts, ask.node),
                                 code=ask.node.code))
    if ask.audience_changes:
        work = binding.audience(ask.node) == "work"
        lines.append(texts.label("bind_ask_to_work" if work else "bind_ask_to_residents"))
    return Markup("\n").join(lines)


def bound_text(texts: Texts, outcome: binding.Bound) -> str:
    node = outcome.node
    if outcome.unchanged:
        return texts.label("bind_already", place=binding.describe(texts, node), code=node.code)
    return texts.render("bound", kind=texts.label(f"kind_{node.kind}"), name=node.name,
                        code=node.code)
