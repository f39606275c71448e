"""The ledger (台账) of a period: one row per case, as Excel (two sheets, and the grid's
rounds in three more: 巡查, 走访, 专项任务, issue 22) or CSV (the cases only; issue 10).

Which cases, and what a row judges, come from bot.ledger.definitions, as the figures do, so
a supervisor can filter the rows and find every figure of the period again: a row per case
some figure of the period counts (received in it, closed in it, due in it, open at its
as-of, or with a 返工, 上报, rating or rating timeout in it), never a rejected or merged one.

A row shows the case as it is when exported (status, result, rating, times); what it judges
is judged as of the period's as-of (its end, or now while it runs), so the ledger of a past
month comes out the same each time and agrees with that month's figures (issue 19, defect
5): 是否超期 and 超期时长 (definitions.late_at / late_until), 返工次数 (the period's reworks)
and 上报层级 (the period's escalations, by level).

Rows stream: one statement over `cases` with the per-case aggregates (the confirming event,
the period's reworks and escalations, the people's names) as joins and correlated
subqueries, read `yield_per` rows at a time and written out as they come (openpyxl's
write-only workbook keeps rows in a temporary file, not in memory). Places and categories
come from the directory in memory, not from joins.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Literal
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.cases.events import EventKind
from bot.config import DEFAULT_TEMPLATES
from bot.ledger import definitions as defs
from bot.ledger import rounds
from bot.ledger.definitions import NO_FEEDBACK, RATINGS, Period, within
from bot.ledger.figures import RATES, Figures, breakdown, compute, count_if, place_for
from bot.org.directory import Directory, Place, directory, org_settings
from bot.org.roles import Level
from bot.texts import Texts
from storage.models import Case, CaseEvent, Node, Person

Format = Literal["xlsx", "csv"]
Rows = Select[*tuple[Any, ...]]
YIELD_PER = 500
# Rows written between turns of the event loop: a bot exporting in chat keeps answering
# (openpyxl takes about a millisecond a row).
PAUSE_EVERY = 50
DATE_FORMAT = "yyyy-mm-dd hh:mm"
CSV_DATE = "%Y-%m-%d %H:%M"
# Free text a spreadsheet would take for a formula (CSV has no cell types to say otherwise).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Column:
    key: str
    width: float
    kind: Literal["text", "date", "int", "user"] = "text"  # user: text people typed


COLUMNS = (
    Column("number", 9),
    Column("received_at", 17, "date"),
    Column("grid", 16),
    Column("place", 14),
    Column("category", 12),
    Column("description", 40, "user"),
    Column("reporter", 12, "user"),
    Column("verified_by", 12, "user"),
    Column("verified_at", 17, "date"),
    Column("handler", 12, "user"),
    Column("deadline", 17, "date"),
    Column("resolved_at", 17, "date"),
    Column("closed_at", 17, "date"),
    Column("overdue", 9),
    Column("overdue_by", 12),
    Column("result", 30, "user"),
    Column("rating", 10),
    Column("rework", 9, "int"),
    Column("escalation", 12),
    Column("status", 13),
)
COUNTS = ("received", "due", "closed", "closed_on_time", "closed_late", "open_at_end",
          "overdue_at_end", "reworked", "escalated_community", "escalated_street", "rated",
          "satisfied", "fairly_satisfied", "unsatisfied", "no_feedback", "resolved")
TIMES = ("accept_hours_median", "accept_hours_p90", "resolve_hours_median",
         "resolve_hours_p90", "overdue_factor")
FIGURE_COLUMNS = ("code", "name", *COUNTS, *RATES, *TIMES)


# --- the statement --------------------------------------------------------------------------


def ledger_query(period: Period, place: Place | None, as_of: datetime) -> Rows:
    """The ledger's rows, plain columns, in the order of their reports; judged as of
    `as_of` (the period's: `Period.as_of`)."""
    building = aliased(Node, name="lb")
    grid = aliased(Node, name="lg")
    community = aliased(Node, name="lc")
    reporter = aliased(Person, name="lr")
    handler = aliased(Person, name="lh")
    verifier = aliased(Person, name="lv")
    confirm = aliased(CaseEvent, name="lce")
    ev = aliased(CaseEvent, name="lee")
    last_confirm = (select(func.max(ev.id))
                    .where(ev.case_id == Case.id, ev.action == EventKind.CONFIRM)
                    .correlate(Case).scalar_subquery())

    def events(cond: ColumnElement[bool]) -> Any:
        """How many of the case's events of the period meet `cond`, as the figures count.
        Filtered by case only, so they are found by the case index (given a time range,
        SQLite walks every event of the kind in the period for each row)."""
        return (select(count_if(and_(cond, within(ev.at, period)))).select_from(ev)
                .where(ev.case_id == Case.id)
                .correlate(Case).scalar_subquery())

    query = (
        select(
            Case.id, Case.reported_at, Case.building_id, Case.unit_id, Case.category,
            Case.description, Case.reporter_id, reporter.name.label("reporter_name"),
            confirm.at.label("verified_at"), confirm.actor_id.label("verifier_id"),
            verifier.name.label("verifier_name"), handler.name.label("handler_name"),
            Case.deadline_at, Case.resolved_at, Case.closed_at, Case.close_reason,
            Case.result, Case.rating, Case.status, Case.voice_kind, Case.voice_seconds,
            defs.late_at(as_of).label("late"), defs.late_until(as_of).label("late_until"),
            events(defs.rework(ev)).label("reworks"),
            events(defs.escalation(Level.COMMUNITY, ev)).label("esc_c"),
            events(defs.escalation(Level.STREET, ev)).label("esc_s"),
        )
        .select_from(Case)
        .outerjoin(reporter, reporter.id == Case.reporter_id)
        .outerjoin(handler, handler.id == func.coalesce(Case.resolved_by_id,
                                                         Case.accepted_by_id))
        .outerjoin(confirm, confirm.id == last_confirm)
        .outerjoin(verifier, verifier.id == confirm.actor_id)
        .where(defs.listed(period, as_of))
        .order_by(Case.reported_at, Case.id)
    )
    if place is not None:
        query = (query.join(building, building.id == Case.building_id)
                 .join(grid, grid.id == building.parent_id)
                 .join(community, community.id == grid.parent_id))
        column = {"building": Case.building_id, "grid": grid.id,
                  "community": community.id, "street": community.parent_id}[place.kind]
        query = query.where(column == place.id)
    return query


# --- rows -----------------------------------------------------------------------------------


class _Row:
    """Turns a database row into the ledger's values (datetimes aware UTC; text plain)."""

    def __init__(self, d: Directory, texts: Texts) -> None:
        self.d = d
        self.texts = texts
        self.zh = texts.locale.startswith("zh")
        # Rendering a label is a template call: each is rendered once per export.
        self._labels: dict[tuple[str, int | None], str] = {}

    def label(self, name: str, count: int | None = None) -> str:
        got = self._labels.get((name, count))
        if got is None:
            got = self.texts.plain(name) if count is None else self.texts.plain(name, count=count)
            self._labels[(name, count)] = got
        return got

    def status(self, status: str) -> str:
        name = f"status_{status}"
        return self.label(name) if self.texts.has_label(name) else status

    def duration(self, delta: timedelta) -> str:
        """Days and hours (hours and minutes under a day): 2天3小时, 5小时20分钟."""
        minutes = max(1, math.ceil(delta.total_seconds() / 60))
        days, rest = divmod(minutes, 1440)
        hours, mins = divmod(rest, 60)
        parts = ([("ledger_days", days), ("ledger_hours", hours)] if days
                 else [("ledger_hours", hours), ("ledger_minutes", mins)])
        text = [self.label(name, n) for name, n in parts if n]
        return ("" if self.zh else " ").join(text)

    def description(self, r: Any) -> str:
        """The report's text; a voice report's line (🎤 语音 0:42) first, as staff read it, so
        a report that was only spoken is not an empty cell."""
        text = r.description or ""
        if r.voice_kind:
            line = self.texts.plain("voice_note", kind=r.voice_kind, count=r.voice_seconds or 0)
            text = f"{line} {text}".strip()
        return text

    def place(self, building_id: int, unit_id: int | None) -> tuple[str, str]:
        b = self.d.place(building_id)
        g = self.d.place(b.parent_id) if b is not None else None
        u = self.d.place(unit_id)
        return (g.name if g is not None else "",
                " ".join(p.name for p in (b, u) if p is not None))

    def values(self, r: Any) -> list[Any]:
        grid, place = self.place(r.building_id, r.unit_id)
        cat = self.d.categories.get(r.category)
        # Judged as of the period's as-of, in the statement (definitions.late_at).
        overdue = bool(r.late)
        late = r.late_until - r.deadline_at if overdue else None
        if r.close_reason == NO_FEEDBACK:
            rating = self.label("ledger_no_feedback")
        elif r.rating in RATINGS:
            rating = self.label(f"rating_{r.rating}")
        else:
            rating = ""
        levels = []
        for level, n in ((Level.COMMUNITY, r.esc_c or 0), (Level.STREET, r.esc_s or 0)):
            if n:
                name = self.label(f"level_{level}")
                levels.append(name if n == 1 else
                              name + self.label("ledger_times", n))
        return [
            f"#{r.id}",
            r.reported_at,
            grid,
            place,
            cat.name(self.texts.locale) if cat is not None else r.category,
            self.description(r),
            # Erased reporters have no id (and no name); an erased person's id is cleared.
            (r.reporter_name or "") if r.reporter_id is not None else "",
            (r.verifier_name or "") if r.verifier_id is not None else "",
            r.verified_at,
            r.handler_name or "",
            r.deadline_at,
            r.resolved_at,
            r.closed_at,
            self.label("ledger_yes" if overdue else "ledger_no"),
            self.duration(late) if overdue and late is not None else "",
            r.result or "",
            rating,
            r.reworks or 0,
            ("、" if self.zh else ", ").join(levels),
            self.status(r.status),
        ]


async def _stream(db: AsyncSession, query: Rows) -> Any:
    return await db.stream(query.execution_options(yield_per=YIELD_PER))


# --- writers --------------------------------------------------------------------------------


def _clean(value: str) -> str:
    # Control characters are not allowed in an xlsx file (openpyxl refuses them).
    return ILLEGAL_CHARACTERS_RE.sub("", value)


def _local(when: datetime, zone: ZoneInfo) -> datetime:
    """A naive local datetime: what Excel stores (it has no time zones)."""
    return when.astimezone(zone).replace(tzinfo=None)


class _Xlsx:
    def __init__(self, texts: Texts, zone: ZoneInfo) -> None:
        self.texts = texts
        self.zone = zone
        self.wb = Workbook(write_only=True)
        self.bold = Font(bold=True)
        self.wrap = Alignment(wrap_text=True, vertical="top")

    def sheet(self, title: str, headers: list[str], widths: list[float]) -> Any:
        # A write-only sheet (its stubs lack column_dimensions and auto_filter, set in
        # its constructor).
        ws: Any = self.wb.create_sheet(title)
        # Widths and panes must be set before the first row is written.
        for i, width in enumerate(widths, 1):
            ws.column_dimensions[get_column_letter(i)].width = width
        ws.freeze_panes = "A2"
        ws.append([self.cell(ws, h, font=self.bold) for h in headers])
        return ws

    def cell(self, ws: Any, value: Any, *, kind: str = "text",
             fmt: str | None = None, font: Font | None = None) -> Any:
        if isinstance(value, datetime):
            value = _local(value, self.zone)
        elif isinstance(value, str):
            value = _clean(value)
        c = WriteOnlyCell(ws, value=value)
        if isinstance(value, str) and value.startswith("="):
            c.data_type = "s"  # text that looks like a formula stays text
        if isinstance(value, datetime):
            c.number_format = DATE_FORMAT
        elif fmt is not None:
            c.number_format = fmt
        if font is not None:
            c.font = font
        if kind == "user" and isinstance(value, str) and "\n" in value:
            c.alignment = self.wrap
        return c


# The rounds' sheets (issue 22): 巡查, 走访, 专项任务, after the figures, one row per patrol,
# visit and campaign part the rounds' figures count (bot.ledger.rounds). 走访 names no one of
# the household: its building, unit and door and its kind only.
PATROL_COLUMNS = (Column("grid", 16), Column("person", 12, "user"),
                  Column("started", 17, "date"), Column("ended", 17, "date"),
                  Column("hours", 10), Column("buildings", 24), Column("cases", 16))
VISIT_COLUMNS = (Column("grid", 16), Column("building", 12), Column("door", 12),
                 Column("kind", 14), Column("at", 17, "date"), Column("due", 17, "date"),
                 Column("on_time", 9), Column("person", 12, "user"), Column("need", 9))
TASK_COLUMNS = (Column("title", 24, "user"), Column("grid", 16),
                Column("deadline", 17, "date"), Column("state", 12),
                Column("done_at", 17, "date"), Column("person", 12, "user"))


@dataclass(frozen=True)
class Sheet:
    name: str  # the label of its title: ledger_sheet_<name>
    columns: tuple[Column, ...]
    rows: list[list[Any]]


async def _round_sheets(db: AsyncSession, d: Directory, period: Period, place: Place | None,
                        conv: _Row, now: datetime) -> list[Sheet]:
    """The rows of the three sheets, as values (a few statements, whatever the rows)."""
    settings = await org_settings(db)
    own_kinds = {str(k.get("code")): k.get("name") or {}
                 for k in (settings.care_kinds or [] if settings is not None else [])
                 if isinstance(k, dict)}
    locale = conv.texts.locale

    def grid_name(grid_id: int | None) -> str:
        g = d.place(grid_id)
        return g.name if g is not None else ""

    def kind(code: str) -> str:
        if conv.texts.has_label(f"ledger_kind_{code}"):  # the four standard kinds
            return conv.label(f"ledger_kind_{code}")
        names = own_kinds.get(code) or {}
        return str(names.get(locale) or names.get("zh_CN") or code)

    def yes_no(value: bool | None) -> str:
        return "" if value is None else conv.label("ledger_yes" if value else "ledger_no")

    joiner = "、" if conv.zh else ", "
    patrols = [[grid_name(r.grid_id), r.person or "", r.started_at, r.ended_at,
                round(r.hours, 2),
                joiner.join(p.name for b in r.building_ids if (p := d.place(b)) is not None),
                joiner.join(f"#{c}" for c in r.case_ids)]
               for r in await rounds.patrol_rows(db, d, period, place)]
    visits = [[grid_name(v.grid_id), (b.name if (b := d.place(v.building_id)) else ""),
               " ".join(x for x in (v.unit, v.door) if x), kind(v.kind), v.at, v.due_at,
               yes_no(v.on_time), v.person or "", yes_no(v.need_found if v.at else None)]
              for v in await rounds.visit_rows(db, d, period, place, now=now)]
    tasks = [[t.title, grid_name(t.grid_id), t.deadline_at, conv.label(f"ledger_task_{t.state}"),
              t.done_at, t.person or ""]
             for t in await rounds.task_rows(db, d, period, place, now=now)]
    return [Sheet("patrols", PATROL_COLUMNS, patrols), Sheet("visits", VISIT_COLUMNS, visits),
            Sheet("tasks", TASK_COLUMNS, tasks)]


def _sheet_prefix(name: str) -> str:
    return {"patrols": "ledger_patrol_", "visits": "ledger_visit_", "tasks": "ledger_task_"}[name]


async def _write_xlsx(rows: Callable[[], Any], conv: _Row, out: BinaryIO,
                      texts: Texts, zone: ZoneInfo, grids: list[tuple[str, str, Figures]],
                      total: Figures, sheets: list[Sheet] | None = None) -> int:
    x = _Xlsx(texts, zone)
    ws = x.sheet(conv.label("ledger_sheet_cases"),
                 [conv.label(f"ledger_col_{c.key}") for c in COLUMNS],
                 [c.width for c in COLUMNS])
    fs = x.sheet(conv.label("ledger_sheet_grids"),
                 [conv.label(f"ledger_fig_{k}") for k in FIGURE_COLUMNS],
                 [11, 16, *[10.0] * (len(FIGURE_COLUMNS) - 2)])
    n = 0
    result = await rows()
    try:
        async for r in result:
            ws.append([x.cell(ws, v, kind=c.kind) for c, v in zip(COLUMNS, conv.values(r),
                                                                   strict=True)])
            n += 1
            if n % PAUSE_EVERY == 0:
                await asyncio.sleep(0)
    finally:
        await result.close()
    last = get_column_letter(len(COLUMNS))
    ws.auto_filter.ref = f"A1:{last}{n + 1}"
    for code, name, fig in [*grids, ("", conv.label("ledger_total"), total)]:
        fs.append([x.cell(fs, v, fmt=f, font=x.bold if not code else None)
                   for v, f in _figure_cells(code, name, fig)])
    fs.auto_filter.ref = f"A1:{get_column_letter(len(FIGURE_COLUMNS))}{len(grids) + 2}"
    for sheet in sheets or []:
        prefix = _sheet_prefix(sheet.name)
        ss = x.sheet(conv.label(f"ledger_sheet_{sheet.name}"),
                     [conv.label(prefix + c.key) for c in sheet.columns],
                     [c.width for c in sheet.columns])
        for values in sheet.rows:
            ss.append([x.cell(ss, v, kind=c.kind) for c, v in zip(sheet.columns, values,
                                                                  strict=True)])
        ss.auto_filter.ref = f"A1:{get_column_letter(len(sheet.columns))}{len(sheet.rows) + 1}"
    x.wb.save(out)
    return n


def _figure_cells(code: str, name: str, fig: Figures) -> Iterator[tuple[Any, str | None]]:
    yield code, None
    yield name, None
    for k in COUNTS:
        yield getattr(fig, k), None
    for k in RATES:
        yield getattr(fig, k), "0.0%"  # a fraction shown as a percentage
    for k in TIMES:
        v = getattr(fig, k)
        yield (round(v, 2) if v is not None else None), "0.00"


def _csv_value(value: Any, column: Column, zone: ZoneInfo) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime(CSV_DATE)
    if column.kind == "user" and isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value  # Excel would run it as a formula (CSV injection)
    return value


async def _write_csv(rows: Callable[[], Any], conv: _Row, out: BinaryIO,
                     zone: ZoneInfo) -> int:
    # The BOM makes Excel read the file as UTF-8; detach leaves `out` open for the caller.
    text = io.TextIOWrapper(out, encoding="utf-8-sig", newline="")
    writer = csv.writer(text)
    writer.writerow([conv.label(f"ledger_col_{c.key}") for c in COLUMNS])
    n = 0
    result = await rows()
    try:
        async for r in result:
            writer.writerow([_csv_value(v, c, zone)
                             for c, v in zip(COLUMNS, conv.values(r), strict=True)])
            n += 1
            if n % PAUSE_EVERY == 0:
                await asyncio.sleep(0)
    finally:
        await result.close()
        text.flush()
        text.detach()
    return n


# --- the call -------------------------------------------------------------------------------


async def write_ledger(db: AsyncSession, period: Period, scope: str | None, out: BinaryIO,
                       fmt: Format, locale: str = "zh_CN", *,
                       now: datetime | None = None) -> int:
    """Writes the ledger of `scope` (a street, community, grid or building code; None: the
    whole district) for `period` to `out` as xlsx (the cases, the figures per grid, and the
    rounds' patrols, visits and campaign parts: bot.ledger.rounds) or csv (the cases only);
    returns the number of case rows. Raises ScopeError for an unknown code.
    `now` (default: the real clock) is the as-of of a running period: its rows and its
    figures are judged as of now, an ended period's as of its end."""
    if fmt not in ("xlsx", "csv"):
        raise ValueError(f"format is xlsx or csv, not {fmt!r}")
    d = await directory(db)
    place = place_for(d, scope)
    texts = Texts(DEFAULT_TEMPLATES, locale if locale in ("zh_CN", "en") else "zh_CN",
                  period.tz)
    zone = ZoneInfo(period.tz)
    now = now or datetime.now(UTC)
    conv = _Row(d, texts)
    query = ledger_query(period, place, period.as_of(now))

    async def rows() -> Any:
        return await _stream(db, query)

    if fmt == "csv":
        return await _write_csv(rows, conv, out, zone)
    # The figures first: the rows' stream then has the session to itself.
    grids = await breakdown(db, period, scope, "grid", now=now)
    total = await compute(db, period, scope, now=now)
    sheets = await _round_sheets(db, d, period, place, conv, now)
    return await _write_xlsx(rows, conv, out, texts, zone, grids, total, sheets)


__all__ = ["COLUMNS", "FIGURE_COLUMNS", "YIELD_PER", "ledger_query", "write_ledger"]
