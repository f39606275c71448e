"""SQLAlchemy models: the organisation tree, people, cases, their audit trail and the outbox.

Telegram ids exceed 32 bits, so every id column that holds one is BIGINT. All datetimes are
timezone-aware UTC; SQLite drops the offset, so `UTCDateTime` puts it back on the way out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON,
        dict[str, Any] | None: JSON,
    }


class Node(Base):
    """One place in the tree: street, community, grid, building or unit.

    `code` is unique across the tree; a unit's code is its building's code, a slash and the
    unit's own code (`BSY-01-03/1`), which is also what `/bind` takes.
    """

    __tablename__ = "nodes"
    __table_args__ = (Index("ix_nodes_door_key", "door_key", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # A grid's boundary, [[lon, lat], …] in WGS-84 (the registry's GCJ-02 converted at load),
    # and a building's point: where a shared location is routed.
    boundary: Mapped[list[Any] | None] = mapped_column(JSON)
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    # A community's hotline (registry `hotline:`), printed on its buildings' posters.
    hotline: Mapped[str | None] = mapped_column(String(64))
    # A building's poster link (扫码报事): random, so a link cannot be guessed from another;
    # a new key makes the printed posters of the old one stale.
    door_key: Mapped[str | None] = mapped_column(String(32))

    parent: Mapped[Node | None] = relationship(remote_side="Node.id", lazy="raise")


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(200))
    # None: never tried; True: a private message went through or they wrote to us;
    # False: Telegram refused (never started, or blocked the bot).
    dm_ok: Mapped[bool | None] = mapped_column(Boolean, default=None)
    building_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Role(Base):
    """A person's role at a node, as the registry last said."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("person_id", "role", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)


class Category(Base):
    __tablename__ = "categories"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    sla_seconds: Mapped[int] = mapped_column(Integer)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # 核查: a building head checks the result on site before the reporter rates it. Not
    # called `check`, an SQL keyword.
    check_required: Mapped[bool] = mapped_column(Boolean, default=False,
                                                 server_default=false())
    # What `sla_seconds` counts: '' clock time; 'wh' working time (8wh = 28800 working
    # seconds); 'wd' working days (2wd = 2 × 86400), each the length of a working day.
    sla_unit: Mapped[str] = mapped_column(String(2), default="", server_default="")
    # Words that suggest the category for a report's text (垃圾, 清运, …); None: none.
    keywords: Mapped[list[Any] | None] = mapped_column(JSON)


class OrgSettings(Base):
    """The registry's timezone, locale and timing policy; a single row (id 1).

    Durations are seconds; None turns a timer off.
    """

    __tablename__ = "org_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(8))
    verify_within: Mapped[int | None] = mapped_column(Integer)
    remind_at: Mapped[float | None] = mapped_column(Float)
    overdue_repeat: Mapped[int | None] = mapped_column(Integer)
    escalate_after: Mapped[int | None] = mapped_column(Integer)
    rating_within: Mapped[int | None] = mapped_column(Integer)
    quiet_start: Mapped[str | None] = mapped_column(String(5))
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    # Moved on by every change to places, roles or categories (bot.org.directory): a worker keeps
    # those in memory while this number stays what it was when it read them.
    registry_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # 延期: approved extensions a case may have over its life; 0 turns extensions off.
    max_extensions: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # A pending extension or suspension request nobody answers within this is declined.
    extension_answer_within: Mapped[int | None] = mapped_column(Integer)
    # 核查 for every category, not only those that ask for it.
    check_all: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    check_within: Mapped[int | None] = mapped_column(Integer)
    # 吹哨报到: a department that has not acknowledged within this goes to the street.
    whistle_ack_within: Mapped[int | None] = mapped_column(Integer)
    # The working calendar (working hours, weekend, the district's own holidays and working
    # days, the years it completes); None: the defaults (bot.org.workcal).
    calendar: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The local time of the daily digest; None turns it off.
    digest_at: Mapped[str | None] = mapped_column(String(5), default="08:30",
                                                     server_default="08:30")
    # The monthly score's weights (on_time, closed, satisfied, rework); None: the defaults.
    score_weights: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Duplicates: an open case of the same category in the same building (or within the
    # radius, in metres, of a shared location) reported within the window is offered to a
    # new report's reporter; a null window turns the offer off.
    duplicate_window: Mapped[int | None] = mapped_column(Integer, default=259200,
                                                         server_default="259200")
    duplicate_radius: Mapped[float] = mapped_column(Float, default=50.0, server_default="50")
    # 巡查: a patrol covers a building it came within this many metres of.
    patrol_radius: Mapped[float] = mapped_column(Float, default=50.0, server_default="50")
    # 走访: the district's own kinds of household beside the four standard ones
    # ([{code, name: {zh_CN, en}, interval}]); None: the standard ones only.
    care_kinds: Mapped[list[Any] | None] = mapped_column(JSON)


def _clock_start_default(context: Any) -> Any:
    """A case's clock starts at its report unless the insert says otherwise."""
    return context.get_current_parameters()["reported_at"]


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_due", "next_check_at"),
        # The flood check counts one submitter's recent reports on every report.
        Index("ix_cases_submitter", "submitted_by_id", "reported_at"),
        # Staff lists: open cases of some buildings, soonest deadline first.
        Index("ix_cases_building_status", "building_id", "status", "deadline_at"),
        # The figures and the ledger of a period: cases reported, resolved or due in it.
        Index("ix_cases_reported", "reported_at"),
        Index("ix_cases_resolved", "resolved_at"),
        Index("ix_cases_deadline", "deadline_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Bumped by every transition; buttons carry it so a stale button is recognised.
    rev: Mapped[int] = mapped_column(Integer, default=1)
    level: Mapped[str] = mapped_column(String(16), default="grid")
    category: Mapped[str] = mapped_column(ForeignKey("categories.code"))
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    verified: Mapped[str] = mapped_column(String(16), default="pending")
    building_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    reporter_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    source_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    source_message_id: Mapped[int | None] = mapped_column(BigInteger)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The case's clock: its report, and again each reopening. Every timer counts from it.
    clock_started_at: Mapped[datetime] = mapped_column(UTCDateTime,
                                                       default=_clock_start_default)
    # Derived: clock start + the current category's SLA, kept in sync by cases.schedule().
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    assignee_ack_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    result: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    rating: Mapped[str | None] = mapped_column(String(16))
    rating_comment: Mapped[str | None] = mapped_column(Text)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_reason: Mapped[str | None] = mapped_column(String(32))
    reject_reason: Mapped[str | None] = mapped_column(Text)
    # Derived: when the sweep must look at the case next (its earliest timer step not taken).
    next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Counts reworks (返工: 不满意 or a failed check), so notices of a later round get dedupe
    # keys of their own; the rework count is `round - 1`, so nothing else may bump it.
    round: Mapped[int] = mapped_column(Integer, default=1)
    # Approved extensions of the current round's deadline (reset by rework and resume), and
    # of the case's whole life (capped by the policy's max_extensions).
    extended_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    extension_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # How far this round's deadline stands off its derivation (clock start + the category's
    # SLA + extensions), in seconds: where a category change or a registry edit had to leave
    # it (a deadline that has passed stays; a category change does not make it later; none
    # is moved into the past). Reset when the clock restarts (bot/cases/deadlines.py).
    deadline_offset_seconds: Mapped[int] = mapped_column(Integer, default=0,
                                                         server_default="0")
    # When the pending extension or suspension request was made; None: none is pending.
    # The request's timeout counts from it (the row is in case_requests).
    request_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Suspended (挂账): the day the case comes back to its handler.
    review_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 核查 of this round: None (no check), pending, passed, unchecked (timed out) or skipped
    # (wanted, but the building has no head); checked_at is when it passed or timed out, and
    # the rating window counts from it.
    checked: Mapped[str | None] = mapped_column(String(16))
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The earliest acknowledgement due of the case's whistles called and not escalated: the
    # timer reads the case row only.
    whistle_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The earliest 报到 of the case's whistles acknowledged, not yet done and not yet reminded:
    # the reminder to finish (已处理) is timed from it (bot/cases/deadlines.py).
    whistle_acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A voice report: the voice note (or video note) that stands for the description, sent on
    # to staff by its file_id; `voice_kind` is 'voice' or 'video_note', the length seconds.
    voice_file_id: Mapped[str | None] = mapped_column(String(255))
    voice_kind: Mapped[str | None] = mapped_column(String(16))
    voice_seconds: Mapped[int | None] = mapped_column(Integer)
    # Residents who said 是同一问题 (or whose case was merged in) and follow this case: its
    # card shows `1 + followers` residents affected without counting rows (case_followers).
    followers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # 合并: the case this one was merged into (it closed as 已合并); 拆分: the case this one
    # was split from. Plain numbers, not foreign keys: SQLite adds and drops them in place,
    # and a case row is never deleted.
    merged_into_id: Mapped[int | None] = mapped_column(Integer)
    # Found by staff unasked: '' a resident's (or a head's) report; 'patrol' 巡查 (`patrol_id`
    # names the patrol); 'visit' a need found on a care visit (走访).
    source: Mapped[str] = mapped_column(String(16), default="", server_default="")
    patrol_id: Mapped[int | None] = mapped_column(Integer)
    split_from_id: Mapped[int | None] = mapped_column(Integer)


class CaseFollower(Base):
    """A resident who follows a case that is not their own report: they said 是同一问题 to a
    duplicate offer, or their case was merged into it. They get the reporter's notices (with
    a reply in `source_chat_id` when a private message cannot reach them) and may rate."""

    __tablename__ = "case_followers"
    __table_args__ = (UniqueConstraint("case_id", "person_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    person_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("people.id"), index=True)
    source_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    source_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # 'duplicate' (是同一问题) or 'merge' (合并到 #N).
    via: Mapped[str] = mapped_column(String(16))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DuplicateOffer(Base):
    """A report held back while its reporter is asked whether it is `case_id`'s problem.

    `report` holds what the report would file (the domain's ReportInput as JSON); an answer,
    or the sweep at `due_at`, settles it: joined (they follow the case), declined or
    timed_out (the report is filed as a new case). A joined report whose case is then
    rejected is refiling until the sweep files it as its own case (refiled). Nothing is lost
    while it waits.
    """

    __tablename__ = "duplicate_offers"
    __table_args__ = (Index("ix_duplicate_offers_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    person_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("people.id"), index=True)
    # Where the question was asked (the group, or the private chat) and the report's message.
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    # bot.cases.duplicates.OfferStatus: pending, joined, declined, timed_out, refiling, refiled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The case the report became when declined or timed out.
    filed_case_id: Mapped[int | None] = mapped_column(Integer)


class Notice(Base):
    """A notice (通知 / 宣传) a grid leader or supervisor sends to the building and unit chats
    of a scope; `draft` until sent. Its copies (notice_copies) hold the 已阅 receipts."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None once the sender has been erased (bot/ops/privacy.py): the notice stays on record.
    sender_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("people.id"),
                                                  index=True)
    # The node codes chosen (one grid, community or street, or some buildings) and how the
    # sender chose them ('grid', 'community', 'street', 'buildings').
    scope_kind: Mapped[str] = mapped_column(String(16), default="")
    scope: Mapped[list[Any]] = mapped_column(JSON, default=list)
    text: Mapped[str] = mapped_column(Text, default="")
    photos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # draft, sent, cancelled
    status: Mapped[str] = mapped_column(String(16), default="draft")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NoticeCopy(Base):
    """A notice's copy in one building or unit chat, and its 已阅 by a head of that place."""

    __tablename__ = "notice_copies"
    __table_args__ = (UniqueConstraint("notice_id", "node_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    chat_id: Mapped[int] = mapped_column(BigInteger)
    confirmed_by_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("people.id"))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseTimerStep(Base):
    """A timer step taken for a case: a reminder sent, a timeout or escalation made.

    `basis` is what the step was counted from (the clock start, or the deadline it belonged
    to), so a new deadline (a category change) has steps of its own while a step already
    taken for the same deadline is never taken twice; nothing needs resetting.
    """

    __tablename__ = "case_timer_steps"
    __table_args__ = (UniqueConstraint("case_id", "round", "step", "n", "basis"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(24))
    n: Mapped[int] = mapped_column(Integer, default=1)
    basis: Mapped[datetime] = mapped_column(UTCDateTime)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class CasePhoto(Base):
    __tablename__ = "case_photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    file_id: Mapped[str] = mapped_column(String(255))
    # report, result (the handler's after-photos), check (a failed check's), whistle (a
    # department's after-photos).
    kind: Mapped[str] = mapped_column(String(16), default="report")


class CaseEvent(Base):
    """The audit trail: who did what to a case, when, from which status to which."""

    __tablename__ = "case_events"
    # The figures count a period's reworks, escalations and ratings by their events.
    __table_args__ = (Index("ix_case_events_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    # For a move between levels (escalate, auto_escalate, send_back): the level the case went
    # to. None for other events, and for moves recorded before revision 0005.
    level: Mapped[str | None] = mapped_column(String(16))


class Department(Base):
    """A department a case can be whistled to (吹哨报到): 派出所, 市场监管所 and so on.

    Never deleted: whistles refer to it; one the registry no longer lists is inactive.
    """

    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Its work chat, where a card goes for a member the bot cannot write to.
    chat_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class DepartmentMember(Base):
    """A department's contact person, as the registry last said (replaced at each load)."""

    __tablename__ = "department_members"
    __table_args__ = (UniqueConstraint("department_id", "person_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)


class CaseRequest(Base):
    """A handler's request to the level above: an extension (延期) or a suspension (挂账).

    Statuses: pending, approved, declined, expired (nobody answered in time), withdrawn (the
    case left the level or the handling). Person columns carry no foreign key, like
    CaseEvent.actor_id: erasure clears them.
    """

    __tablename__ = "case_requests"
    __table_args__ = (Index("ix_case_requests_case", "case_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # The case's level when asked, and the level that answers.
    level: Mapped[str] = mapped_column(String(16))
    approver_level: Mapped[str] = mapped_column(String(16))
    requested_by_id: Mapped[int | None] = mapped_column(BigInteger)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(Text)
    seconds: Mapped[int | None] = mapped_column(Integer)  # extension: how long
    review_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # suspension
    answered_by_id: Mapped[int | None] = mapped_column(BigInteger)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answer_note: Mapped[str | None] = mapped_column(Text)


class Whistle(Base):
    """A department called in on a case (吹哨报到). Statuses: called, acked, done, withdrawn.

    `ack_due_at` is fixed when called; `escalated_at` is when the street was told it was not
    acknowledged in time. Person columns carry no foreign key, as in CaseRequest.
    """

    __tablename__ = "whistles"
    __table_args__ = (Index("ix_whistles_case", "case_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    called_by_id: Mapped[int | None] = mapped_column(BigInteger)
    called_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ask: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="called")
    ack_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_by_id: Mapped[int | None] = mapped_column(BigInteger)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by_id: Mapped[int | None] = mapped_column(BigInteger)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(Text)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PendingPhoto(Base):
    """A photo waiting to join a case: an album part, or a photo of a private draft report.

    Rows are only ever inserted and then consumed, so album parts handled concurrently
    cannot overwrite one another, and a restart in the middle of an album loses nothing.
    """

    __tablename__ = "pending_photos"
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    message_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    user_name: Mapped[str] = mapped_column(String(200), default="")
    media_group_id: Mapped[str | None] = mapped_column(String(64), index=True)
    file_id: Mapped[str] = mapped_column(String(255))
    caption: Mapped[str | None] = mapped_column(Text)
    # The part whose caption asked for a report; its caption holds the description.
    intent: Mapped[bool] = mapped_column(Boolean, default=False)
    on_behalf_of_id: Mapped[int | None] = mapped_column(BigInteger)
    on_behalf_of_name: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Outbox(Base):
    """A message somebody is owed, written in the transaction that made it owed.

    `chat_id` is where it goes; for a private message `person_id` names the person, and the
    fallback columns say where it goes instead when Telegram will not let us write to them.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "not_before"),
        # The sender walks one chat's rows in order; retention deletes by age within a status.
        Index("ix_outbox_chat", "chat_id", "status", "id"),
        Index("ix_outbox_age", "status", "created_at"),
        # A worker taking a chat over paces it by what was sent there in the last minute.
        Index("ix_outbox_chat_sent", "chat_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    person_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    case_id: Mapped[int | None] = mapped_column(Integer, index=True)
    text: Mapped[str] = mapped_column(Text)
    photos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    buttons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # A reply keyboard (or its removal) of an answer a handler could not send at once; inline
    # buttons live in `buttons`.
    markup: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reply_to_message_id: Mapped[int | None] = mapped_column(BigInteger)
    fallback_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    fallback_reply_to: Mapped[int | None] = mapped_column(BigInteger)
    # "reporter" for notices to a case's reporter, "reporter_fallback" for their group copy:
    # if neither reaches them, the grid leader is told.
    kind: Mapped[str] = mapped_column(String(24), default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # When it may first go out (quiet hours); a later row for the same chat may go first.
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    # When to try again after a failure; until then the chat's later rows wait behind it.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # How many of the row's Bot API calls (photos, text pieces) have gone through.
    parts_done: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # A file we made (a chart, an export) sent as an upload with `text` as its caption:
    # 'photo' or 'document'. Dropped once sent.
    upload: Mapped[bytes | None] = mapped_column(LargeBinary)
    upload_name: Mapped[str | None] = mapped_column(String(128))
    upload_kind: Mapped[str | None] = mapped_column(String(16))


class ReportPrompt(Base):
    """Bot messages in groups that invite a report: a reply to one of them is a report."""

    __tablename__ = "report_prompts"
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    message_id: Mapped[int] = mapped_column(BigInteger)


class InboxUpdate(Base):
    """Every update received, stored before Telegram is told it arrived.

    `done` is set in the transaction of the handler that processed the update, so an update
    is handled exactly once even if the bot is killed at any moment, and a redelivered update
    is dropped. Telegram restarts `update_id` from a random number after a quiet week, so it
    is not a key: a redelivery is the same `update_id` received again within a few days.
    Statuses: `new` (to handle), `done`, `skipped` (nothing acts on it: no payload kept),
    `set_aside` (the installed client cannot read it), `failed` (its handler kept failing),
    `erased` (its person's data was erased before it was handled).
    """

    __tablename__ = "inbox"
    __table_args__ = (
        Index("ix_inbox_status", "status", "id"),
        Index("ix_inbox_update_id", "update_id", "received_at"),
        Index("ix_inbox_prune", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # None only for an item of a getUpdates answer that carries no usable update_id.
    update_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="new")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Why it was set aside or failed: an exception type and field path, never a value.
    reason: Mapped[str | None] = mapped_column(String(200))


class FsmRecord(Base):
    """aiogram FSM state and data, kept in the database so a restart forgets no conversation."""

    __tablename__ = "fsm"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class BindRequest(Base):
    """A `/bind` that would take a chat or a place from its binding, waiting for the person
    who asked to confirm it with a button. The row lives only until it is answered or stale:
    what the chat and the place were bound to when asked is kept, so a button pressed after
    either changed does nothing.
    """

    __tablename__ = "bind_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    # The place bound to the chat, and the chat bound to the place, when it was asked.
    old_node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    old_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PeriodicRun(Base):
    """A periodic job done for a period (the daily digest of 2026-11-23, the monthly score
    of 2026-10): claimed by its insert in the transaction that writes the job's messages, so
    several workers and restarts do it once."""

    __tablename__ = "periodic_runs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    done_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerSeen(Base):
    """A worker process sharing the database, and when its sweep last ran. Telegram's overall
    rate limit is per bot, so each worker sends at its share of it."""

    __tablename__ = "workers"

    # host:pid:random, new at every start.
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Reminder(Base):
    """A reminder owed to one person about one case (due soon, overdue, a verification
    reminder, an escalation reaching them), written by the timer step that made it owed.

    Reminders are not sent one by one: the gathering pass lists a person's due reminders in
    one message (`outbox_id`), checks each against its case first (a case that moved on is
    `dropped` with the `reason`), and folds repeats already listed that day.
    Statuses: `waiting`, `listed`, `folded` (a repeat shown in a later list or the digest),
    `dropped`.
    """

    __tablename__ = "reminders"
    __table_args__ = (
        Index("ix_reminders_due", "status", "due_at"),
        Index("ix_reminders_person", "person_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    # What it is about: a case, or (issue 22) a household's visit due or a campaign's grid.
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"),
                                                index=True)
    household_id: Mapped[int | None] = mapped_column(
        ForeignKey("care_households.id", ondelete="CASCADE"), index=True)
    campaign_grid_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaign_grids.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    n: Mapped[int] = mapped_column(Integer, default=1)
    round: Mapped[int] = mapped_column(Integer)
    # What it speaks of: the deadline and the level the case had when the step fell due.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    level: Mapped[str | None] = mapped_column(String(16))
    # Where the list goes if the person cannot be written to privately (their grid's group).
    fallback_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    outbox_id: Mapped[int | None] = mapped_column(Integer, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CommandMenu(Base):
    """The command menu last set for one private chat (`setMyCommands` with a chat scope),
    so a role change sets it again and a restart does not."""

    __tablename__ = "command_menus"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    menu: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Patrol(Base):
    """A grid member's or leader's walk of their grid (巡查), from 开始巡查 to 结束巡查."""

    __tablename__ = "patrols"
    __table_args__ = (Index("ix_patrols_grid_started", "grid_id", "started_at"),
                      Index("ix_patrols_person_started", "person_id", "started_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger)
    grid_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # None while under way.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A patrol nobody ended is ended by the sweep after a while, marked so.
    ended_by_timeout: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    note: Mapped[str | None] = mapped_column(Text)


class PatrolPoint(Base):
    """Where a patrol was: a live location's updates, or a point shared on the way."""

    __tablename__ = "patrol_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patrol_id: Mapped[int] = mapped_column(ForeignKey("patrols.id", ondelete="CASCADE"),
                                           index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    live: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class PatrolItem(Base):
    """A photo or a note sent during a patrol; `case_id` when 发现问题 filed a case of it."""

    __tablename__ = "patrol_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patrol_id: Mapped[int] = mapped_column(ForeignKey("patrols.id", ondelete="CASCADE"),
                                           index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str | None] = mapped_column(Text)
    file_id: Mapped[str | None] = mapped_column(String(255))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    case_id: Mapped[int | None] = mapped_column(Integer)


class PatrolBuilding(Base):
    """A building of the grid a patrol came within `patrol_radius` of, and when first."""

    __tablename__ = "patrol_buildings"

    patrol_id: Mapped[int] = mapped_column(ForeignKey("patrols.id", ondelete="CASCADE"),
                                           primary_key=True)
    building_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class CareHousehold(Base):
    """A household of a building's care roster (走访): personal data of vulnerable people, seen
    only by its grid's staff and their supervisors, never in a group."""

    __tablename__ = "care_households"
    __table_args__ = (UniqueConstraint("building_id", "unit", "door"),
                      Index("ix_care_households_due", "active", "next_due_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    building_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    unit: Mapped[str] = mapped_column(String(32), default="", server_default="")
    door: Mapped[str] = mapped_column(String(32))
    names: Mapped[str] = mapped_column(String(200))
    # 独居老人 elderly_alone, 残疾人 disabled, 困难家庭 hardship, 留守儿童 left_behind, or a
    # district's own code (org_settings.care_kinds).
    kind: Mapped[str] = mapped_column(String(32))
    # As written: 7d, 2w, 1m, 3m.
    interval: Mapped[str] = mapped_column(String(8))
    phone: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_visit_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # One interval after the last visit (after the roster load for a household never visited).
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CareVisit(Base):
    """One visit to a household: who, when, a note, photos, a place, and a need found."""

    __tablename__ = "care_visits"
    __table_args__ = (Index("ix_care_visits_household_at", "household_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[int] = mapped_column(
        ForeignKey("care_households.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(BigInteger, index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When it was due (the household's next_due_at before it): visited on time or not.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text)
    photos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    need_found: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    case_id: Mapped[int | None] = mapped_column(Integer)


class Campaign(Base):
    """A task a community or street supervisor sends to grids (专项任务: 防汛巡查, 消防检查)."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    photos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    sender_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # The node the sender chose (a community, the street) or the sender's own for chosen grids.
    scope_node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    needs_location: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The sender's summary message, refreshed in place.
    summary_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    summary_message_id: Mapped[int | None] = mapped_column(BigInteger)


class CampaignGrid(Base):
    """One grid's part of a campaign: pending, done (with photos), or cannot (with a reason)."""

    __tablename__ = "campaign_grids"
    __table_args__ = (UniqueConstraint("campaign_id", "grid_id"),
                      Index("ix_campaign_grids_status", "status", "campaign_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    grid_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by_id: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    photos: Mapped[list[Any]] = mapped_column(JSON, default=list)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    # Overdue alerts made: to the grid's leader, then to the sender.
    leader_alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sender_alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
