"""What people look up: their open cases, one case with its history, their roles; and /bind."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot import notify
from bot.cases import OPEN_STATUSES, DomainError
from bot.context import Tx
from bot.deadlines import light
from bot.org import Actor, RoleName, ancestors, lineage_of, node_by_code
from bot.texts import TEXT_LIMIT
from bot.user_text import CODE_LIMIT, clean_name, clean_text
from storage.models import Case, Node

LIST_LIMIT = 30
MY_LIMIT = 20
# A case's history shown with long texts cut to this, when the whole of it does not fit.
SHORT_TEXT = 200
SHORT_NOTE = 80


def fits(text: str) -> bool:
    """Whether Telegram takes `text` as one message (it counts UTF-16 units)."""
    return len(text.encode("utf-16-le")) // 2 <= TEXT_LIMIT


async def _descendant_buildings(tx: Tx, node_ids: set[int]) -> set[int]:
    nodes = (await tx.db.scalars(select(Node))).all()
    children: dict[int | None, list[Node]] = {}
    for n in nodes:
        children.setdefault(n.parent_id, []).append(n)
    found: set[int] = set()
    stack = [n for n in nodes if n.id in node_ids]
    while stack:
        n = stack.pop()
        if n.kind == "building":
            found.add(n.id)
        if n.kind != "unit":
            stack.extend(children.get(n.id, []))
    return found


async def staff_cases(tx: Tx, actor: Actor) -> str:
    """Open cases in the actor's scope, most urgent first, with their traffic light."""
    if not actor.roles:
        raise DomainError("staff_only")
    unit_ids = actor.node_ids(RoleName.UNIT_HEAD)
    buildings = await _descendant_buildings(tx, actor.node_ids() - unit_ids)
    query = select(Case).where(Case.status.in_([s.value for s in OPEN_STATUSES]))
    conditions = []
    if buildings:
        conditions.append(Case.building_id.in_(buildings))
    if unit_ids:
        conditions.append(Case.unit_id.in_(unit_ids))
    rows: list[Case] = []
    if conditions:
        from sqlalchemy import or_

        rows = list((await tx.db.scalars(query.where(or_(*conditions)))).all())
    rows.sort(key=lambda c: c.deadline_at)
    items: list[dict[str, Any]] = []
    for case in rows[:LIST_LIMIT]:
        lin = await lineage_of(tx.db, case.building_id, case.unit_id)
        items.append({
            "id": case.id,
            "light": light(case, tx.policy, tx.now).value if case.status != "resolved" else "",
            "status": tx.texts.label(f"status_{case.status}"),
            "category": await notify.category_name(tx, case.category),
            "place": lin.place,
            "deadline_at": case.deadline_at,
            "urgent": case.urgent,
            "summary": _summary(case.description),
        })
    text = tx.texts.render("case_list", items=items, total=len(rows), limit=LIST_LIMIT)
    while not fits(text) and len(items) > 1:
        # Long names and markup-heavy summaries: show fewer, most urgent first, and say so.
        items.pop()
        text = tx.texts.render("case_list", items=items, total=len(rows), limit=len(items))
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
        return _detail(tx, view, await notify.history(tx, case)), buttons
    if case.reporter_id == actor.id:
        return tx.texts.render("case_mine", case=await _resident_view(tx, case)), buttons
    # Say the same as for a missing case: existence is itself out of scope.
    raise DomainError("no_case", case_id=case_id)


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
        "description": _summary(case.description, 60),
        "reported_at": case.reported_at,
        "result": case.result,
        "reject_reason": case.reject_reason,
        "rating": tx.texts.label(f"rating_{case.rating}") if case.rating else None,
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
        node = await tx.db.get(Node, node_id)
        if node is not None:
            roles.append({"role": tx.texts.label(f"role_{role.value}"), "place": node.name,
                          "code": node.code})
    return tx.texts.render("whoami", name=clean_name(actor.name) or str(actor.id),
                           user_id=actor.id, roles=roles)


async def bind_chat(tx: Tx, actor: Actor, chat_id: int, code: str) -> Node:
    """Bind a group chat to a grid (work chat), building or unit."""
    node = await node_by_code(tx.db, code.strip())
    if node is None or node.kind not in ("grid", "building", "unit"):
        raise DomainError("bad_code", code=clean_text(code, CODE_LIMIT))
    if not actor.may_bind(node, await ancestors(tx.db, node)):
        raise DomainError("not_allowed")
    previous = (await tx.db.scalars(select(Node).where(Node.chat_id == chat_id))).all()
    for other in previous:
        other.chat_id = None
    node.chat_id = chat_id
    await tx.db.commit()
    return node
