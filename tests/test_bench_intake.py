"""Smoke run of the intake benchmark (bench/intake.py) on its tiniest pieces: it runs end to
end and its numbers are sane. Timing goals are not asserted (the machine is shared)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench import intake
from tests.e2e import TOKEN

pytestmark = pytest.mark.slow

# One case of each group kind is enough to drive every step once; the burst is two reports.
SMOKE = {"grids": 1, "text": 1, "photo": 0, "album": 0, "guided": 0, "burst": 2}


async def test_gridbot_process_answers_every_update(tmp_path: Path, monkeypatch: Any) -> None:
    """The real `gridbot run` (a process: its start-up, mostly importing aiogram, takes most
    of this test's time) driven through one case's life and a burst of two reports."""
    monkeypatch.setattr(intake, "IDLE_SECONDS", 0.5)
    target = intake.Target("gridbot run · SQLite", "gridbot", "run",
                           f"sqlite+aiosqlite:///{tmp_path}/gridbot.db")
    r = await intake.measure(target, SMOKE, 8, tmp_path)
    life, burst = r["life"], r["burst"]
    # report, verify, accept, resolve, result text, 提交, rate: each answered once
    assert life["failed"] == 0, life["failures"]
    assert life["updates"] == 7 and life["answered"] == 7, r
    assert set(life["by_kind"]) == {"report_text", "verify", "accept", "resolve",
                                    "result_text", "result_submit", "rate"}
    assert 0 < life["p50_ms"] <= life["p99_ms"] < 60_000
    assert life["cpu_s"] > 0 and life["cpu_ms_per_update"] > 0
    assert life["settled"]  # its outbox emptied
    assert burst["done"] and burst["updates"] == 2 and burst["rate"] > 0
    floor = {"target": "floor polling", "bot": "floor", "mode": "run", "workers": 1,
             "burst": burst,
             "life": {**life, "cpu_ms_per_update_net": life["cpu_ms_per_update_net"] / 10}}
    table = intake.summary({"results": [floor, r], "sql": [], "machine": {}})
    assert "gridbot run · SQLite" in table
    assert r["cost_ratio"] == pytest.approx(10)


async def test_floor_answers_every_update_once(tmp_path: Path) -> None:
    """The floor bot's dispatcher, in this process, polling the benchmark's fake Bot API,
    driven through the same steps: every update gets its one answer."""
    from bench import floor_bot

    api = intake.BenchApi(enforce_limits=False, long_poll_cap=0.5)
    url = await api.start()
    run = intake.Running(intake.Target("floor polling", "floor", "run"), tmp_path, api, url,
                         tmp_path / "unused.yaml")
    bot, dp = floor_bot.make(url, TOKEN)
    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False,
                                                   polling_timeout=1))
    try:
        driver = intake.Driver(run, api, 8)
        specs = [intake.CaseSpec(kind, 0, 1_000_000 + n, n)
                 for n, kind in enumerate(("text", "photo", "album", "guided"))]
        await asyncio.wait_for(asyncio.gather(*(driver.life(s) for s in specs)), 30)
        assert driver.failures == []
        assert len(driver.pendings) == 7 + 7 + 9 + 12
        measured = [p for p in driver.pendings if p.measured]
        assert len(measured) == len(driver.pendings) - 2  # album parts without a caption
        assert all(p.t1 is not None and p.t1 >= p.t0 for p in measured)
        burst = await driver.burst(5, 2)
        await asyncio.wait_for(asyncio.gather(*(p.fut for p in burst if p.fut)), 10)
    finally:
        await dp.stop_polling()
        await asyncio.wait_for(polling, 10)
        await bot.session.close()
        await api.stop()


async def test_sql_counts_per_update_kind(tmp_path: Path) -> None:
    rows = await intake.sql_counts(tmp_path)
    kinds = {r["kind"]: r for r in rows}
    report = kinds["group report (text)"]
    assert report["handle_sql"] > 0 and report["handle_tx"] >= 1
    assert report["sent"] == 2  # the acknowledgement and the building head's card
    assert kinds["flow: 提交"]["sent"] >= 1
    assert all(r["total_sql"] == r["store_sql"] + r["handle_sql"] + r["deliver_sql"]
               for r in rows)
    assert sum(report["handle_statements"].values()) == report["handle_sql"]


def test_workload_is_seeded() -> None:
    a, b = intake.workload(intake.SIZES["small"], 8), intake.workload(intake.SIZES["small"], 8)
    assert a == b
    per_case = {"text": 7, "photo": 7, "album": 9, "guided": 12}
    assert 280 <= sum(per_case[c.kind] for c in a) <= 320
    assert pytest.approx(sum(per_case[c.kind] for c in intake.workload(
        intake.SIZES["full"], 8)), rel=0.05) == 3000
