"""The variables the digest templates use, in one realistic context (tests/test_templates.py
renders every template with it; EVIL text must come out escaped). Shaped like what
`bot/ledger/digest.py` passes: `_grid_view` rows, the capped case lists, the score rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.texts import Texts


def _grid(code: str, name: str, **counts: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "code": code, "name": name, "status": "red", "red": 2, "yellow": 1, "green": 4,
        "paused": 1, "due_total": 12, "due_more": 2, "unsatisfied_total": 1,
        "unsatisfied_more": 0, "care_due": 3, "care_overdue": 1,
        "patrols": 0, "tasks_open": 2, "tasks_overdue": 1,
    }
    row.update(counts)
    return row


def digest_context(texts: Texts, *, now: datetime, evil: str) -> dict[str, Any]:
    grids = [
        _grid("BSY-01", f"First grid {evil}"),
        _grid("BSY-02", "Second grid", status="green", red=0, yellow=0, green=0, paused=0,
              due_total=0, due_more=0, unsatisfied_total=0),
    ]
    due = [{"grid": "BSY-01", "id": 4217 + i, "category": f"Stairwell lighting {evil}",
            "place": f"Building 3 {evil}", "deadline_at": now + timedelta(hours=i)}
           for i in range(10)]
    unsatisfied = [{"grid": "BSY-01", "id": 4230, "category": "Sanitation",
                    "place": f"Building 5 {evil}", "at": now - timedelta(hours=20)}]
    score_row = {
        "code": "BSY-01", "name": f"First grid {evil}", "community": f"Baishuying {evil}",
        "leader": f"Leader Jia {evil}", "score": "87.5", "on_time_rate": "80.0%",
        "close_rate": "90.0%", "satisfaction_rate": "—", "rework_rate": "10.0%", "due": 10,
        "closed": 9, "closed_on_time": 8, "reworked": 1, "rated": 0, "rank": 1,
        "coverage_rate": "75.0%", "visit_rate": "—", "task_rate": "100.0%",
    }
    return {
        "digest_day": now.date(),
        # Sent over two hours late (bot.ledger.digest.LATE_AFTER): when it was owed.
        "digest_late": {"month": now.month, "day": now.day, "at": "08:30"},
        "digest_grids": grids,
        "digest_due": due,
        "digest_unsatisfied": unsatisfied,
        "digest_communities": [{"code": "BSY", "name": f"Baishuying {evil}", "open": 7,
                                "red": 2, "yellow": 1, "due_total": 12,
                                "unsatisfied_total": 1}],
        "digest_ranking": [{**g, "community": "BSY", "rank": i}
                           for i, g in enumerate(grids, 1)],
        "score_month": "2026-10",
        "score_street": True,
        "score_late": {"month": now.month, "day": 1, "at": "08:30"},
        "score_weights": {"on_time": "50", "closed": "20", "satisfied": "20", "rework": "10",
                          "rounds": True, "coverage": "10", "visits": "10", "campaigns": "0"},
        "score_rows": [score_row, {**score_row, "code": "BSY-02", "rank": 2, "score": "100.0",
                                   "name": "Second grid"}],
    }
