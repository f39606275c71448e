"""aiogram routers, one per concern, in the order they are tried; the catch-all comes last."""

from __future__ import annotations

from aiogram import Router

from handlers import (
    admin,
    campaigns,
    care,
    case_buttons,
    checks,
    duplicates,
    extensions,
    fallback,
    guard,
    intake,
    locations,
    merge,
    notices,
    patrols,
    reminders,
    report_flow,
    requests,
    stats,
    suspension,
    whistles,
)


def build_router() -> Router:
    root = Router(name="gridbot")
    root.include_routers(
        guard.router.build(),  # not from a person: anonymous admins, channels, other bots
        admin.router.build(),  # commands only: never swallows a conversation's answers
        stats.router.build(),  # /stats and /export: commands only, like admin
        # /notice's steps, 已阅 and the summary's buttons: commands and its own callbacks.
        notices.router.build(),
        # /task's steps, the task cards' buttons and the summary's: its states and callbacks.
        campaigns.router.build(),
        # Before case_buttons: their `c1:` actions and flow callbacks are their own, and
        # case_buttons takes every other `c1:` as a bad button.
        requests.router.build(),  # 同意 / 不同意 on extension and suspension requests
        extensions.router.build(),  # 延期
        suspension.router.build(),  # 挂账
        checks.router.build(),  # 核查
        whistles.router.build(),  # 吹哨报到
        locations.router.build(),  # 📍: a case's place, privately
        reminders.router.build(),  # a case's number on a reminder list: its card
        merge.router.build(),  # 合并 and 拆分
        case_buttons.router.build(),  # case buttons and the prompts they open
        duplicates.router.build(),  # 是同一问题 / 不是，另报
        # 走访 (/visit): its `cv:` buttons, and a visit's note, photos and location in its
        # own state only; before patrols, so a visit recorded on a patrol is the visit's.
        care.router.build(),
        # 巡查: what a person with a patrol under way sends privately (and a live
        # location's edits); everyone else passes through to the guided report.
        patrols.router.build(),
        report_flow.router.build(),  # the private guided report
        intake.router.build(),  # reports in groups
        fallback.router.build(),
    )
    return root
