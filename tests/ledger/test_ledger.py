"""The ledger (台账) export (issue 10): rows checked cell by cell against the database, the
figures sheet against compute(), the CSV, the sheet's make-up, and streaming."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ledger import export as ledger
from bot.ledger.export import COLUMNS, DATE_FORMAT, FIGURE_COLUMNS, YIELD_PER, write_ledger
from bot.ledger.figures import Figures, Period, ScopeError, compute
from bot.org.directory import directory
from storage.models import Case, CaseEvent, Person
from tests.figures_month import (
    DISTRICT_OCT,
    GRID1_OCT,
    GRID2_OCT,
    HEAD,
    TZ,
    Month,
    fill_month,
    local,
)
from tests.harness import Harness

ZONE = ZoneInfo(TZ)
OCT = Period.parse("2026-10", TZ)
NOV = Period.parse("2026-11", TZ)
# Exported after both months are over: "overdue by" of open cases stops at the period's end.
LATER = datetime(2026, 12, 20, tzinfo=UTC)
KEYS = [c.key for c in COLUMNS]
HEADERS_ZH = ["编号", "受理时间", "网格", "楼栋/单元", "类别", "诉求内容", "反映人", "核实人",
              "核实时间", "处置人", "办结时限", "办结时间", "结案时间", "是否超期", "超期时长",
              "处置结果", "满意度", "返工次数", "上报层级", "状态"]


async def _month(h: Harness) -> Month:
    async with h.app.sessions() as db:
        month = await fill_month(db)
        # Two verifications: c1 confirmed by its building head, c7 by a head since erased.
        for name, actor in (("c1", HEAD), ("c7", None)):
            case_id = month.ids[name]
            db.add(CaseEvent(case_id=case_id, at=local(10, 2, 9, 30) if name == "c1"
                             else local(10, 20, 14, 20), actor_id=actor, action="confirm",
                             from_status="verifying", to_status="open"))
            await db.execute(update(Case).where(Case.id == case_id)
                             .values(verified="confirmed"))
        await db.commit()
    return month


async def _export(h: Harness, fmt: Any, period: Period = OCT, scope: str | None = None,
                  locale: str = "zh_CN", now: datetime = LATER) -> tuple[bytes, int]:
    out = io.BytesIO()
    async with h.app.sessions() as db:
        n = await write_ledger(db, period, scope, out, fmt, locale, now=now)
    return out.getvalue(), n


def _sheets(data: bytes) -> tuple[Any, Any]:
    wb = openpyxl.load_workbook(io.BytesIO(data))
    # The cases and the figures, then the rounds' 巡查, 走访 and 专项任务 (issue 22;
    # tests/ledger/test_rounds_figures.py reads those).
    assert len(wb.sheetnames) == 5
    return wb.worksheets[0], wb.worksheets[1]


def _rows(ws: Any) -> list[dict[str, Any]]:
    values = list(ws.iter_rows(values_only=True))
    return [dict(zip(KEYS, row, strict=True)) for row in values[1:]]


def _naive(when: datetime | None) -> datetime | None:
    return when.astimezone(ZONE).replace(tzinfo=None) if when is not None else None


async def _expected_row(db: AsyncSession, case_id: int) -> dict[str, Any]:
    """A row worked out from the database case by case, the slow way (the oracle)."""
    c = await db.get(Case, case_id)
    assert c is not None
    d = await directory(db)
    building = d.places[c.building_id]
    grid = d.places[building.parent_id or 0]
    unit = d.place(c.unit_id)

    async def name(pid: int | None) -> str:
        p = await db.get(Person, pid) if pid is not None else None
        return p.name if p is not None else ""

    events = (await db.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id)
                               .order_by(CaseEvent.id))).all()
    confirms = [e for e in events if e.action == "confirm"]
    moves = [e.level or "community" for e in events
             if e.action in ("escalate", "auto_escalate")]
    levels = [(lv, moves.count(lv)) for lv in ("community", "street") if moves.count(lv)]
    label = {"community": "社区", "street": "街道"}
    return {
        "number": f"#{c.id}",
        "received_at": _naive(c.reported_at),
        "grid": grid.name,
        "place": " ".join([building.name, *([unit.name] if unit else [])]),
        "category": d.categories[c.category].name_zh,
        "description": c.description or None,
        "reporter": await name(c.reporter_id) or None,
        "verified_by": (await name(confirms[-1].actor_id) if confirms else "") or None,
        "verified_at": _naive(confirms[-1].at) if confirms else None,
        "handler": await name(c.resolved_by_id or c.accepted_by_id) or None,
        "deadline": _naive(c.deadline_at),
        "resolved_at": _naive(c.resolved_at),
        "closed_at": _naive(c.closed_at),
        "result": c.result,
        "rework": c.round - 1,
        "escalation": "、".join(label[lv] + (f"×{n}" if n > 1 else "")
                               for lv, n in levels) or None,
        "rating": ({"good": "满意", "fair": "基本满意", "bad": "不满意"}.get(c.rating or "")
                   if c.close_reason != "no_feedback" else "无反馈"),
        "status": {"open": "待受理", "accepted": "办理中", "resolved": "已办结待回访",
                   "closed": "已结案", "suspended": "已挂账", "verifying": "待核实",
                   "checking": "办结待核查", "assigned": "已交办"}[c.status],
    }


# The ledger of October: what its figures are about (c11 is November's, c12 was rejected;
# c9, reported in September, was closed in October).
OCTOBER = ["c9", "c20", "c1", "c6", "c2", "c15", "c3", "c4", "c5", "c13", "c7", "c8",
           "c14", "c19", "c18", "c17", "c16", "c10"]


async def test_xlsx_rows_cell_by_cell(h: Harness) -> None:
    month = await _month(h)
    data, n = await _export(h, "xlsx")
    cases, _ = _sheets(data)
    header = [c.value for c in cases[1]]
    assert header == HEADERS_ZH
    rows = _rows(cases)
    names = {f"#{v}": k for k, v in month.ids.items()}
    assert n == len(rows) == 18
    assert [names[r["number"]] for r in rows] == OCTOBER  # in the order of their reports
    async with h.app.sessions() as db:
        for row in rows:
            want = await _expected_row(db, int(row["number"][1:]))
            for key, value in want.items():
                assert row[key] == value, (names[row["number"]], key, row[key], value)

    by = {names[r["number"]]: r for r in rows}
    # Hand-checked rows, every column.
    assert by["c1"] == {
        "number": f"#{month.ids['c1']}", "received_at": datetime(2026, 10, 2, 9, 0),
        "grid": "柏树郢第一网格", "place": "3号楼", "category": "市政设施",
        "description": "楼道灯坏了", "reporter": "居民1", "verified_by": "楼栋长丙",
        "verified_at": datetime(2026, 10, 2, 9, 30), "handler": "网格长甲",
        "deadline": datetime(2026, 10, 5, 9, 0), "resolved_at": datetime(2026, 10, 3, 9, 0),
        "closed_at": datetime(2026, 10, 3, 12, 0), "overdue": "否", "overdue_by": None,
        "result": "已处理", "rating": "满意", "rework": 0, "escalation": None,
        "status": "已结案"}
    # The reporter erased: no name, no description; the case stays.
    assert by["c8"]["reporter"] is None and by["c8"]["description"] is None
    assert by["c8"]["rating"] == "满意" and by["c8"]["handler"] == "网格长甲"
    # Verified by a head since erased: the time stays, the name does not.
    assert by["c7"]["verified_by"] is None
    assert by["c7"]["verified_at"] == datetime(2026, 10, 20, 14, 20)
    assert by["c7"]["rating"] == "无反馈"
    # Reopened (不满意), then rated 满意 in round two.
    assert by["c3"]["rework"] == 1 and by["c3"]["rating"] == "满意"
    assert by["c3"]["deadline"] == datetime(2026, 10, 14, 20, 0)  # from the rework
    assert by["c4"]["rework"] == 1 and by["c4"]["rating"] == "无反馈"
    # Escalated twice, still open at the street: overdue until October's end.
    assert by["c6"]["escalation"] == "社区、街道"
    assert by["c6"]["handler"] == "街道综治中心值班员"
    assert (by["c6"]["overdue"], by["c6"]["overdue_by"]) == ("是", "21天15小时")
    assert by["c6"]["status"] == "办理中"
    assert by["c5"]["escalation"] == "社区"
    assert by["c5"]["handler"] == "网格长庚"  # the month's resolved_by_id
    # Closed late: by how long after the deadline.
    assert (by["c2"]["overdue"], by["c2"]["overdue_by"]) == ("是", "1天")
    assert (by["c14"]["overdue"], by["c14"]["overdue_by"]) == ("是", "1天")
    assert by["c14"]["rating"] is None and by["c14"]["status"] == "已办结待回访"
    # On time only by its approved extension.
    assert by["c13"]["overdue"] == "否"
    # Open past its deadline at October's end, and judged there: c18, resolved in November
    # (2 days late), was 15 hours overdue at October's end (issue 19, defect 5).
    assert (by["c17"]["overdue"], by["c17"]["overdue_by"]) == ("是", "1天15小时")
    assert (by["c18"]["overdue"], by["c18"]["overdue_by"]) == ("是", "15小时")
    # Suspended: never overdue.
    assert by["c15"]["overdue"] == "否" and by["c15"]["status"] == "已挂账"
    assert by["c16"]["status"] == "待核实" and by["c16"]["overdue"] == "否"
    # A September case closed in October, its local report time kept.
    assert by["c9"]["received_at"] == datetime(2026, 9, 30, 23, 30)
    assert by["c19"]["resolved_at"] == datetime(2026, 10, 25, 23, 50)


async def test_sheet_make_up(h: Harness) -> None:
    await _month(h)
    data, n = await _export(h, "xlsx")
    cases, figures = _sheets(data)
    assert cases.title == "台账" and figures.title == "分网格统计"
    assert cases.freeze_panes == "A2" and figures.freeze_panes == "A2"
    assert cases.auto_filter.ref == f"A1:T{n + 1}"
    assert figures.auto_filter.ref == "A1:AB4"  # 28 columns: two grids and the total
    assert cases.column_dimensions["F"].width == 40  # the description
    assert cases.column_dimensions["B"].width == 17
    assert cases["A1"].font.b
    dates = [KEYS.index(k) + 1 for k in ("received_at", "deadline")]
    for row in cases.iter_rows(min_row=2):
        for col in dates:
            cell = row[col - 1]
            assert isinstance(cell.value, datetime) and cell.is_date
            assert cell.number_format == DATE_FORMAT
        assert isinstance(row[KEYS.index("rework")].value, int)


async def test_figures_sheet_against_compute(h: Harness) -> None:
    await _month(h)
    data, _ = await _export(h, "xlsx", scope="BSY")
    _, sheet = _sheets(data)
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:5] == ("网格编码", "网格", "受理数", "应结案数", "结案数")
    assert [r[:2] for r in rows[1:]] == [("BSY-01", "柏树郢第一网格"),
                                        ("BSY-02", "柏树郢第二网格"), (None, "合计")]
    async with h.app.sessions() as db:
        computed = [await compute(db, OCT, code) for code in ("BSY-01", "BSY-02", "BSY")]
    for row, fig, known in zip(rows[1:], computed, (GRID1_OCT, GRID2_OCT, DISTRICT_OCT),
                               strict=True):
        _same_figures(dict(zip(FIGURE_COLUMNS, row, strict=True)), fig)
        _same_figures(dict(zip(FIGURE_COLUMNS, row, strict=True)), known)
    cells = sheet[2]
    assert cells[FIGURE_COLUMNS.index("close_rate")].number_format == "0.0%"
    assert cells[FIGURE_COLUMNS.index("received")].number_format == "General"


def _same_figures(row: dict[str, Any], fig: Figures) -> None:
    for key in FIGURE_COLUMNS[2:]:
        want = getattr(fig, key)
        if want is None:
            assert row[key] is None, key
        elif isinstance(want, float):
            assert row[key] == pytest.approx(want, abs=0.006), key
        else:
            assert row[key] == want, key


async def test_csv_same_rows(h: Harness) -> None:
    await _month(h)
    xlsx, n = await _export(h, "xlsx")
    raw, m = await _export(h, "csv")
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs
    got = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    cases, _ = _sheets(xlsx)
    want = [["" if v is None else v.strftime("%Y-%m-%d %H:%M") if isinstance(v, datetime)
             else str(v) for v in row] for row in cases.iter_rows(values_only=True)]
    assert m == n and got == want
    assert got[2][1] == "2026-10-01 07:00"  # c20: local time, though 09-30 in UTC


async def test_scope_and_other_months(h: Harness) -> None:
    month = await _month(h)
    names = {f"#{v}": k for k, v in month.ids.items()}
    data, n = await _export(h, "xlsx", scope="BSY-02")
    cases, figures = _sheets(data)
    assert [names[r["number"]] for r in _rows(cases)] == ["c6", "c5", "c13", "c14", "c19"]
    assert n == 5
    fig_rows = list(figures.iter_rows(values_only=True))
    assert [r[0] for r in fig_rows[1:]] == ["BSY-02", None]
    _same_figures(dict(zip(FIGURE_COLUMNS, fig_rows[2], strict=True)), GRID2_OCT)
    data, _ = await _export(h, "csv", scope="BSY-01-05")
    got = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert [names[r[0]] for r in got[1:]] == ["c20", "c3", "c4", "c17", "c16", "c10"]
    # November: its one report, its closure, and what was open at its end.
    data, _ = await _export(h, "csv", period=NOV)
    got = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert sorted(names[r[0]] for r in got[1:]) == sorted(
        ["c6", "c10", "c11", "c15", "c16", "c17", "c18"])
    with pytest.raises(ScopeError):
        await _export(h, "xlsx", scope="NOPE")
    with pytest.raises(ScopeError):
        await _export(h, "csv", scope="BSY-01-03/1")  # a unit is no scope of the figures


async def test_running_period_counts_to_now(h: Harness) -> None:
    month = await _month(h)
    now = local(10, 30, 21)  # October not over: c17 (deadline 10-30 09:00) is 12h late
    data, _ = await _export(h, "csv", now=now)
    got = {r[0]: r for r in csv.reader(io.StringIO(data.decode("utf-8-sig")))}
    row = got[f"#{month.ids['c17']}"]
    assert row[KEYS.index("overdue")] == "是" and row[KEYS.index("overdue_by")] == "12小时"


async def test_english(h: Harness) -> None:
    month = await _month(h)
    data, _ = await _export(h, "xlsx", locale="en")
    cases, figures = _sheets(data)
    assert cases.title == "Cases" and figures.title == "By grid"
    assert [c.value for c in cases[1]][:3] == ["No.", "Received", "Grid"]
    by = {r["number"]: r for r in _rows(cases)}
    c6 = by[f"#{month.ids['c6']}"]
    assert c6["escalation"] == "Community, Street"
    assert (c6["overdue"], c6["overdue_by"]) == ("Yes", "21d 15h")
    assert c6["category"] == "Neighbour disputes"
    assert by[f"#{month.ids['c7']}"]["rating"] == "No feedback"
    assert by[f"#{month.ids['c1']}"]["rating"] == "Satisfied"
    assert [r[1] for r in figures.iter_rows(values_only=True)][-1] == "Total"


async def test_hostile_text(h: Harness) -> None:
    """Text people typed is data: never a formula, in xlsx or CSV; control characters
    (which xlsx cannot hold) are dropped."""
    month = await _month(h)
    async with h.app.sessions() as db:
        await db.execute(update(Case).where(Case.id == month.ids["c1"])
                         .values(description="=HYPERLINK(\"http://x\")\x01",
                                 result="+1 已处理"))
        await db.commit()
    data, _ = await _export(h, "xlsx")
    cases, _ = _sheets(data)
    row = next(r for r in cases.iter_rows(min_row=2) if r[0].value == f"#{month.ids['c1']}")
    cell = row[KEYS.index("description")]
    assert cell.value == '=HYPERLINK("http://x")' and cell.data_type == "s"
    raw, _ = await _export(h, "csv")
    got = {r[0]: r for r in csv.reader(io.StringIO(raw.decode("utf-8-sig")))}
    line = got[f"#{month.ids['c1']}"]
    assert line[KEYS.index("description")] == "'=HYPERLINK(\"http://x\")\x01"
    assert line[KEYS.index("result")] == "'+1 已处理"


async def test_unknown_format(h: Harness) -> None:
    async with h.app.sessions() as db:
        with pytest.raises(ValueError):
            await write_ledger(db, OCT, None, io.BytesIO(), "pdf", now=LATER)  # type: ignore[arg-type]


# --- streaming ------------------------------------------------------------------------------

SMALL = 600  # a batch and a bit
BIG = 3000
TEXT = 3000  # characters of description per generated case


async def _many(h: Harness, count: int) -> None:
    """`count` October cases with long descriptions, every tenth escalated."""
    async with h.app.sessions() as db:
        d = await directory(db)
        building = d.by_code["BSY-01-03"].id
        start = local(10, 1, 8)
        rows = []
        for i in range(count):
            at = start + timedelta(minutes=10 * i)
            rows.append(dict(status="accepted", rev=2, level="grid", category="other",
                             urgent=False, verified="unverified", building_id=building,
                             reporter_id=None, description=f"{i:05d}" + "x" * TEXT,
                             reported_at=at, clock_started_at=at,
                             deadline_at=at + timedelta(hours=72), round=1,
                             accepted_by_id=920001))
        await db.execute(insert(Case), rows)
        ids = (await db.scalars(select(Case.id).where(Case.building_id == building)
                                .order_by(Case.id))).all()
        await db.execute(insert(CaseEvent), [
            dict(case_id=cid, at=start, actor_id=None, action="escalate",
                 from_status="accepted", to_status="open", level="community")
            for cid in ids[::10]])
        await db.commit()


class _Sink(io.RawIOBase):
    """Counts what is written and keeps nothing."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.size += len(b)
        return len(b)


async def test_rows_stream(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows come from one streamed statement of plain columns, yield_per at a time, and are
    written as they come: the export's peak memory is that of a batch, the same for five
    times the cases (all of them held at once would be five times as much)."""
    statements: list[Any] = []
    real_stream = AsyncSession.stream

    async def spy(self: AsyncSession, statement: Any, *args: Any, **kw: Any) -> Any:
        statements.append(statement)
        return await real_stream(self, statement, *args, **kw)

    monkeypatch.setattr(AsyncSession, "stream", spy)
    peaks: list[int] = []
    for total, more in ((SMALL, SMALL), (BIG, BIG - SMALL)):
        await _many(h, more)
        async with h.app.sessions() as db:
            # Once untraced: templates and statements compiled, caches filled.
            await write_ledger(db, OCT, None, io.BufferedWriter(_Sink()), "csv", now=LATER)
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                n = await write_ledger(db, OCT, None, io.BufferedWriter(_Sink()), "csv",
                                       now=LATER)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert n == total
        peaks.append(peak - base)
    assert peaks[1] < 1.5 * peaks[0], peaks
    assert peaks[1] < BIG * TEXT, peaks  # less than the month's descriptions alone
    assert len(statements) == 4  # one per export
    stmt = statements[-1]
    assert stmt.get_execution_options()["yield_per"] == YIELD_PER
    # Plain columns, no ORM entity: rows are tuples, not Case objects with their state.
    assert not any(desc.get("entity") is not None and desc["type"] is Case
                   for desc in stmt.column_descriptions)
    assert {desc["name"] for desc in stmt.column_descriptions} >= {"id", "esc_c", "esc_s"}


async def test_statements_do_not_grow(h: Harness) -> None:
    """The xlsx export runs the same statements for 30 cases as for 3000."""
    counts: list[int] = []
    engine = h.app.engine.sync_engine
    for total, more in ((30, 30), (BIG, BIG - 30)):
        await _many(h, more)
        executed: list[str] = []

        def count(conn: Any, cursor: Any, sql: str, *args: Any,
                  executed: list[str] = executed) -> None:
            executed.append(sql)

        event.listen(engine, "before_cursor_execute", count)
        try:
            async with h.app.sessions() as db:
                n = await write_ledger(db, OCT, "BSY", io.BytesIO(), "xlsx", now=LATER)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert n == total
        counts.append(len(executed))
    # At most 12 for the cases and their figures, 7 for the rounds' three sheets.
    assert counts[0] == counts[1] <= 19, counts


def test_columns_have_labels() -> None:
    from bot.config import DEFAULT_TEMPLATES
    from bot.texts import Texts
    for locale in ("zh_CN", "en"):
        texts = Texts(DEFAULT_TEMPLATES, locale)
        for key in KEYS:
            assert texts.has_label(f"ledger_col_{key}")
        for key in FIGURE_COLUMNS:
            assert texts.has_label(f"ledger_fig_{key}")
    assert ledger.COLUMNS[0].key == "number"
