"""Telegram's sending limits, kept by the sender itself so bursts are spread, not refused.

About 30 messages a second overall, one a second in a private chat, 20 a minute in a group
(https://core.telegram.org/bots/faq#broadcasting-to-users). We stay a little under each.
Time here is the event loop's monotonic clock: pacing is about real seconds on the wire, not
the domain's (injectable) clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

# Two records of one send (this pacer's, and the sent time the database keeps for it) lie
# closer together than this; two sends to one chat never do (one a second at most).
SAME_SEND = 0.5
# How long a background send steps back while an answer waits for the same chat.
ANSWER_YIELD = 0.05


@dataclass(frozen=True)
class Limits:
    per_second: int = 28  # all chats together, counted from their answers (see `finished`)
    private_interval: float = 1.05  # seconds between two messages to one private chat
    group_interval: float = 1.05  # ... to one group
    group_per_minute: int = 19  # in any 60 seconds, to one group

    @classmethod
    def unlimited(cls) -> Limits:
        return cls(per_second=10**9, private_interval=0, group_interval=0,
                   group_per_minute=10**9)


class Pacer:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        # Sends of the last second, each a one-item list so that `finished` can move it on:
        # counted from when it was answered, not when it was started.
        self._all: list[list[float]] = []
        self._last: dict[int, list[float]] = {}
        self._granted = -math.inf  # when the last slot was given, any chat
        self._chat: dict[int, deque[float]] = defaultdict(deque)
        self._blocked_until: dict[int, float] = {}
        # Workers sharing the bot (bot/ops/workers.py): each sends at its share of the overall
        # limit. The per-chat limits need no share: one worker serves a chat at a time.
        self.workers = 1
        # Answers to a person's own tap or text waiting for a slot of their chat: the outbox
        # sender leaves the chat's next slot to them (what a person asked for comes first).
        self._answering: dict[int, int] = defaultdict(int)
        # Chats an answer was queued to in the outbox while the sender may be mid-turn there:
        # the sender reads the chat's next row again instead of the one it read ahead.
        self.answers_queued: set[int] = set()

    def wait(self, chat_id: int, parts: int = 1) -> float:
        """Seconds until `parts` messages may go to `chat_id` (0: now)."""
        now = self.clock()
        lim = self.limits
        delays = [self._blocked_until.get(chat_id, 0) - now]
        self._all = [cell for cell in self._all if cell[0] > now - 1]
        per_second = max(1, lim.per_second // max(1, self.workers))
        # Slots are spread over the second, not given in one burst: a burst's calls wait on
        # each other at Telegram and are answered late, and counted from their answers the
        # next burst would start late too.
        delays.append(self._granted + 1 / per_second - now)
        over = len(self._all) + parts - per_second
        if over > 0 and self._all:
            times = sorted(cell[0] for cell in self._all)
            delays.append(times[min(over, len(times)) - 1] + 1 - now)
        sent = self._chat[chat_id]
        while sent and sent[0] <= now - 60:
            sent.popleft()
        if sent:
            interval = lim.private_interval if chat_id > 0 else lim.group_interval
            delays.append(sent[-1] + interval - now)
            if chat_id < 0 and len(sent) + parts > lim.group_per_minute:
                delays.append(sent[0] + 60 - now)
        return max(0.0, *delays)

    async def acquire(self, chat_id: int, parts: int = 1, max_pause: float = math.inf,
                      *, answer: bool = False) -> bool:
        """Wait until `parts` messages may go to `chat_id`; False (at once) if that is further
        off than `max_pause`, or if waiting has taken longer than `max_pause` of real time.

        An `answer` (to what the chat's person just did) goes before the other sends waiting
        for the same chat: they wait while it does.

        Returning True is the slot: the caller must call `sent` before its next `await`, so
        that concurrent senders never both take the same slot.
        """
        started = time.monotonic()
        if answer:
            self._answering[chat_id] += 1
        try:
            while (pause := self._pause(chat_id, parts, answer)) > 0:
                # The second test matters when `clock` is not real time (tests move it by
                # hand).
                if pause > max_pause or time.monotonic() - started + pause > max_pause:
                    return False
                await asyncio.sleep(pause)
            return True
        finally:
            if answer:
                self._answering[chat_id] -= 1
                if not self._answering[chat_id]:
                    del self._answering[chat_id]

    def _pause(self, chat_id: int, parts: int, answer: bool) -> float:
        pause = self.wait(chat_id, parts)
        if not answer and self._answering.get(chat_id):
            # An answer waits for this chat: look again when it has had its slot.
            return max(pause, ANSWER_YIELD)
        return pause

    def answer_queued(self, chat_id: int) -> None:
        """An answer to `chat_id` went to the outbox: its sender should look again."""
        self.answers_queued.add(chat_id)

    def take_answer_queued(self, chat_id: int) -> bool:
        """Whether an answer was queued to `chat_id` since the sender last asked."""
        if chat_id in self.answers_queued:
            self.answers_queued.discard(chat_id)
            return True
        return False

    def sent(self, chat_id: int) -> None:
        now = self.clock()
        cell = [now]
        self._granted = now
        self._all.append(cell)
        self._last[chat_id] = cell
        self._chat[chat_id].append(now)

    def finished(self, chat_id: int) -> None:
        """The last call to `chat_id` got its answer: count it, for its chat and overall, from
        now.

        A call may reach Telegram later than it was started (a busy event loop, a new
        connection); it has surely arrived once answered. Counted from its start, calls
        held up together would reach Telegram together with the ones started after them,
        more than the limit in one second.
        """
        now = self.clock()
        sent = self._chat.get(chat_id)
        if sent:
            sent[-1] = max(sent[-1], now)
        cell = self._last.pop(chat_id, None)
        if cell is not None:
            cell[0] = max(cell[0], now)

    def seed(self, chat_id: int, ages: list[tuple[float, int]]) -> None:
        """What was sent to `chat_id` lately, perhaps by another worker that served it before
        this one took it over: (seconds ago, messages). Sends this pacer made itself are
        among them already; only those it does not know are added."""
        now = self.clock()
        sent = self._chat[chat_id]
        known = list(sent)
        for age, count in ages:
            at = now - age
            if any(abs(at - mine) < SAME_SEND for mine in known):
                continue
            sent.extend([at] * count)
        if len(sent) > len(known):
            self._chat[chat_id] = deque(sorted(sent))

    def block(self, chat_id: int, seconds: float) -> None:
        """Telegram said "retry after": nothing more to that chat until then."""
        self._blocked_until[chat_id] = self.clock() + seconds
