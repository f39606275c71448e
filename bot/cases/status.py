"""The statuses a case goes through, and their named sets.

At the bottom of bot.cases (it imports nothing of the project), so every module that reads a
status compares with these members, not with strings: the timer model and the cards below the
life cycle as much as the life cycle itself (bot/cases/lifecycle.py, which holds the transition
table and re-exports these names). The values are stored in `cases.status` and in the
`from_status`/`to_status` of `case_events`: never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class CaseStatus(StrEnum):
    VERIFYING = "verifying"  # waiting for the building head
    OPEN = "open"  # with the handlers of its level, not yet accepted
    ACCEPTED = "accepted"  # a handler took it
    ASSIGNED = "assigned"  # handed to the building head as a task
    RESOLVED = "resolved"  # result recorded, waiting for the reporter's rating
    CHECKING = "checking"  # result recorded, waiting for the building head's on-site check
    SUSPENDED = "suspended"  # 挂账: waits for money, planning or another authority
    CLOSED = "closed"
    REJECTED = "rejected"
    MERGED = "merged"  # 合并: closed into another case (`merged_into_id`), counted nowhere


S = CaseStatus
HANDLING = frozenset({S.OPEN, S.ACCEPTED, S.ASSIGNED})
OPEN_STATUSES = frozenset({S.VERIFYING, *HANDLING, S.SUSPENDED, S.CHECKING, S.RESOLVED})
FINAL_STATUSES = frozenset({S.CLOSED, S.REJECTED, S.MERGED})
