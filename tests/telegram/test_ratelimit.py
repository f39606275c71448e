"""The sender's pacer (bot/telegram/ratelimit.py): Telegram's limits counted as Telegram
sees them."""

from __future__ import annotations

import pytest

from bot.telegram.ratelimit import Limits, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pacer(per_second: int = 3) -> tuple[Pacer, Clock]:
    clock = Clock()
    return Pacer(Limits(per_second=per_second), clock), clock


def send(p: Pacer, clock: Clock, chats: tuple[int, ...], finish: bool = True) -> None:
    """Each chat's call given its slot as soon as the pacer allows."""
    for chat in chats:
        clock.now += p.wait(chat)
        assert p.wait(chat) == 0
        p.sent(chat)
        if finish:
            p.finished(chat)


def test_slots_are_spread_over_the_second() -> None:
    p, clock = pacer()
    p.sent(1)
    assert p.wait(2) == pytest.approx(1 / 3)
    clock.now = 1 / 3
    assert p.wait(2) == 0


def test_calls_held_up_count_from_their_answer() -> None:
    """Three calls reach Telegram late, together (a stalled event loop): the next second's
    calls must not join them there."""
    p, clock = pacer()
    send(p, clock, (1, 2, 3), finish=False)  # given at 0, 1/3 and 2/3
    clock.now = 0.9
    for chat in (1, 2, 3):
        p.finished(chat)
    clock.now = 1.0
    assert p.wait(4) == pytest.approx(0.9)  # counted from 0.9, not from 0
    clock.now = 1.9
    assert p.wait(4) == 0


def test_answered_at_once_nothing_changes() -> None:
    p, clock = pacer()
    send(p, clock, (1, 2, 3))
    assert clock.now == pytest.approx(2 / 3)
    assert p.wait(4) == pytest.approx(1 / 3)
    clock.now = 1.0
    assert p.wait(4) == 0


def test_several_parts_wait_for_as_many_to_leave_the_window() -> None:
    p, clock = pacer()
    for at, chat in ((0.0, 1), (0.34, 2), (0.68, 3)):
        clock.now = at
        p.sent(chat)
    clock.now = 0.9
    assert p.wait(9, parts=2) == pytest.approx(0.44)  # until the second oldest leaves, at 1.34


def test_a_worker_sends_at_its_share() -> None:
    p, clock = pacer(per_second=24)
    p.workers = 2
    send(p, clock, tuple(range(12)))
    assert clock.now == pytest.approx(11 / 12)  # a slot every 1/12 s: half of 24 a second
    assert p.wait(99) == pytest.approx(1 / 12)


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
