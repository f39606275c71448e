"""Smoke runs of bench.gen, bench.sweep, bench.explain and bench.startup on the tiny size.

They assert the scripts produce sane numbers, never timing goals: benchmarks are run apart
(`python3 -m bench.<name> --size full`). SQLite only, in both suite runs: the generated files
are SQLite, cached under the temp dir.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bench import explain, gen, startup
from bench import sweep as sweep_bench

pytestmark = pytest.mark.slow


async def test_generated_database_is_plausible(tmp_path: Path) -> None:
    g = await gen.generate(1000, 8, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", reuse=False)
    assert g.counts["cases"] == 1000
    assert g.counts["case_events"] > 2 * g.counts["cases"]
    assert g.counts["outbox"] > 0 and g.counts["people"] > 0 and g.counts["inbox"] > 0
    conn = sqlite3.connect(tmp_path / "g.db")
    try:
        now = gen.NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
        open_ = conn.execute("SELECT count(*) FROM cases WHERE status NOT IN "
                             "('closed', 'rejected')").fetchone()[0]
        assert open_ == 100
        # Every open case has a next check, none of them due at NOW.
        assert conn.execute("SELECT count(*) FROM cases WHERE next_check_at IS NOT NULL"
                            ).fetchone()[0] == open_
        assert conn.execute("SELECT count(*) FROM cases WHERE next_check_at <= ?",
                            (now,)).fetchone()[0] == 0
        # The product made the schema: its indexes are there.
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'index'")}
        assert {"ix_cases_due", "ix_cases_submitter", "ix_outbox_due"} <= indexes
    finally:
        conn.close()
    again = await gen.generate(1000, 8, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    assert again.cached


async def test_sweep_bench_tiny(tmp_path: Path) -> None:
    r = await sweep_bench.bench_size(1000, "tiny", 8, None, tmp_path)
    assert r["cases"] == 1000 and r["database"] == "sqlite"
    assert 0 < r["idle"]["median_ms"] <= r["idle"]["p90_ms"]
    assert r["idle"]["n"] == sweep_bench.REPS["tiny"][0]
    assert r["statements_per_idle_sweep"] >= 1
    assert r["due_cases"] >= sweep_bench.DUE["tiny"]
    # Every due case took at least one step, and the sweeps drained them.
    assert r["due_steps"] >= r["due_cases"]
    assert r["due_sweeps_to_drain"] >= 2
    goals = sweep_bench.goals([r])
    assert [g["target"] for g in goals] == ["< 10 ms", "≤ 2×"]


async def test_explain_tiny() -> None:
    out = await explain.run("tiny", 8, None)
    phases = {p for s in out["statements"] for p in s["phase"].split(",")}
    assert {"sweep", "tick", "report", "deliver", "sweep-due"} <= phases
    flood = [s for s in out["statements"]
             if "count(" in s["statement"] and "submitted_by_id" in s["statement"]]
    assert flood, "the per-report flood check was not captured"
    for s in out["statements"]:
        if not s["statement"].lstrip().upper().startswith("INSERT"):
            assert s["plan"], s["statement"]
        assert not any("cannot explain" in line for line in s["plan"]), s


def test_sqlite_scan_detection() -> None:
    assert explain._sqlite_scans(["SCAN cases"]) == ["cases"]
    assert explain._sqlite_scans(["SCAN outbox USING INDEX ix_outbox_due"]) == [
        "outbox (whole index ix_outbox_due)"]
    assert explain._sqlite_scans(["SEARCH cases USING INDEX ix_cases_due (next_check_at<?)"]
                                 ) == []
    assert explain._sqlite_scans(["SCAN categories"]) == []


async def test_startup_tiny() -> None:
    s = await startup.run("tiny", 8, idle=0.5)
    for key in ("first_update_s", "rss_mib"):
        assert s[key]["gridbot"] > 0 and s[key]["bare"] > 0
        assert s[key]["ratio"] is not None
    assert 20 < s["rss_mib"]["bare"] < 2000
    assert make_url(f"sqlite+aiosqlite:///{gen.CACHE}").database
