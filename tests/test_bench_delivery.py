"""Smoke run of the delivery benchmark on its tiniest size: it runs and its numbers are sane.

Timing goals are not asserted (the machine is shared); that every message arrived, in order,
through both contenders, and that the minimum is computed as the issue defines it, is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import delivery
from bench.common import machine, markdown_table

pytestmark = pytest.mark.slow

pytest.importorskip("telegram.ext", reason="the peer needs python-telegram-bot[rate-limiter]")


def test_minimum_follows_the_limits() -> None:
    [privates] = delivery.build_workloads("full", 8, ("privates",))
    assert len(privates.messages) == 200 and privates.calls == 200
    assert privates.minimum()["minimum"] == pytest.approx(200 / 30)
    assert privates.minimum(per_second=25)["minimum"] == pytest.approx(8.0)
    [groups] = delivery.build_workloads("full", 8, ("groups",))
    assert groups.minimum()["minimum"] == pytest.approx(200 / 30)
    [reminders] = delivery.build_workloads("full", 8, ("reminders",))
    assert reminders.calls == 2000 and len(reminders.per_chat()) == 100
    assert reminders.minimum()["minimum"] == pytest.approx(2000 / 30)
    [cards] = delivery.build_workloads("full", 8, ("cards",))
    assert cards.calls == 100  # a media group of two photos, then the text with buttons
    assert cards.strict_minimum() == pytest.approx(3.0)


def test_common_table_and_machine() -> None:
    m = machine()
    assert m["cores"] >= 1 and m["python"].startswith("3.")
    table = markdown_table([{"a": 1.5, "b": True}], ["a", "b"])
    assert table.splitlines()[2] == "| 1.50 | yes |"


def test_tiny_run_delivers_everything_through_both(tmp_path: Path) -> None:
    out = tmp_path / "delivery.json"
    code = delivery.main(["--size", "tiny", "--only", "privates,cards", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text("utf-8"))
    assert data["machine"]["cores"] >= 1
    results = {(r["workload"], r["contender"].split()[0]): r for r in data["results"]}
    assert set(results) == {(w, c) for w in ("privates", "cards")
                            for c in ("gridbot", "python-telegram-bot")}
    for (workload, contender), r in results.items():
        assert r["error"] is None, (workload, contender, r["error"])
        assert r["calls_ok"] == r["calls_expected"] > 0
        assert r["in_order"]
        assert 0 < r["wall_s"] < 60
    ours = [r for (_w, c), r in results.items() if c == "gridbot"]
    # The sender keeps Telegram's limits even on a tiny run.
    assert all(r["too_many"] == 0 for r in ours)
    for row in data["rows"]:
        assert row["min s (Telegram)"] > 0 and row["ratio"] is not None
