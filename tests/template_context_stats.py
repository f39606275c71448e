"""The variables the stats templates use, in one realistic context (tests/test_templates.py
renders every template with it; EVIL text must come out escaped)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.texts import Texts


def stats_context(texts: Texts, *, now: datetime, evil: str) -> dict[str, Any]:
    """What handlers/stats.py passes: `stats` and `stats_children` for stats.j2 (every
    branch at once: a panel per grid, years the calendar does not know, no chart), `export`
    for stats_export.j2."""
    fig = {
        "received": 42, "due": 40, "closed": 36, "closed_on_time": 33, "closed_late": 3,
        "open_at_end": 6, "overdue_at_end": 2, "reworked": 1, "escalated_community": 2,
        "escalated_street": 1, "rated": 30, "satisfied": 25, "fairly_satisfied": 3,
        "unsatisfied": 2, "no_feedback": 4, "resolved": 35,
        "accept_hours_median": "0.8", "accept_hours_p90": "3.5",
        "resolve_hours_median": "20.5", "resolve_hours_p90": "60.0", "overdue_factor": 1.4,
        "close_rate": "90.0%", "on_time_rate": "82.5%", "rework_rate": "2.5%",
        "satisfaction_rate": "93.3%", "resolve_rate": "83.3%",
    }
    grid = dict(fig, name=f"Grid 1 {evil}", code="BSY-01")
    empty = dict(fig, name="Grid 2", code="BSY-02", close_rate="—", on_time_rate="—",
                 satisfaction_rate="—")
    return {
        "stats": {
            "scope": f"Baishuying {evil}", "code": "BSY", "period": "2026-10", "fig": fig,
            "by": "grid", "unknown_years": [2027], "chart": False,
            "rounds": {
                "patrols": 12, "patrol_hours": "18.5", "buildings": 9, "buildings_patrolled": 7,
                "found_on_patrol": 3, "visits": 20, "visits_due": 18, "visits_on_time": 15,
                "visits_overdue": 2, "tasks": 3, "tasks_on_time": 2, "tasks_late": 0,
                "tasks_cannot": 1, "tasks_overdue": 0, "tasks_done": 2,
                "coverage_rate": "77.8%", "visit_rate": "83.3%", "task_rate": "66.7%",
            },
        },
        "stats_children": [grid, empty],
        "export": {"scope": f"Baishuying {evil}", "period": "2026-10", "rows": 128},
    }
