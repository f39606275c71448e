"""The assessment figures (issue 10) on a generated month with known answers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.cli import main
from bot.ledger import figures
from bot.ledger.figures import (
    Figures,
    Period,
    ScopeError,
    Weights,
    breakdown,
    compute,
    daily,
    score,
)
from storage.db import make_engine, make_sessionmaker
from tests.figures_month import TZ, Month, assert_figures, fill_month, local
from tests.harness import SAMPLE, Harness, fresh_database, isolate_env
from tests.test_cli import one_error_line


async def _month(h: Harness) -> Month:
    async with h.app.sessions() as db:
        return await fill_month(db)


# --- the period -------------------------------------------------------------------------


def test_a_month_is_its_local_days() -> None:
    p = Period.parse("2026-10", TZ)
    assert p.start == datetime(2026, 9, 30, 16, tzinfo=UTC)
    assert p.end == datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert p.label == "2026-10" and p.tz == TZ
    assert len(p.days()) == 31 and p.days()[0] == date(2026, 10, 1)
    # 23:30 on the 31st in Shanghai is 15:30 UTC: October; 00:30 on the 1st is November.
    assert p.start <= local(10, 31, 23, 30) < p.end
    assert not local(11, 1, 0, 30) < p.end
    assert Period.month_of(local(11, 1, 0, 30), TZ).label == "2026-11"
    assert Period.month_of(datetime(2026, 10, 31, 16, 30, tzinfo=UTC), TZ).label == "2026-11"
    assert Period.month_of(datetime(2026, 10, 31, 16, 30, tzinfo=UTC), "UTC").label == "2026-10"
    assert p.previous_month().label == "2026-09"
    assert Period.parse("2026-01", TZ).previous_month().label == "2025-12"
    assert Period.parse("2026-12", TZ).end == datetime(2026, 12, 31, 16, tzinfo=UTC)


def test_a_range_of_days_includes_its_last_day() -> None:
    p = Period.parse("2026-10-01..2026-10-15", TZ)
    assert p.label == "2026-10-01..2026-10-15"
    assert p.start == datetime(2026, 9, 30, 16, tzinfo=UTC)
    assert p.end == datetime(2026, 10, 15, 16, tzinfo=UTC)
    assert p.previous_month().label == "2026-09"
    assert len(p.days()) == 15


@pytest.mark.parametrize("text", [
    "2026-13", "2026-1", "26-10", "October", "", "2026-10-01", "2026-10-15..2026-10-01",
    "2026-10-01..", "2026-10-1..2026-10-02"])
def test_a_bad_period_is_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError) as err:
        Period.parse(text, TZ)
    assert "YYYY-MM" in str(err.value) or "ends before it starts" in str(err.value)


def test_an_unknown_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Period.parse("2026-10", "Mars/Olympus")


# --- the generated month ----------------------------------------------------------------


async def test_figures_of_each_scope_match_the_known_answers(h: Harness) -> None:
    month = await _month(h)
    for (label, scope), want in month.expected.items():
        async with h.app.sessions() as db:
            got = await compute(db, Period.parse(label, TZ), scope)
        assert_figures(got, want)


async def test_rates_follow_the_counts(h: Harness) -> None:
    await _month(h)
    async with h.app.sessions() as db:
        f = await compute(db, Period.parse("2026-10", TZ))
    assert f.close_rate == pytest.approx(12 / 15)
    assert f.on_time_rate == pytest.approx(9 / 15)
    assert f.rework_rate == pytest.approx(2 / 15)
    assert f.satisfaction_rate == pytest.approx(9 / 10)
    assert f.resolve_rate == pytest.approx(11 / 17)
    data = f.as_dict()
    assert data["received"] == 17 and data["on_time_rate"] == pytest.approx(0.6)
    empty = Figures()
    assert empty.close_rate is None and empty.satisfaction_rate is None


async def test_breakdowns_by_grid_community_building_and_category(h: Harness) -> None:
    month = await _month(h)
    for (label, scope, by), want in month.breakdowns.items():
        async with h.app.sessions() as db:
            rows = await breakdown(db, Period.parse(label, TZ), scope, by)  # type: ignore[arg-type]
        got = {code: fig for code, _name, fig in rows}
        for code, fig in want.items():
            assert_figures(got[code], fig)
    async with h.app.sessions() as db:
        grids = await breakdown(db, Period.parse("2026-10", TZ), "BSY", "grid")
        buildings = await breakdown(db, Period.parse("2026-10", TZ), None, "building")
        cats = await breakdown(db, Period.parse("2026-10", TZ), "BSY-01", "category")
    assert [(c, n) for c, n, _ in grids] == [("BSY-01", "柏树郢第一网格"),
                                             ("BSY-02", "柏树郢第二网格")]
    # Every building, in the registry's order; the sums are the district's.
    assert [c for c, _, _ in buildings] == ["BSY-01-03", "BSY-01-05", "BSY-02-12"]
    assert sum(f.received for _, _, f in buildings) == 17
    assert sum(f.closed for _, _, f in buildings) == 12
    # Every category in the registry's order, zeros included, names in the registry's locale.
    assert cats[0][:2] == ("facility", "市政设施")
    by_code = {c: f for c, _, f in cats}
    assert by_code["fire"] == Figures()  # fire was at BSY-02
    assert by_code["other"].received == 3 and by_code["other"].no_feedback == 1


async def test_a_grid_scope_breakdown_by_community_lists_its_community(h: Harness) -> None:
    await _month(h)
    async with h.app.sessions() as db:
        rows = await breakdown(db, Period.parse("2026-10", TZ), "BSY-02", "community")
    assert [(c, f.received) for c, _, f in rows] == [("BSY", 5)]


async def test_daily_counts_use_local_days(h: Harness) -> None:
    month = await _month(h)
    async with h.app.sessions() as db:
        days = await daily(db, Period.parse("2026-10", TZ), None)
    assert [d.day for d in days] == Period.parse("2026-10", TZ).days()
    got = {d.day: (d.received, d.closed, d.closed_on_time) for d in days}
    for day, want in month.october_days.items():
        assert got[day] == want, day
    assert sum(d.received for d in days) == 17
    assert sum(d.closed for d in days) == 12
    assert sum(d.closed_on_time for d in days) == 9
    async with h.app.sessions() as db:
        grid2 = await daily(db, Period.parse("2026-10-25..2026-10-26", TZ), "BSY-02")
    assert [(d.day, d.received, d.closed) for d in grid2] == [
        (date(2026, 10, 25), 1, 1), (date(2026, 10, 26), 0, 0)]


async def test_an_unknown_scope_is_refused(h: Harness) -> None:
    async with h.app.sessions() as db:
        for bad in ("NOPE", "BSY-01-03/1"):  # a unit is no scope either
            with pytest.raises(ScopeError, match="code"):
                await compute(db, Period.parse("2026-10", TZ), bad)
        with pytest.raises(ScopeError):
            await breakdown(db, Period.parse("2026-10", TZ), "NOPE", "grid")


async def test_the_day_a_case_counts_for_is_the_registry_timezones(h: Harness) -> None:
    month = await _month(h)
    assert month.ids["c11"] and month.ids["c20"]
    first_oct, first_nov = "2026-10-01..2026-10-01", "2026-11-01..2026-11-01"
    async with h.app.sessions() as db:
        # c20 at 07:00 on 1 October in Shanghai is 23:00 on 30 September in UTC; c11 at
        # 00:30 on 1 November is 16:30 on 31 October.
        assert (await compute(db, Period.parse(first_oct, TZ))).received == 1
        assert (await compute(db, Period.parse(first_oct, "UTC"))).received == 0
        assert (await compute(db, Period.parse(first_nov, TZ))).received == 1
        assert (await compute(db, Period.parse(first_nov, "UTC"))).received == 0
        # In UTC October loses c20 and gains c11.
        assert (await compute(db, Period.parse("2026-10", "UTC"))).received == 17
        assert (await compute(db, Period.parse("2026-09", "UTC"))).received == 2


# --- the score ----------------------------------------------------------------------------


def test_the_score_weighs_the_rates() -> None:
    w = Weights()
    perfect = Figures(due=10, closed=10, closed_on_time=10, rated=5, satisfied=5)
    assert score(perfect, w) == 100.0
    f = Figures(due=10, closed=8, closed_on_time=6, reworked=2, rated=4, satisfied=2,
                fairly_satisfied=1, unsatisfied=1)
    # 50 × 0.6 + 20 × 0.8 + 20 × 0.75 + 10 × (1 − 0.2) = 30 + 16 + 15 + 8
    assert score(f, w) == pytest.approx(69.0)
    # Nobody rated: satisfaction leaves, the other 80 points are scaled to 100.
    unrated = Figures(due=10, closed=8, closed_on_time=6, reworked=2)
    assert score(unrated, w) == pytest.approx(100 * (30 + 16 + 8) / 80)
    assert score(Figures(), w) == 100.0
    # More reworks than cases due costs the rework points, never more.
    assert score(Figures(due=1, closed=1, closed_on_time=1, reworked=3), w) == pytest.approx(
        100 * 70 / 80)
    custom = Weights.from_settings({"on_time": 60, "closed": 40, "satisfied": 0, "rework": 0})
    assert score(f, custom) == pytest.approx(60 * 0.6 + 40 * 0.8)
    assert Weights.from_settings(None) == Weights()
    assert Weights.from_settings({"rework": 5}) == Weights(rework=5)


# --- statements ---------------------------------------------------------------------------


@contextmanager
def counting(h: Harness) -> Iterator[list[str]]:
    seen: list[str] = []
    sync = h.app.engine.sync_engine

    def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(sync, "before_cursor_execute", on_sql)
    try:
        yield seen
    finally:
        event.remove(sync, "before_cursor_execute", on_sql)


async def _statements(h: Harness) -> list[int]:
    period = Period.parse("2026-10", TZ)
    counts = []
    for call in (lambda db: compute(db, period, "BSY-01"),
                 lambda db: breakdown(db, period, "BSY", "grid"),
                 lambda db: breakdown(db, period, None, "building"),
                 lambda db: daily(db, period, None)):
        async with h.app.sessions() as db:
            from bot.org.directory import directory

            await directory(db)  # the registry check is the session's, not the figures'
            with counting(h) as seen:
                await call(db)
        counts.append(len(seen))
    return counts


async def test_the_number_of_statements_does_not_grow_with_the_cases(h: Harness) -> None:
    await _month(h)
    few = await _statements(h)
    assert few == [3, 3, 3, 2]
    # Four more months' worth of the same cases, and the figures cost the same statements.
    for _ in range(4):
        await _month(h)
    assert await _statements(h) == few
    async with h.app.sessions() as db:
        f = await compute(db, Period.parse("2026-10", TZ))
    assert f.received == 5 * 17 and f.closed == 5 * 12


def test_hours_compile_on_both_databases() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from storage.models import Case

    expr = figures.hours_between(Case.reported_at, Case.resolved_at)
    assert "julianday" in str(expr.compile(dialect=sqlite.dialect()))
    assert "EXTRACT(EPOCH" in str(expr.compile(dialect=postgresql.dialect()))


async def test_a_past_month_ignores_later_events(h: Harness) -> None:
    """A rework after the month takes the month's closure away (the result did not stand)."""
    month = await _month(h)
    from sqlalchemy import update

    from storage.models import Case, CaseEvent

    async with h.app.sessions() as db:
        case_id = month.ids["c7"]
        await db.execute(update(Case).where(Case.id == case_id).values(
            status="open", resolved_at=None, round=2, clock_started_at=local(11, 3, 9),
            deadline_at=local(11, 3, 9) + timedelta(hours=72), closed_at=None,
            close_reason=None))
        db.add(CaseEvent(case_id=case_id, at=local(11, 3, 9), action="rework",
                         from_status="closed", to_status="open"))
        await db.commit()
        oct_ = await compute(db, Period.parse("2026-10", TZ))
        nov = await compute(db, Period.parse("2026-11", TZ))
    assert oct_.closed == 11 and oct_.no_feedback == 2  # the event of October stays
    assert nov.reworked == 1 and nov.unsatisfied == 0


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database with the sample registry and the generated month, named by the
    environment as `gridbot` reads it."""
    isolate_env(monkeypatch, tmp_path)
    url = asyncio.run(fresh_database(tmp_path, "cli.db"))
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", url)
    assert main(["registry", "load", str(SAMPLE)]) == 0

    async def fill() -> None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as db:
                await fill_month(db)
        finally:
            await engine.dispose()

    asyncio.run(fill())
    return url


def test_stats_prints_the_figures(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["stats", "--month", "2026-10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2026-10 (Asia/Shanghai) · all")
    lines = {line.strip().rsplit("  ", 1)[0].strip(): line.strip().rsplit(" ", 1)[1]
             for line in out.splitlines()[1:] if line.startswith("  ") and ": " not in line}
    assert lines["受理数 received"] == "17"
    assert lines["应结案数 due"] == "15"
    assert lines["按期结案率 on-time rate"] == "60.0%"
    assert lines["满意率 satisfaction rate"] == "90.0%"
    assert lines["处置用时中位数 hours to resolve, median"] == "41.2"
    assert "  BSY-01 柏树郢第一网格: 12 / 10 / 8 / 7 / 70.0% / 2 / 85.7%" in out
    assert "  BSY-02 柏树郢第二网格: 5 / 5 / 4 / 2 / 40.0% / 0 / 100.0%" in out
    assert main(["stats", "--month", "2026-10", "--scope", "BSY-01-05"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2026-10 (Asia/Shanghai) · BSY-01-05 5号楼")
    assert "per grid" not in out


def test_stats_as_json(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["stats", "--month", "2026-10", "--scope", "BSY", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["period"] == "2026-10" and data["scope"] == "BSY"
    assert data["start"] == "2026-09-30T16:00:00+00:00"
    assert data["figures"]["received"] == 17 and data["figures"]["closed_late"] == 3
    assert data["figures"]["close_rate"] == pytest.approx(0.8)
    assert data["figures"]["overdue_factor"] == pytest.approx(29 / 18)
    assert [g["code"] for g in data["grids"]] == ["BSY-01", "BSY-02"]
    assert data["grids"][1]["figures"]["escalated_street"] == 1
    assert main(["stats", "--month", "2026-11", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["figures"]["received"] == 1


@pytest.mark.parametrize("month", ["2026-13", "10/2026", "2026-10-31..2026-10-01"])
def test_stats_refuses_a_bad_month_in_one_line(
        cli_db: str, capsys: pytest.CaptureFixture[str], month: str) -> None:
    capsys.readouterr()
    assert main(["stats", "--month", month]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert ("--month" in line and repr(month) in line) or "ends before" in line


def test_stats_refuses_an_unknown_scope_in_one_line(
        cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["stats", "--month", "2026-10", "--scope", "XYZ-9"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--scope" in line and "'XYZ-9'" in line


def test_stats_without_a_registry_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("GRIDBOT_DATABASE_URL",
                       asyncio.run(fresh_database(tmp_path, "empty.db")))
    assert main(["stats", "--month", "2026-10"]) == 1
    assert "registry load" in one_error_line(capsys.readouterr().err)


def test_a_bad_month_is_refused_before_the_database_is_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    isolate_env(monkeypatch, tmp_path)
    path = tmp_path / "never.db"
    monkeypatch.setenv("GRIDBOT_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    assert main(["stats", "--month", "soon"]) == 1
    assert main(["export", "--month", "soon", "-o", str(tmp_path / "x.xlsx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--month" in line for line in err)
    assert not path.exists() and not (tmp_path / "x.xlsx").exists()


def test_export_refuses_an_unknown_scope_and_writes_nothing(
        cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    out = tmp_path / "ledger.xlsx"
    assert main(["export", "--month", "2026-10", "--scope", "NOPE", "-o", str(out)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--scope" in line and "'NOPE'" in line
    assert not out.exists()


def test_export_refuses_a_file_it_cannot_write(
        cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    out = tmp_path / "no" / "such" / "dir" / "ledger.xlsx"
    assert main(["export", "--month", "2026-10", "-o", str(out)]) == 1
    assert "cannot write" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("args,fmt", [(["-o", "{d}/ledger.xlsx"], "xlsx"),
                                      (["-o", "{d}/ledger.csv"], "csv"),
                                      (["--format", "csv", "-o", "{d}/ledger.txt"], "csv")])
def test_export_writes_the_ledger(cli_db: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str], args: list[str],
                                  fmt: str) -> None:
    capsys.readouterr()
    argv = [a.format(d=tmp_path) for a in args]
    out = Path(argv[-1])
    assert main(["export", "--month", "2026-10", "--scope", "BSY-02", *argv]) == 0
    said = capsys.readouterr().out
    assert f"as {fmt}" in said and str(out) in said
    data = out.read_bytes()
    # BSY-02's October: c5, c6, c13, c14, c19 (the ledger's own rows are test_ledger.py's)
    assert "(5 cases of BSY-02)" in said
    if fmt == "csv":
        assert data.startswith(b"\xef\xbb\xbf")
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
        assert len(rows) == 1 + 5
    else:
        assert data.startswith(b"PK")  # a zip: the xlsx
    assert oct(out.stat().st_mode & 0o777) == "0o600"
