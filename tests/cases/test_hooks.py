"""The table through which the life cycle calls the workflow (bot/cases/hooks.py): every
timer step is taken by someone, and a step nobody registered is never skipped quietly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import bot.workflow  # noqa: F401  (registers the workflow's steps)
from bot.cases import hooks
from bot.cases.deadlines import StepName

# The steps the life cycle takes itself (bot/cases/lifecycle.py `_take`).
OWN = {StepName.VERIFY_REMIND, StepName.VERIFY_TIMEOUT, StepName.DUE_SOON, StepName.OVERDUE,
       StepName.ESCALATE, StepName.RATING_TIMEOUT}


def test_every_timer_step_has_a_taker() -> None:
    registered = set(hooks.workflow().steps)
    assert registered.isdisjoint(OWN)
    assert registered | OWN == set(StepName)


def test_the_workflow_fills_every_hook() -> None:
    table = hooks.workflow()
    assert table.moved and table.left_handling
    assert None not in (table.checkers, table.start_check, table.may_check)
    assert table.offers() == hooks.Offers(True, True, True, True)


async def test_a_step_without_a_taker_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_installed", hooks.Workflow())
    step: Any = SimpleNamespace(name=StepName.REQUEST_TIMEOUT)
    with pytest.raises(LookupError, match="request_timeout"):
        await hooks.take_step(None, None, None, step, "key")  # type: ignore[arg-type]
