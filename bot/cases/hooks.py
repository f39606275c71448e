"""What the workflow adds to a case's life, in one explicit table.

The standard's steps (延期, 挂账, 核查, 吹哨报到, in bot/workflow/) build on the case and its
life cycle; the life cycle never imports them. Where a case's life must cause one of their
effects (a timer step of theirs falls due, the case moves or leaves its handlers, a result
waits for an on-site check, a card offers their buttons), it calls what `bot.workflow`
registered here when it was imported (bot/workflow/__init__.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.cases.deadlines import Step, StepName
from bot.context import Tx
from bot.org.roles import Actor, Lineage
from storage.models import Case, Person

# A timer step of the workflow's (REQUEST_TIMEOUT …): takes it, returns what it did.
StepHandler = Callable[[Tx, Case, Lineage, Step, str], Awaitable[str]]
CaseHook = Callable[[Tx, Case, Lineage], Awaitable[None]]


@dataclass(frozen=True)
class Offers:
    """Which of the workflow's actions cards offer (each feature can be switched off)."""

    extension: bool = False
    suspension: bool = False
    whistle: bool = False
    check: bool = False


@dataclass
class Workflow:
    steps: dict[StepName, StepHandler] = field(default_factory=dict)
    # The case moves to another level: what was asked of the level above lapses.
    moved: list[CaseHook] = field(default_factory=list)
    # The case leaves its handlers (resolved, suspended, merged): what they asked lapses.
    left_handling: list[CaseHook] = field(default_factory=list)
    # Who must check a result on site before the rating (none: straight to the rating),
    # and the start of that check with the result's photos.
    checkers: Callable[[Tx, Case, Lineage], Awaitable[list[Person]]] | None = None
    start_check: Callable[[Tx, Case, Lineage, list[Person], list[str]],
                          Awaitable[None]] | None = None
    offers: Callable[[], Offers] = Offers
    # Whether a person may pass or fail the check of a result now (never its resolver).
    may_check: Callable[[Tx, Actor, Case, Lineage], Awaitable[bool]] | None = None


_installed = Workflow()


def install(workflow: Workflow) -> None:
    global _installed
    _installed = workflow


def workflow() -> Workflow:
    return _installed


async def take_step(tx: Tx, case: Case, lin: Lineage, step: Step, key: str) -> str:
    handler = _installed.steps.get(step.name)
    if handler is None:
        # Never skip it quietly: the sweep logs this and tries the case again.
        raise LookupError(f"no handler for the timer step {step.name}: import bot.workflow")
    return await handler(tx, case, lin, step, key)
