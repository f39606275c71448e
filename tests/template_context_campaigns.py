"""The variables the campaign templates use (task_card, task_preview, task_summary,
task_list), in one realistic context (tests/test_templates.py renders every template with
it; EVIL text must come out escaped). Shaped like what `bot/rounds/campaigns.py` passes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def campaigns_context(*, now: datetime, evil: str) -> dict[str, Any]:
    task = {"id": 7, "title": f"Flood patrol {evil}", "body": f"Check the drains {evil}",
            "deadline_at": now + timedelta(days=1), "needs_location": True, "photos": 2}
    rows = [
        {"grid": f"First grid {evil}", "state": "done", "photos": 3, "by": f"Leader {evil}",
         "at": now, "reason": f"Swept the drains {evil}"},
        {"grid": "Second grid", "state": "cannot", "photos": 0, "by": "Member",
         "at": now, "reason": f"The road is closed {evil}"},
        {"grid": "Third grid", "state": "overdue", "photos": 0, "by": "", "at": None,
         "reason": ""},
        {"grid": "Fourth grid", "state": "pending", "photos": 0, "by": "", "at": None,
         "reason": ""},
    ]
    return {
        "task": task,
        "task_grid": f"First grid {evil}",
        "task_sender": f"Baishuying {evil}",
        "task_kind": "remind",
        "task_grids": [f"First grid {evil}", "Second grid"],
        "task_photos": 2,
        "task_rows": rows,
        "task_more": 3,
        "task_done": 1,
        "task_total": 4,
        "task_reminded_at": now,
        "task_sent": [{**task, "done": 1, "total": 4}],
        "task_mine": [{**task, "grid": f"First grid {evil}", "state": s}
                      for s in ("done", "cannot", "overdue", "pending")],
    }
