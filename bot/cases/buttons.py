"""Callback data of the case buttons: typed, versioned, at most 64 bytes.

`c1:<action>:<case id>:<case rev>[:<argument>]`. The rev is the case's transition counter when
the button was made, so a button left behind by a later transition is recognised as stale.
The domain builds buttons as plain dicts (text + callback_data or url), so it needs no aiogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PREFIX = "c1"
MAX_BYTES = 64


class Action(StrEnum):
    CONFIRM = "vc"  # building head: report is real
    REJECT = "vr"  # building head: report is not real (asks for a reason)
    CATEGORY = "ct"  # show categories to choose from
    SET_CATEGORY = "cs"  # argument: category code
    ACCEPT = "ac"
    ASSIGN = "as"  # hand the task to the building head
    ACK = "ak"  # building head: task received
    DONE = "dn"  # building head: task done, back to the leader
    ESCALATE = "es"  # asks for a reason
    SEND_BACK = "sb"  # supervisor: back down one level (asks for a reason)
    RESOLVE = "rs"  # asks for the result
    RATE = "rt"  # argument: good / fair / bad
    EXTEND = "xr"  # handler: ask the level above for more time (延期)
    SUSPEND = "su"  # handler: ask the level above to suspend (挂账)
    RESUME = "sr"  # back to handling before the review date
    WHISTLE = "wh"  # call a department in (吹哨)
    CHECK_PASS = "kp"  # building head: the on-site check passed
    CHECK_FAIL = "kf"  # building head: it did not (asks for a reason): 返工
    LOCATION = "lo"  # staff: send me the case's place as a venue message
    MERGE = "mg"  # handler: merge this case into another (合并到 #N)
    SPLIT = "sp"  # handler: split a second problem out of this report (拆分)
    MORE = "mr"  # 更多: redraw the card with the actions that are not its primary ones
    BACK = "bk"  # ← 返回: redraw the card with its primary actions
    OPEN = "op"  # a reminder list's case: send me its card as it is now (any rev)


RATINGS = ("good", "fair", "bad")


@dataclass(frozen=True)
class CaseButton:
    action: Action
    case_id: int
    rev: int
    arg: str = ""

    def pack(self) -> str:
        data = f"{PREFIX}:{self.action.value}:{self.case_id}:{self.rev}"
        if self.arg:
            data += f":{self.arg}"
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
        return data

    @classmethod
    def unpack(cls, data: str) -> CaseButton | None:
        """The button, or None for data that is not a well-formed case button."""
        parts = data.split(":")
        if len(parts) not in (4, 5) or parts[0] != PREFIX:
            return None
        try:
            action = Action(parts[1])
            case_id, rev = int(parts[2]), int(parts[3])
        except ValueError:
            return None
        if case_id <= 0 or rev <= 0:
            return None
        return cls(action, case_id, rev, parts[4] if len(parts) == 5 else "")


def button(text: str, action: Action, case_id: int, rev: int, arg: str = "") -> dict[str, Any]:
    return {"text": text, "callback_data": CaseButton(action, case_id, rev, arg).pack()}


def url_button(text: str, url: str) -> dict[str, Any]:
    return {"text": text, "url": url}


BIND_PREFIX = "b1"


class BindAnswer(StrEnum):
    CONFIRM = "y"  # move the chat (or the place) to the new binding
    CANCEL = "n"


@dataclass(frozen=True)
class BindButton:
    """`b1:<bind request id>:<answer>`: the answer to a `/bind` that asked for confirmation.

    The request is kept in the database with what it would change; the button names it only.
    """

    request_id: int
    answer: BindAnswer

    def pack(self) -> str:
        return f"{BIND_PREFIX}:{self.request_id}:{self.answer.value}"

    @classmethod
    def unpack(cls, data: str) -> BindButton | None:
        parts = data.split(":")
        if len(parts) != 3 or parts[0] != BIND_PREFIX or not parts[1].isascii():
            return None
        try:
            request_id, answer = int(parts[1]), BindAnswer(parts[2])
        except ValueError:
            return None
        if request_id <= 0:
            return None
        return cls(request_id, answer)


def bind_button(text: str, request_id: int, answer: BindAnswer) -> dict[str, Any]:
    return {"text": text, "callback_data": BindButton(request_id, answer).pack()}


REQUEST_PREFIX = "q1"
WHISTLE_PREFIX = "w1"


class RequestAnswer(StrEnum):
    APPROVE = "y"  # 同意
    DECLINE = "n"  # 不同意 (asks for a reason)


class WhistleAnswer(StrEnum):
    ACK = "a"  # 报到
    DONE = "d"  # 已处理 (asks for a note)


def _sub_object(data: str, prefix: str) -> tuple[int, str] | None:
    """`<prefix>:<row id>:<answer>` split, or None: the shape every sub-object button has."""
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != prefix or not parts[1].isascii():
        return None
    try:
        row_id = int(parts[1])
    except ValueError:
        return None
    if not 0 < row_id <= 2**31 - 1:
        return None
    return row_id, parts[2]


@dataclass(frozen=True)
class RequestButton:
    """`q1:<case request id>:<y|n>`: a supervisor's answer to an extension or suspension
    request. Stale when the request is no longer pending, whatever the case's rev: the handler
    accepting or assigning meanwhile does not spoil the approval."""

    request_id: int
    answer: RequestAnswer

    def pack(self) -> str:
        return f"{REQUEST_PREFIX}:{self.request_id}:{self.answer.value}"

    @classmethod
    def unpack(cls, data: str) -> RequestButton | None:
        split = _sub_object(data, REQUEST_PREFIX)
        if split is None:
            return None
        try:
            return cls(split[0], RequestAnswer(split[1]))
        except ValueError:
            return None


@dataclass(frozen=True)
class WhistleButton:
    """`w1:<whistle id>:<a|d>`: a department's 报到 or 已处理; the whistle's status decides
    whether it is stale."""

    whistle_id: int
    answer: WhistleAnswer

    def pack(self) -> str:
        return f"{WHISTLE_PREFIX}:{self.whistle_id}:{self.answer.value}"

    @classmethod
    def unpack(cls, data: str) -> WhistleButton | None:
        split = _sub_object(data, WHISTLE_PREFIX)
        if split is None:
            return None
        try:
            return cls(split[0], WhistleAnswer(split[1]))
        except ValueError:
            return None


def request_button(text: str, request_id: int, answer: RequestAnswer) -> dict[str, Any]:
    return {"text": text, "callback_data": RequestButton(request_id, answer).pack()}


def whistle_button(text: str, whistle_id: int, answer: WhistleAnswer) -> dict[str, Any]:
    return {"text": text, "callback_data": WhistleButton(whistle_id, answer).pack()}


DUPLICATE_PREFIX = "d1"


class DuplicateAnswer(StrEnum):
    SAME = "s"  # 是同一问题: follow the case shown
    NEW = "n"  # 不是，另报: file the report as a new case


@dataclass(frozen=True)
class DuplicateButton:
    """`d1:<duplicate offer id>:<s|n>`: a reporter's answer to 是同一问题吗; the offer's status
    decides whether it is stale, and only the offer's reporter may answer."""

    offer_id: int
    answer: DuplicateAnswer

    def pack(self) -> str:
        return f"{DUPLICATE_PREFIX}:{self.offer_id}:{self.answer.value}"

    @classmethod
    def unpack(cls, data: str) -> DuplicateButton | None:
        split = _sub_object(data, DUPLICATE_PREFIX)
        if split is None:
            return None
        try:
            return cls(split[0], DuplicateAnswer(split[1]))
        except ValueError:
            return None


def duplicate_button(text: str, offer_id: int, answer: DuplicateAnswer) -> dict[str, Any]:
    return {"text": text, "callback_data": DuplicateButton(offer_id, answer).pack()}


NOTICE_PREFIX = "n1"  # 已阅 on a notice's copy in a group
NOTICE_SUMMARY_PREFIX = "n2"  # 刷新 / 提醒未确认 under the sender's summary


class NoticeAnswer(StrEnum):
    READ = "r"  # 已阅 (a head of the place)
    REFRESH = "f"  # 刷新 the summary
    REMIND = "m"  # 提醒未确认


@dataclass(frozen=True)
class NoticeButton:
    """`n1:<notice copy id>:r` (已阅) or `n2:<notice id>:<f|m>` (the sender's summary)."""

    row_id: int
    answer: NoticeAnswer

    @property
    def prefix(self) -> str:
        return NOTICE_PREFIX if self.answer == NoticeAnswer.READ else NOTICE_SUMMARY_PREFIX

    def pack(self) -> str:
        return f"{self.prefix}:{self.row_id}:{self.answer.value}"

    @classmethod
    def unpack(cls, data: str) -> NoticeButton | None:
        for prefix in (NOTICE_PREFIX, NOTICE_SUMMARY_PREFIX):
            split = _sub_object(data, prefix)
            if split is None:
                continue
            try:
                button = cls(split[0], NoticeAnswer(split[1]))
            except ValueError:
                return None
            return button if button.prefix == prefix else None
        return None


def notice_button(text: str, row_id: int, answer: NoticeAnswer) -> dict[str, Any]:
    return {"text": text, "callback_data": NoticeButton(row_id, answer).pack()}
