"""Delivery benchmark (issue 8, item 2): the real outbox sender against Telegram's limits.

Rows are written with `bot.cases.outbox.enqueue` into a real database, then the sender that
`gridbot run` runs (`bot.app._work`: `Delivery.run` with the app's tick, beside the sweep and
the idle update processor, with the real `Limits()`) is woken, and the wall time until every
row is marked sent is measured. The Bot API is `tests.fakeserver.FakeBotApi` over HTTP on
127.0.0.1 with `enforce_limits=True`: 30 calls in any second overall, 0.95 s between two
calls to one chat, 20 calls in any minute to one group; a call breaking one is answered 429
(retry after 1 s) and counted.

The peer, in the same run, against a fresh fake server: python-telegram-bot's `Bot` with
`AIORateLimiter` (its defaults: 30/s overall, 20/min per group; it has no per-chat limit),
one task per chat sending that chat's messages in order, all chats concurrently.

    python3 -m bench.delivery [--size tiny|small|full] [--json out.json]
                              [--database-url URL] [--only privates,groups,...] [--no-peer]
                              [--profile out.html]

The minimum a workload takes under a limit of r calls per window is N/r (the convention of
the issue: "200 messages ... against 8 s at 25/s"); the minimum of a workload is the largest
over the limits it meets (overall, per chat, per group). A media group is one call, as the
fake server counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.common import base_parser, machine, markdown_table, report, write_json

log = logging.getLogger("bench.delivery")

TOKEN = "123456:BENCH-token-for-the-local-fake-api"
# Telegram's limits (as the fake server enforces them) and the fluid minimum they allow.
TG_PER_SECOND = 30
TG_CHAT_INTERVAL = 1.0
TG_GROUP_PER_MINUTE = 20
GOAL_RATIO = 1.10
PRIVATE_BASE = 700_000_000
GROUP_BASE = -1_001_000_000_000
# How long a run may take before it is given up (seconds), per minimum second.
TIMEOUT_FACTOR = 4.0
TIMEOUT_FLOOR = 30.0


# --- workloads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    chat_id: int
    text: str
    photos: tuple[str, ...] = ()
    buttons: tuple[tuple[tuple[str, str], ...], ...] = ()
    person_id: int | None = None

    @property
    def calls(self) -> int:
        """Bot API calls this message takes (photos as one media group, then the text)."""
        if not self.photos:
            return 1
        if len(self.photos) == 1:
            return 1  # a photo with the text as its caption (short texts here)
        return 2


@dataclass
class Workload:
    name: str
    title: str
    messages: list[Message]

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.messages)

    def per_chat(self) -> Counter[int]:
        counts: Counter[int] = Counter()
        for m in self.messages:
            counts[m.chat_id] += m.calls
        return counts

    def minimum(self, per_second: float = TG_PER_SECOND, interval: float = TG_CHAT_INTERVAL,
                group_per_minute: float = TG_GROUP_PER_MINUTE) -> dict[str, float]:
        """The minimum under each limit and the binding one: N/rate overall (the issue's
        convention), (k-1) intervals for k calls to one chat, and k/rate a minute for a group
        sent more than its per-minute limit (a group sent fewer is not held back by it)."""
        chats = self.per_chat()
        bounds = {
            "overall": self.calls / per_second,
            "per_chat": (max(chats.values()) - 1) * interval if chats else 0.0,
            "per_group": max((n / group_per_minute * 60 for c, n in chats.items()
                              if c < 0 and n > group_per_minute), default=0.0),
        }
        bounds["minimum"] = max(bounds.values())
        return bounds

    def strict_minimum(self, per_second: int = TG_PER_SECOND,
                       interval: float = TG_CHAT_INTERVAL,
                       group_per_minute: int = TG_GROUP_PER_MINUTE) -> float:
        """When the last call can start at the earliest if every window is filled at once
        (a burst of `per_second`, then the next a second later): a strict lower bound."""
        chats = self.per_chat()
        if not chats:
            return 0.0
        bounds = [(math.ceil(self.calls / per_second) - 1) * 1.0,
                  (max(chats.values()) - 1) * interval]
        bounds += [(math.ceil(n / group_per_minute) - 1) * 60.0 for c, n in chats.items()
                   if c < 0]
        return max(bounds)


SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    # privates: chats; groups: groups; reminders: people, per person; cards: people
    "tiny": {"privates": (10,), "groups": (10,), "reminders": (5, 2), "cards": (4,)},
    "small": {"privates": (60,), "groups": (60,), "reminders": (20, 5), "cards": (20,)},
    "full": {"privates": (200,), "groups": (200,), "reminders": (100, 20), "cards": (50,)},
}
WORKLOADS = ("privates", "groups", "reminders", "cards")


def _text(rng: random.Random, lead: str) -> str:
    """A realistic card-ish text in Chinese, HTML-formatted as the bot's templates are."""
    body = "".join(rng.choice("楼道灯坏了电梯漏水垃圾堆积噪音扰民请尽快处理") for _ in range(
        rng.randint(30, 120)))
    return f"<b>{lead}</b>\n{body}\n反映人：居民 · 时限：24小时"


def build_workloads(size: str, seed: int, only: tuple[str, ...] = WORKLOADS) -> list[Workload]:
    rng = random.Random(seed)
    spec = SIZES[size]
    out: list[Workload] = []
    if "privates" in only:
        (n,) = spec["privates"]
        out.append(Workload("privates", f"{n} private chats, one message each", [
            Message(PRIVATE_BASE + i, _text(rng, f"案件 #{i + 1} 已受理"),
                    person_id=PRIVATE_BASE + i)
            for i in range(n)]))
    if "groups" in only:
        (n,) = spec["groups"]
        notice = _text(rng, "街道通知")
        out.append(Workload("groups", f"an announcement to {n} groups", [
            Message(GROUP_BASE - i, notice) for i in range(n)]))
    if "reminders" in only:
        people, each = spec["reminders"]
        msgs = [Message(PRIVATE_BASE + p, _text(rng, f"提醒 {k + 1}/{each}：案件即将超时"),
                        buttons=((("受理", f"c1:ac:{p * each + k + 1}:1"),),),
                        person_id=PRIVATE_BASE + p)
                for k in range(each) for p in range(people)]
        out.append(Workload("reminders", f"{people * each} reminders to {people} people "
                            f"({each} each)", msgs))
    if "cards" in only:
        (n,) = spec["cards"]
        out.append(Workload("cards", f"{n} cards of 2 photos + text to {n} people", [
            Message(PRIVATE_BASE + i, _text(rng, f"案件 #{i + 1} 待核实"),
                    photos=(f"AgACAgUAAx0photo{i}a", f"AgACAgUAAx0photo{i}b"),
                    buttons=((("✅ 属实", f"c1:vc:{i + 1}:1"), ("❌ 不属实", f"c1:vf:{i + 1}:1")),),
                    person_id=PRIVATE_BASE + i)
            for i in range(n)]))
    return out


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Result:
    workload: str
    contender: str
    wall_s: float | None = None  # from the wake (or the first send) to the last message sent
    calls_ok: int = 0  # sends the server accepted
    calls_expected: int = 0
    too_many: int = 0  # 429 answers (limit violations measured by the server)
    cpu_s: float = 0.0  # this process (sender and fake server together)
    first_call_s: float | None = None
    last_call_s: float | None = None
    max_gap_s: float = 0.0  # longest pause between two accepted sends
    in_order: bool = True
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _send_stats(server: Any, t0: float, res: Result, wl: Workload) -> None:
    times = sorted(r.at for r in server.received)
    # A media group is one call but several received messages: count accepted calls.
    accepted = [t for (t, method, _chat) in server.call_times
                if method in ("sendmessage", "sendphoto", "sendmediagroup")]
    res.calls_ok = len(accepted) - len(server.limit_violations)
    res.too_many = len(server.limit_violations) + int(server.injected.get("429", 0))
    res.extra["violations"] = dict(Counter(
        v.split(" to chat ")[0].split(" to group ")[0] for v in server.limit_violations))
    res.extra["call_offsets"] = [(round(t - t0, 3), method) for (t, method, _c)
                                 in server.call_times if method.startswith("send")][:600]
    if times:
        res.first_call_s = times[0] - t0
        res.last_call_s = times[-1] - t0
        res.max_gap_s = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
        # Accepted sends in each second after the start (how the sender used the limit).
        buckets = Counter(int(t - t0) for t in times)
        res.extra["sends_per_second"] = [buckets.get(i, 0) for i in range(int(times[-1] - t0) + 1)]
        res.extra["send_offsets"] = [round(t - t0, 3) for t in times[:400]]
    # Each chat got its messages in the order they were written.
    want: dict[int, list[str]] = defaultdict(list)
    for m in wl.messages:
        want[m.chat_id].append(m.text)
    got: dict[int, list[str]] = defaultdict(list)
    for r in server.received:
        if r.text:
            got[r.chat_id].append(r.text)
    res.in_order = all(got.get(c) == texts for c, texts in want.items())


async def _pending(sessions: Any) -> int:
    from sqlalchemy import func, select

    from storage.models import Outbox

    async with sessions() as db:
        return int(await db.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.status != "sent")) or 0)


async def _wait_until(check: Callable[[], Awaitable[bool]], timeout: float,
                      every: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


async def run_gridbot(wl: Workload, database_url: str | None, workdir: str,
                      profile: Any = None) -> Result:
    """The workload through Gridbot's real sender, as `gridbot run` runs it."""
    from pydantic import SecretStr

    from bot.app import _inbox, _work, build_app
    from bot.cases.outbox import enqueue
    from bot.config import Settings
    from bot.telegram.polling import run_loops
    from storage.models import Person
    from tests.fakeserver import FakeBotApi

    res = Result(wl.name, "gridbot", calls_expected=wl.calls)
    server = FakeBotApi(enforce_limits=True)
    url = await server.start()
    if database_url:
        from tests.harness import empty_database

        await empty_database(database_url)
        db_url = database_url
    else:
        db_url = f"sqlite+aiosqlite:///{workdir}/delivery-{wl.name}.db"
    settings = Settings(database_url=db_url, api_url=url, bot_token=SecretStr(TOKEN),
                        _env_file=None)  # type: ignore[call-arg]
    app = await build_app(settings)
    stop = asyncio.Event()
    loops: asyncio.Task[None] | None = None
    try:
        await app.identify()
        now = app.ctx.clock.now()
        async with app.sessions() as db:
            people = sorted({m.person_id for m in wl.messages if m.person_id is not None})
            for pid in people:
                db.add(Person(id=pid, name=f"居民{pid % 1000}", dm_ok=True, created_at=now))
            await db.commit()
        # The sender runs idle first, as in a bot that has been up a while (its first sweep
        # is over), then the rows are written in one transaction, as the sweep or a handler
        # writes them, and it is woken as a handler's commit wakes it.
        loops = asyncio.create_task(run_loops(_work(app, _inbox(app), stop), stop))
        await asyncio.sleep(1.0)
        w0 = time.perf_counter()
        async with app.sessions() as db:
            for i, m in enumerate(wl.messages):
                await enqueue(db, f"bench:{wl.name}:{i}", m.chat_id, m.text, now,
                              person_id=m.person_id, photos=m.photos,
                              buttons=[[{"text": t, "callback_data": d} for t, d in row]
                                       for row in m.buttons])
            await db.commit()
        res.extra["enqueue_s"] = time.perf_counter() - w0
        if profile is not None:
            profile.start()
        c0 = time.process_time()
        t0 = time.monotonic()
        app.delivery.wake()
        limit = max(TIMEOUT_FLOOR, wl.minimum()["minimum"] * TIMEOUT_FACTOR)

        async def all_accepted() -> bool:
            return len([r for r in server.received if r.text]) >= len(wl.messages)

        async def all_sent() -> bool:
            return await _pending(app.sessions) == 0

        # Watch the server (cheap) until every text arrived, then the database, closely.
        if await _wait_until(all_accepted, limit, 0.05) and await _wait_until(
                all_sent, 30, 0.005):
            res.wall_s = time.monotonic() - t0
        else:
            res.error = f"not all sent within {limit:.0f} s ({await _pending(app.sessions)} left)"
        res.cpu_s = time.process_time() - c0
        if profile is not None:
            profile.stop()
        _send_stats(server, t0, res, wl)
    finally:
        stop.set()
        app.delivery.wake()
        if loops is not None:
            with contextlib.suppress(Exception):
                await loops
        await app.close()
        await server.stop()
    return res


async def run_ptb(wl: Workload) -> Result:
    """The same workload through python-telegram-bot's AIORateLimiter, no database."""
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto
    from telegram.error import RetryAfter
    from telegram.ext import AIORateLimiter, ExtBot
    from telegram.request import HTTPXRequest
    from telegram.warnings import PTBDeprecationWarning

    from tests.fakeserver import FakeBotApi

    # Its limiter reads `RetryAfter.retry_after`, deprecated as an int since v22.2.
    warnings.filterwarnings("ignore", category=PTBDeprecationWarning)
    res = Result(wl.name, "python-telegram-bot AIORateLimiter", calls_expected=wl.calls)
    server = FakeBotApi(enforce_limits=True)
    url = await server.start()
    # As PTB's docs suggest for concurrent sending: a pool big enough for the concurrency
    # (32, as Gridbot's sender), and the limiter retrying what Telegram refuses.
    request = HTTPXRequest(connection_pool_size=32, pool_timeout=60.0)
    bot = ExtBot(TOKEN, base_url=f"{url}/bot", request=request,
              rate_limiter=AIORateLimiter(max_retries=5))
    retried = 0
    try:
        await bot.initialize()
        by_chat: dict[int, list[Message]] = defaultdict(list)
        for m in wl.messages:
            by_chat[m.chat_id].append(m)

        async def send(m: Message) -> None:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(t, callback_data=d) for t, d in row]
                 for row in m.buttons]) if m.buttons else None
            if len(m.photos) > 1:
                await bot.send_media_group(m.chat_id, [InputMediaPhoto(p) for p in m.photos])
            await bot.send_message(m.chat_id, m.text, parse_mode="HTML", reply_markup=markup,
                                   disable_web_page_preview=True)

        async def chat(msgs: list[Message]) -> None:
            nonlocal retried
            for m in msgs:
                for _ in range(20):
                    try:
                        await send(m)
                        break
                    except RetryAfter:  # the limiter's own retries ran out
                        retried += 1
                        await asyncio.sleep(1.0)  # the fake server's retry_after

        c0 = time.process_time()
        t0 = time.monotonic()
        await asyncio.gather(*(chat(ms) for ms in by_chat.values()))
        res.wall_s = time.monotonic() - t0
        res.cpu_s = time.process_time() - c0
        res.extra["retry_after_raised"] = retried
        _send_stats(server, t0, res, wl)
    except Exception as exc:  # the peer failing is a result, not a crash of the benchmark
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            await bot.shutdown()
        await server.stop()
    return res


# --- the run -------------------------------------------------------------------------------


def _row(wl: Workload, res: Result) -> dict[str, Any]:
    tg = wl.minimum()
    own = wl.minimum(per_second=25, interval=1.05, group_per_minute=19)
    r = res.wall_s / tg["minimum"] if res.wall_s and tg["minimum"] else None
    return {
        "workload": wl.name,
        "contender": res.contender,
        "messages": len(wl.messages),
        "calls": wl.calls,
        "wall s": res.wall_s,
        "min s (Telegram)": tg["minimum"],
        "ratio": r,
        "goal": f"≤ {GOAL_RATIO:.2f}×",
        "met": None if r is None else r <= GOAL_RATIO,
        "strict min s": wl.strict_minimum(),
        "min s (own Limits)": own["minimum"],
        "ratio to own": res.wall_s / own["minimum"] if res.wall_s and own["minimum"] else None,
        "429s": res.too_many,
        "429 met": res.too_many == 0,
        "max gap s": res.max_gap_s,
        "in order": res.in_order,
        "cpu s": res.cpu_s,
    }


HEADERS = ["workload", "contender", "messages", "calls", "wall s", "min s (Telegram)", "ratio",
           "goal", "met", "strict min s", "min s (own Limits)", "ratio to own", "429s",
           "429 met", "max gap s", "in order", "cpu s"]


async def bench(size: str, seed: int, database_url: str | None, only: tuple[str, ...],
                peer: bool, profile_path: str | None = None) -> dict[str, Any]:
    workloads = build_workloads(size, seed, only)
    workdir = tempfile.mkdtemp(prefix="gridbot-bench-delivery-")
    rows: list[dict[str, Any]] = []
    results: list[Result] = []
    profiler = None
    if profile_path:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
    try:
        for wl in workloads:
            res = await run_gridbot(wl, database_url, workdir, profiler)
            results.append(res)
            rows.append(_row(wl, res))
            if peer:
                res = await run_ptb(wl)
                results.append(res)
                rows.append(_row(wl, res))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if profiler is not None and profile_path:
        with open(profile_path, "w", encoding="utf-8") as f:
            f.write(profiler.output_html())
        with open(profile_path + ".txt", "w", encoding="utf-8") as f:
            f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    return {
        "benchmark": "delivery",
        "size": size,
        "seed": seed,
        "database": "sqlite (temp file)" if not database_url else _safe_url(database_url),
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "limits": {"telegram": {"per_second": TG_PER_SECOND, "chat_interval": TG_CHAT_INTERVAL,
                                "group_per_minute": TG_GROUP_PER_MINUTE},
                   "own": _own_limits()},
        "goal_ratio": GOAL_RATIO,
        "workloads": [{"name": w.name, "title": w.title, "messages": len(w.messages),
                       "calls": w.calls, "minimum": w.minimum(),
                       "strict_minimum": w.strict_minimum(),
                       "minimum_own": w.minimum(per_second=25, interval=1.05,
                                                group_per_minute=19)} for w in workloads],
        "results": [asdict(r) for r in results],
        "rows": rows,
    }


def _own_limits() -> dict[str, Any]:
    from bot.telegram.ratelimit import Limits

    return asdict(Limits())


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> int:
    ap = base_parser("Delivery through the real sender against Telegram's limits")
    ap.add_argument("--only", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    ap.add_argument("--no-peer", action="store_true", help="skip python-telegram-bot")
    ap.add_argument("--profile", default=None,
                    help="pyinstrument HTML (and .txt) of Gridbot's sender runs written here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "WARNING"))
    only = tuple(w for w in args.only.split(",") if w)
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    data = asyncio.run(bench(args.size, args.seed, args.database_url, only, not args.no_peer,
                             args.profile))
    notes = [
        f"Size {args.size}, database {data['database']}. Minimum: N/rate under Telegram's "
        f"limits ({TG_PER_SECOND}/s overall, 1/s per chat, {TG_GROUP_PER_MINUTE}/min per "
        "group); 'own Limits' is the same under the sender's `Limits()` "
        f"({data['limits']['own']}). 429s: calls the fake server answered 429.",
        "Command: `python3 -m bench.delivery --size " + args.size
        + (" --database-url …" if args.database_url else "") + "`",
    ]
    for w in data["workloads"]:
        notes.append(f"- {w['name']}: {w['title']} ({w['calls']} calls)")
    report("Delivery", markdown_table(data["rows"], HEADERS), notes, data["machine"])
    write_json(args.json_path, data)
    failed = [r for r in data["results"] if r["error"] and r["contender"] == "gridbot"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
