"""The kinds of event a case's audit trail records (`case_events.action`).

Every transition of the life cycle is one (the keys of `TRANSITIONS` in
bot/cases/lifecycle.py), and so is what is recorded beside them without changing the status:
the report itself, an overdue alert, a merge or split seen from the other case, a follower,
and the workflow's requests and whistles (bot/workflow/). The figures, the 台账 and the
digest count these; each has a label `event_<value>` in templates/*/labels*.j2. The values
are stored: never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    # The report (by the resident, or by staff for them: the note names the resident).
    REPORT = "report"
    REPORT_BEHALF = "report_behalf"
    # Transitions (TRANSITIONS).
    CONFIRM = "confirm"  # 核实: the building head confirms
    REJECT = "reject"  # the building head says it is not real
    VERIFY_TIMEOUT = "verify_timeout"  # nobody verified in time: on to the grid
    CATEGORY = "category"  # 改类别 (keeps the status)
    ACCEPT = "accept"  # 受理
    ASSIGN = "assign"  # handed to the building head as a task
    ACK = "ack"  # the building head received the task (keeps the status)
    DONE = "done"  # the building head finished the task
    ESCALATE = "escalate"  # 上报 by a handler (`case_events.level`: where it went)
    AUTO_ESCALATE = "auto_escalate"  # 上报 by the timers
    SEND_BACK = "send_back"  # a supervisor sends it down one level
    RESOLVE = "resolve"  # 办结, straight to the rating
    RESOLVE_CHECK = "resolve_check"  # 办结, to the on-site check first
    CHECK_PASS = "check_pass"  # 核查通过
    CHECK_TIMEOUT = "check_timeout"  # nobody checked in time: on to the rating
    CHECK_SKIP = "check_skip"  # nobody may check (no head left, or only the resolver)
    SUSPEND = "suspend"  # 挂账 approved
    RESUME = "resume"  # back to handling before the review date
    SUSPEND_REVIEW = "suspend_review"  # back to handling at the review date
    RATE = "rate"  # 满意 / 基本满意: closed
    REWORK = "rework"  # 返工: 不满意 or a failed check (from_status says which)
    RATING_TIMEOUT = "rating_timeout"  # no rating in time: closed
    MERGE = "merge"  # 合并: this case closed into another
    # Recorded without a transition.
    OVERDUE = "overdue"  # an overdue alert (the note counts them)
    MERGE_IN = "merge_in"  # another case was merged into this one
    SPLIT = "split"  # a second problem was split out of this one
    SPLIT_FROM = "split_from"  # the first event of a case split out of another
    FOLLOW = "follow"  # a resident follows the case (是同一问题)
    # Requests to the level above (bot/workflow/case_requests.py): 延期 and 挂账.
    EXTENSION_REQUEST = "extension_request"
    EXTENSION_APPROVE = "extension_approve"
    EXTENSION_DECLINE = "extension_decline"
    EXTENSION_WITHDRAW = "extension_withdraw"
    EXTENSION_EXPIRE = "extension_expire"
    SUSPENSION_REQUEST = "suspension_request"  # its approval is the SUSPEND transition
    SUSPENSION_DECLINE = "suspension_decline"
    SUSPENSION_WITHDRAW = "suspension_withdraw"
    SUSPENSION_EXPIRE = "suspension_expire"
    # 吹哨报到 (bot/workflow/whistles.py).
    WHISTLE = "whistle"
    WHISTLE_ACK = "whistle_ack"
    WHISTLE_DONE = "whistle_done"
    WHISTLE_ESCALATE = "whistle_escalate"
    WHISTLE_WITHDRAW = "whistle_withdraw"
