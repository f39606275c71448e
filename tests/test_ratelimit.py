"""The sender's pacer (bot/ratelimit.py): Telegram's limits counted as Telegram sees them."""

from __future__ import annotations

import pytest

from bot.ratelimit import Limits, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pacer(per_second: int = 3) -> tuple[Pacer, Clock]:
    clock = Clock()
    return Pacer(Limits(per_second=per_second), clock), clock


def test_calls_held_up_count_from_their_answer() -> None:
    """Three calls started at once reach Telegram late, together (a stalled event loop): the
    next second's calls must not join them there."""
    p, clock = pacer()
    for chat in (1, 2, 3):
        assert p.wait(chat) == 0
        p.sent(chat)
    clock.now = 0.9
    for chat in (1, 2, 3):
        p.finished(chat)
    clock.now = 1.0
    assert p.wait(4) == pytest.approx(0.9)  # counted from 0.9, not from 0
    clock.now = 1.9
    assert p.wait(4) == 0


def test_answered_at_once_nothing_changes() -> None:
    p, clock = pacer()
    for chat in (1, 2, 3):
        p.sent(chat)
        p.finished(chat)
    assert p.wait(4) == pytest.approx(1.0)
    clock.now = 1.0
    assert p.wait(4) == 0


def test_several_parts_wait_for_as_many_to_leave_the_window() -> None:
    p, clock = pacer()
    for at, chat in ((0.0, 1), (0.2, 2), (0.4, 3)):
        clock.now = at
        p.sent(chat)
    clock.now = 0.5
    assert p.wait(9, parts=2) == pytest.approx(0.7)  # until the second oldest leaves, at 1.2


def test_a_worker_sends_at_its_share() -> None:
    p, _ = pacer(per_second=25)
    p.workers = 2
    for chat in range(12):
        p.sent(chat)
    assert p.wait(99) > 0


def test_seeded_sends_of_another_worker_pace_the_chat() -> None:
    p, clock = pacer()
    clock.now = 100.0
    p.seed(-5, [(0.3, 1)])  # another worker sent to the group 0.3 s ago
    assert p.wait(-5) == pytest.approx(Limits().group_interval - 0.3)
    p.sent(-5)
    p.finished(-5)
    clock.now = 102.0
    p.seed(-5, [(2.3, 1), (2.0, 1)])  # the same two sends, as the database has them
    assert len(p._chat[-5]) == 2
