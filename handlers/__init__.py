"""aiogram routers, one per concern, in the order they are tried; the catch-all comes last."""

from __future__ import annotations

from aiogram import Router

from handlers import admin, case_buttons, fallback, guard, intake, report_flow


def build_router() -> Router:
    root = Router(name="gridbot")
    root.include_routers(
        guard.router.build(),  # not from a person: anonymous admins, channels, other bots
        admin.router.build(),  # commands only: never swallows a conversation's answers
        case_buttons.router.build(),  # case buttons and the prompts they open
        report_flow.router.build(),  # the private guided report
        intake.router.build(),  # reports in groups
        fallback.router.build(),
    )
    return root
