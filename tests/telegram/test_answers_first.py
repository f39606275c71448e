"""What a person asked for comes first (issue 21, point 3): an answer to a person's own tap
that finds their chat busy is queued, and goes out before the background messages (reminder
lists, notices, digests) already waiting for the same chat, at Telegram's pace.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.cases.outbox import enqueue
from bot.telegram.ratelimit import Limits, Pacer
from bot.telegram.session import DIRECT_KIND
from storage.models import Outbox
from tests.harness import BUILDING_CHAT, HEAD, LEADER, RESIDENT, Harness

BACKGROUND = 20


async def leader_case(h: Harness) -> int:
    await h.say(BUILDING_CHAT, RESIDENT, "/report 3单元楼道灯坏了，晚上很黑")
    case = (await h.cases())[-1]
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return case.id


async def busy_chat(h: Harness) -> None:
    """Telegram's limits on the harness clock, 20 background rows queued for the leader,
    and a message sent to them this very moment: no slot is free for a second."""
    h.app.delivery.pacer.limits = Limits()
    async with h.app.sessions() as db:
        for n in range(BACKGROUND):
            await enqueue(db, f"test:bg:{n}", LEADER, f"背景消息 {n}", h.clock.now(),
                          person_id=LEADER)
        await db.commit()
    h.app.delivery.pacer.sent(LEADER)


async def one_slot(h: Harness) -> list[str]:
    """A second of Telegram's pace: what reached the leader in it."""
    before = len(h.texts(LEADER))
    h.clock.advance(timedelta(seconds=1.1))
    await h.app.delivery.flush()
    return h.texts(LEADER)[before:]


async def test_the_prompt_after_a_tap_goes_before_twenty_queued_messages(h: Harness) -> None:
    case_id = await leader_case(h)
    await busy_chat(h)
    card = h.card(LEADER, case_id)
    await h.feed(h.updates.callback(LEADER, card.button_data("办结"), card), deliver=False)
    async with h.app.sessions() as db:
        queued = (await db.scalars(select(Outbox).where(
            Outbox.chat_id == LEADER, Outbox.status == "pending")
            .order_by(Outbox.id))).all()
    # Written last (the chat was busy), an answer ...
    assert queued[-1].kind == DIRECT_KIND and "办理结果" in queued[-1].text
    # ... and sent first, in the chat's next slot.
    assert [t for t in await one_slot(h) if t] == [queued[-1].text]
    # The background rows follow, one a second, in the order they were written.
    rest: list[str] = []
    for _ in range(BACKGROUND + 2):
        rest += await one_slot(h)
    assert rest == [f"背景消息 {n}" for n in range(BACKGROUND)]


async def test_an_answer_waiting_for_a_slot_takes_it_before_the_sender(h: Harness) -> None:
    """The pacer's side: a background send waiting for the same chat steps back while an
    answer waits for its slot."""
    now = [0.0]
    pacer = Pacer(Limits(), clock=lambda: now[0])
    pacer.sent(LEADER)
    now[0] = 1.1  # the chat's next slot is free
    pacer._answering[LEADER] += 1  # an answer is waiting for it
    assert pacer._pause(LEADER, 1, answer=True) == 0
    assert pacer._pause(LEADER, 1, answer=False) > 0
    pacer._answering[LEADER] -= 1
    assert pacer._pause(LEADER, 1, answer=False) == 0
    # A queued answer is told to the sender once.
    pacer.answer_queued(LEADER)
    assert pacer.take_answer_queued(LEADER) and not pacer.take_answer_queued(LEADER)
