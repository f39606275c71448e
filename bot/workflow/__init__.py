"""The steps of the national standard built on a case: requests to the level above (延期,
挂账), on-site checks (核查) and departments called in (吹哨报到).

They build on bot.cases and never the reverse: what a case's life needs of them is
registered here, once, in bot.cases.hooks.
"""

from bot.cases import hooks
from bot.cases.deadlines import StepName
from bot.context import Tx
from bot.workflow import case_requests, checks, extensions, suspension, whistles


def _offers() -> hooks.Offers:
    # Read at each card, so a feature switched off (a test, a later setting) is off at once.
    return hooks.Offers(extension=extensions.ENABLED, suspension=suspension.ENABLED,
                        whistle=whistles.ENABLED, check=checks.ENABLED)


hooks.install(hooks.Workflow(
    steps={StepName.REQUEST_TIMEOUT: case_requests.expire_due,
           StepName.SUSPEND_REVIEW: suspension.review_due,
           StepName.CHECK_TIMEOUT: checks.timeout,
           StepName.WHISTLE_ESCALATE: whistles.escalate_due,
           StepName.WHISTLE_REMIND: whistles.remind_due},
    moved=[case_requests.withdraw_moved],
    left_handling=[case_requests.withdraw_left, whistles.withdraw_open],
    checkers=checks.needs_check,
    start_check=checks.start,
    may_check=checks.may_check,
    offers=_offers,
))


async def follow_registry(tx: Tx) -> int:
    """The sweep's periodic step (bot/app.py): what the workflow derived from the registry
    follows a registry load made since, by this worker or by `gridbot registry load`: a case
    waiting for the check of someone who left goes to whoever may check now, or on to the
    rating; the whistles not yet acknowledged are due by the policy's `whistle_ack_within` as
    it is now. One comparison per sweep when nothing changed."""
    return await checks.follow_registry(tx) + await whistles.follow_policy(tx)
