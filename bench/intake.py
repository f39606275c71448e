"""Intake benchmark (issue 8, item 1): Gridbot against the framework floor, in one run.

A seeded stream of realistic updates — group reports (text, photo, albums of three), private
guided reports (/report → building → category → photos skipped → location skipped → 提交) and
the button presses of each case's life (building head 属实, leader 受理 and 办结 with the result
text and 提交, reporter 满意), each pressed on the card the fake Bot API received — is fed to:

- the real `gridbot run` (long polling this module's fake Bot API) and `gridbot webhook`
  (POSTed to, with the secret), on SQLite and, with --database-url, on PostgreSQL, with one
  worker and (webhook on PostgreSQL) two fed alternately;
- the floor: bench/floor_bot.py (a bare aiogram bot answering each update with one message),
  polling and behind aiogram's SimpleRequestHandler.

Two phases per target:
- **life**: every case driven through its life by one coroutine, each step sent once the bot
  answered the previous one (a person does one thing at a time). Latency of an update: from
  the push (polling) or the POST (webhook) to the bot's answer at the fake server (a reply to
  the message, answerCallbackQuery for a press, the next prompt in a private flow).
- **burst**: group reports from distinct residents over all building chats at once; the rate
  is how fast they became cases (Gridbot: rows in `cases`; floor: answers), which is what two
  workers should speed up (Gridbot's own answers are paced to Telegram's limits).

CPU seconds per update are the bot process(es)' utime+stime (/proc) over the phase, until the
bot is quiet again (Gridbot: nothing pending in its outbox).

Also (--sql): SQL statements and transactions per update kind, one of each through the
production path (inbox store → processing → delivery) in tests.harness, counted with a
`before_cursor_execute` listener and commit/rollback events.

    python3 -m bench.intake --size small [--database-url postgresql+asyncpg://…] [--json f]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import (
    base_parser,
    goal_met,
    machine,
    markdown_table,
    percentile,
    report,
    write_json,
)
from bot.telegram.fake import Updates
from tests.e2e import (
    TOKEN,
    Reader,
    building_chat,
    head,
    leader,
    resident,
    write_registry,
)
from tests.fakeserver import FakeBotApi, _ok

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-intake-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Cases of each kind per size; every case is driven through its whole life.
# Updates per case: text or photo 7, album 9 (3 parts), guided 12.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"grids": 2, "text": 1, "photo": 1, "album": 1, "guided": 1, "burst": 10},
    "small": {"grids": 20, "text": 20, "photo": 6, "album": 5, "guided": 6, "burst": 100},
    "full": {"grids": 100, "text": 200, "photo": 60, "album": 50, "guided": 60, "burst": 1000},
}
STEP_TIMEOUT = 180.0
IDLE_SECONDS = 3.0  # a card waits behind Telegram's per-chat and overall limits
CASE_ID = re.compile(r"#(\d+)")


# --- the fake Bot API, watching for answers ------------------------------------------------

@dataclass
class Pending:
    """One update sent to the bot and when it was answered."""

    kind: str
    t0: float = 0.0
    t1: float | None = None
    measured: bool = True  # album parts other than the captioned one get no answer of their own
    fut: asyncio.Future[Msg] | None = None

    def done(self, msg: Msg) -> None:
        if self.t1 is None:
            self.t1 = time.monotonic()
            if self.fut is not None and not self.fut.done():
                self.fut.set_result(msg)


@dataclass
class Msg:
    chat: int
    mid: int
    text: str
    data: list[str]  # callback data of its buttons, as the person now sees them
    index: int  # position among the messages to its chat
    labels: dict[str, str] = field(default_factory=dict)  # callback data -> button text


Pred = Callable[[Msg], bool]


@dataclass
class BenchApi(FakeBotApi):
    """FakeBotApi that tells the benchmark when each update was answered."""

    msgs: dict[int, list[Msg]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.by_mid: dict[tuple[int, int], Msg] = {}
        self.replies: dict[tuple[int, int], Pending] = {}
        self.presses: dict[str, Pending] = {}
        self.in_chat: dict[int, list[tuple[Pred, Pending]]] = defaultdict(list)
        self.watch: dict[int, list[tuple[Pred, asyncio.Future[Msg]]]] = defaultdict(list)
        self.sends = 0

    # answers --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"].lower()
        if method not in ("answercallbackquery", "editmessagereplymarkup", "editmessagetext"):
            return await super()._handle(request)
        params = await self._params(request)
        self.calls.append((method, params))
        if method == "answercallbackquery":
            pending = self.presses.pop(str(params.get("callback_query_id")), None)
            if pending is not None:
                pending.done(Msg(0, 0, "", [], 0))
        else:
            msg = self.by_mid.get((int(params.get("chat_id") or 0),
                                   int(params.get("message_id") or 0)))
            if msg is not None:
                if method == "editmessagetext":
                    msg.text = str(params.get("text") or "")
                msg.data, msg.labels = _data(params), _labels(params)
                self._seen(msg)
        return _ok(True)

    def _accept(self, method: str, chat_id: int, params: dict[str, Any]) -> Any:
        before = len(self.received)
        result = super()._accept(method, chat_id, params)
        self.sends += 1
        reply = params.get("reply_parameters")
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        reply_to = reply_to or params.get("reply_to_message_id")
        for r in self.received[before:]:
            msg = Msg(chat_id, r.message_id, r.text, _data(params),
                      len(self.msgs[chat_id]), _labels(params))
            self.msgs[chat_id].append(msg)
            self.by_mid[(chat_id, r.message_id)] = msg
            if reply_to is not None:
                pending = self.replies.pop((chat_id, int(reply_to)), None)
                if pending is not None:
                    pending.done(msg)
            if msg.text.startswith("cb:"):  # the floor's answer to a press
                pending = self.presses.pop(msg.text[3:], None)
                if pending is not None:
                    pending.done(msg)
            waiting = self.in_chat.get(chat_id)
            if waiting:
                for pred, pending in list(waiting):
                    if pending.t1 is not None:
                        waiting.remove((pred, pending))
                    elif pred(msg):
                        waiting.remove((pred, pending))
                        pending.done(msg)
            self._seen(msg)
        return result

    def _seen(self, msg: Msg) -> None:
        watching = self.watch.get(msg.chat)
        if watching:
            for pred, fut in list(watching):
                if fut.done():
                    watching.remove((pred, fut))
                elif pred(msg):
                    watching.remove((pred, fut))
                    fut.set_result(msg)

    # waiting -------------------------------------------------------------------------------

    async def wait_msg(self, chat: int, pred: Pred, timeout: float = STEP_TIMEOUT) -> Msg:
        """The first message to `chat` (as it now stands) that `pred` accepts."""
        for msg in self.msgs.get(chat, []):
            if pred(msg):
                return msg
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self.watch[chat].append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    def cursor(self, chat: int) -> int:
        return len(self.msgs.get(chat, []))


def _labels(params: dict[str, Any]) -> dict[str, str]:
    markup = params.get("reply_markup") or {}
    rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
    return {str(b["callback_data"]): str(b.get("text", "")) for row in rows for b in row
            if b.get("callback_data")}


def _data(params: dict[str, Any]) -> list[str]:
    markup = params.get("reply_markup") or {}
    rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
    return [str(b["callback_data"]) for row in rows for b in row if b.get("callback_data")]


# --- processes -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Target:
    name: str  # e.g. "gridbot run sqlite ×1"
    bot: str  # "gridbot" or "floor"
    mode: str  # "run" (polling) or "webhook"
    database_url: str | None = None
    workers: int = 1
    profile: Path | None = None  # pyinstrument output for the first worker


class Running:
    """The bot process(es) of one target, their fake Bot API, and how updates reach them."""

    def __init__(self, target: Target, tmp: Path, api: BenchApi, api_url: str,
                 registry: Path) -> None:
        self.t, self.tmp, self.api = target, tmp, api
        self.api_url, self.registry = api_url, registry
        self.procs: list[asyncio.subprocess.Process] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []
        self.http: aiohttp.ClientSession | None = None
        self._turn = itertools.count()

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDBOT_")}
        env["PYTHONPATH"] = str(ROOT)
        for n in range(self.t.workers):
            port = free_port()
            self.ports.append(port)
            log = self.tmp / f"{self.t.bot}-{self.t.mode}-{n}.log"
            self.logs.append(log)
            if self.t.bot == "floor":
                cmd = [sys.executable, "-m", "bench.floor_bot", "--api", self.api_url,
                       "--token", TOKEN]
                if self.t.mode == "webhook":
                    cmd += ["--listen", f"127.0.0.1:{port}", "--path", "/tg",
                            "--secret", SECRET]
            else:
                env.update({"GRIDBOT_BOT_TOKEN": TOKEN, "GRIDBOT_API_URL": self.api_url,
                            "GRIDBOT_DATABASE_URL": self.t.database_url or ""})
                if self.t.mode == "webhook":
                    env.update({"GRIDBOT_WEBHOOK_URL": "https://bot.example.org/tg",
                                "GRIDBOT_WEBHOOK_SECRET": SECRET,
                                "GRIDBOT_LISTEN": f"127.0.0.1:{port}"})
                prog = ["-m", "bot.cli"]
                if n == 0 and self.t.profile is not None:
                    prog = ["-m", "bench.intake", "--child-profile", str(self.t.profile)]
                cmd = [sys.executable, *prog, self.t.mode]
                if n == 0:
                    cmd += ["--registry", str(self.registry)]
            with open(log, "wb") as err:
                self.procs.append(await asyncio.create_subprocess_exec(
                    *cmd, cwd=self.tmp, env=dict(env), stdout=asyncio.subprocess.DEVNULL,
                    stderr=err))
            if n == 0:
                await self._ready(0)  # the first one loads the registry and makes the schema
        for n in range(1, self.t.workers):
            await self._ready(n)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=40))

    async def _ready(self, n: int) -> None:
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                proc = self.procs[n]
                if proc.returncode is not None:
                    raise RuntimeError(f"{self.t.name} exited: {self.logs[n].read_text()[-2000:]}")
                if self.t.mode == "run":
                    if any(m == "getupdates" for m, _ in self.api.calls):
                        return
                else:
                    with contextlib.suppress(aiohttp.ClientError):
                        url = f"http://127.0.0.1:{self.ports[n]}/"
                        url += "healthz" if self.t.bot == "gridbot" else "tg"
                        async with http.get(url) as r:
                            if r.status in (200, 405):  # the floor has no /healthz
                                return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.t.name} did not start: {self.logs[n].read_text()[-2000:]}")

    def profiler(self, on: bool) -> None:
        """Start (SIGUSR1) or stop and write (SIGUSR2) the profiler in the first worker."""
        if self.t.profile is not None and self.procs[0].returncode is None:
            self.procs[0].send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    async def send(self, update: dict[str, Any], pending: Pending) -> None:
        """Hand one update to the bot: queue it for getUpdates, or POST it to a worker (in
        turn, as a load balancer would)."""
        pending.t0 = time.monotonic()
        if self.t.mode == "run":
            update = dict(update)
            uid = update.pop("update_id")
            self.api.push(update, uid)
            return
        assert self.http is not None
        port = self.ports[next(self._turn) % len(self.ports)]
        async with self.http.post(f"http://127.0.0.1:{port}/tg", json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}) as r:
            if r.status != 200:
                raise RuntimeError(f"POST answered {r.status}: {await r.text()}")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# --- the workload ----------------------------------------------------------------------------

@dataclass
class CaseSpec:
    kind: str  # text, photo, album, guided
    grid: int
    reporter: int
    n: int


def workload(size: dict[str, int], seed: int) -> list[CaseSpec]:
    rng = random.Random(seed)
    kinds = [k for k in ("text", "photo", "album", "guided") for _ in range(size[k])]
    rng.shuffle(kinds)
    return [CaseSpec(k, rng.randrange(size["grids"]), resident(rng.randrange(size["grids"]), n),
                     n) for n, k in enumerate(kinds)]


class Driver:
    """Feeds one target: builds each update, registers what answers it, sends it, waits."""

    def __init__(self, run: Running, api: BenchApi, seed: int) -> None:
        self.run, self.api = run, api
        self.floor = run.t.bot == "floor"
        self.updates = Updates()
        self.updates._message_ids = itertools.count(1_000_000)
        self.pendings: list[Pending] = []
        self.locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.failures: list[str] = []
        self.rng = random.Random(seed)

    def _pending(self, kind: str, measured: bool = True) -> Pending:
        p = Pending(kind, measured=measured, fut=asyncio.get_running_loop().create_future())
        self.pendings.append(p)
        return p

    async def message(self, kind: str, chat: int, user: int, text: str | None = None, *,
                      expect: Pred | None = None, wait: bool = True,
                      measured: bool = True, **kw: Any) -> tuple[dict[str, Any], Msg | None]:
        """A message; answered by a reply to it, or (private flows) by a message to its chat
        that `expect` accepts."""
        update = self.updates.message(chat, user, text, **kw)
        p = self._pending(kind, measured)
        if measured:
            self.api.replies[(chat, update["message"]["message_id"])] = p
            if expect is not None and not self.floor:
                self.api.in_chat[chat].append((expect, p))
        await self.run.send(update, p)
        if not (wait and measured):
            return update, None
        assert p.fut is not None
        return update, await asyncio.wait_for(p.fut, STEP_TIMEOUT)

    async def press(self, kind: str, user: int, data: str, on: Msg | None) -> None:
        """A button pressed on message `on` (a made-up one for the floor)."""
        from bot.telegram.fake import Sent
        sent = Sent(on.chat if on else user, ".", [], [], on.mid if on else 1)
        update = self.updates.callback(user, data, sent)
        p = self._pending(kind)
        self.api.presses[update["callback_query"]["id"]] = p
        await self.run.send(update, p)
        assert p.fut is not None
        await asyncio.wait_for(p.fut, STEP_TIMEOUT)

    async def card(self, chat: int, prefix: str, start: int = 0) -> Msg | None:
        """The message to `chat` with a button whose data starts with `prefix`."""
        if self.floor:
            return None
        return await self.api.wait_msg(
            chat, lambda m: m.index >= start and any(d.startswith(prefix) for d in m.data))

    @staticmethod
    def button(msg: Msg | None, prefix: str, fallback: str) -> str:
        if msg is None:
            return fallback
        return next(d for d in msg.data if d.startswith(prefix))

    # one case's life ------------------------------------------------------------------------

    async def life(self, spec: CaseSpec) -> None:
        try:
            if spec.kind == "guided":
                # The case is in the building the resident picks from the first page.
                cid, grid = await self.guided(spec)
                spec = CaseSpec(spec.kind, grid, spec.reporter, spec.n)
            else:
                cid = await self.group(spec)
            await self.step(head(spec.grid), "verify", f"c1:vc:{cid}:")
            async with self.locks[leader(spec.grid)]:
                await self.step(leader(spec.grid), "accept", f"c1:ac:{cid}:")
                await self.step(leader(spec.grid), "resolve", f"c1:rs:{cid}:")
                who = leader(spec.grid)
                _, preview = await self.message(
                    "result_text", who, who, f"已处理{spec.n}",
                    expect=lambda m: "pr:ok" in m.data)
                await self.press("result_submit", who, "pr:ok", None if self.floor else preview)
            await self.step(spec.reporter, "rate", f"c1:rt:{cid}:", suffix=":good")
        except Exception as exc:  # counted and reported, the run goes on
            self.failures.append(f"case {spec.n} ({spec.kind}): {type(exc).__name__} {exc}")

    async def step(self, user: int, kind: str, prefix: str, suffix: str = "") -> None:
        card = await self.card(user, prefix)
        if card is not None and suffix:
            data = next(d for d in card.data if d.startswith(prefix) and d.endswith(suffix))
        else:
            data = self.button(card, prefix, prefix + "1" + suffix)
        await self.press(kind, user, data, card)

    async def group(self, spec: CaseSpec) -> int:
        chat, user = building_chat(spec.grid), spec.reporter
        if spec.kind == "text":
            _, ack = await self.message("report_text", chat, user, f"/report 楼道灯坏了{spec.n}")
        elif spec.kind == "photo":
            _, ack = await self.message("report_photo", chat, user, photo=f"p{spec.n}",
                                        caption=f"/report 墙面渗水{spec.n}")
        else:
            album = f"al{spec.n}"
            first = self._pending("report_album")
            first_mid = 0
            for part in range(3):
                update = self.updates.message(
                    chat, user, photo=f"al{spec.n}-{part}", media_group_id=album,
                    caption=f"/report 垃圾堆放{spec.n}" if part == 0 else None)
                mid = update["message"]["message_id"]
                # The case's acknowledgement replies to one of the parts.
                self.api.replies[(chat, mid)] = first
                p = first if part == 0 else self._pending("album_part", measured=False)
                first_mid = first_mid or mid
                await self.run.send(update, p)
            assert first.fut is not None
            ack = await asyncio.wait_for(first.fut, STEP_TIMEOUT)
            for part in range(1, 3):  # the floor answers each part; Gridbot one of them
                self.api.replies.pop((chat, first_mid + part), None)
        return self.case_id(ack)

    def case_id(self, ack: Msg | None) -> int:
        if self.floor or ack is None:
            return 1
        found = CASE_ID.search(ack.text)
        if found is None:
            raise RuntimeError(f"no case number in the acknowledgement: {ack.text[:80]!r}")
        return int(found.group(1))

    async def guided(self, spec: CaseSpec) -> tuple[int, int]:
        me = spec.reporter
        start = self.api.cursor(me)
        await self.message("private_report", me, me, f"/report 路灯不亮{spec.n}",
                           expect=lambda m: m.index >= start)
        prompt = await self.card(me, "rf:b:", start)
        grid = spec.grid
        if prompt is not None:
            choices = [d for d in prompt.data if d.startswith("rf:b:")]
            chosen = choices[spec.n % len(choices)]
            found = re.search(r"(\d+)号楼", prompt.labels.get(chosen, ""))
            if found is None:
                raise RuntimeError(f"no building number in {prompt.labels.get(chosen)!r}")
            grid = int(found.group(1))
        else:
            chosen = "rf:b:1"
        await self.press("flow_building", me, chosen, prompt)
        prompt = await self.card(me, "rf:c:", start)
        await self.press("flow_category", me, "rf:c:other", prompt)
        prompt = await self.card(me, "rf:next", start)
        await self.press("flow_photos_skip", me, "rf:next", prompt)
        mark = self.api.cursor(me)
        await self.message("flow_location_skip", me, me, "跳过",
                           expect=lambda m: m.index >= mark)
        prompt = await self.card(me, "rf:ok", start)
        mark = self.api.cursor(me)
        await self.press("flow_submit", me, "rf:ok", prompt)
        if self.floor:
            return 1, grid
        ack = await self.api.wait_msg(me, lambda m: m.index >= mark
                                      and CASE_ID.search(m.text) is not None)
        return self.case_id(ack), grid

    # the burst ------------------------------------------------------------------------------

    async def burst(self, count: int, grids: int) -> list[Pending]:
        sends = []
        out = []
        for n in range(count):
            i = n % grids
            update = self.updates.message(building_chat(i), resident(i, 500 + n),
                                          f"/report 电梯故障{n}")
            p = self._pending("burst_report")
            self.api.replies[(building_chat(i), update["message"]["message_id"])] = p
            out.append(p)
            sends.append(self.run.send(update, p))
        await asyncio.gather(*sends)
        return out


# --- measuring one target --------------------------------------------------------------------

def _stats(pendings: list[Pending]) -> dict[str, Any]:
    lat = [(p.t1 - p.t0) * 1000 for p in pendings if p.measured and p.t1 is not None]
    return {"answered": len(lat), "p50_ms": percentile(lat, 50) if lat else None,
            "p99_ms": percentile(lat, 99) if lat else None}


async def _true(value: bool) -> bool:
    return value


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def measure(target: Target, size: dict[str, int], seed: int,
                  tmp: Path) -> dict[str, Any]:
    api = BenchApi(enforce_limits=False, long_poll_cap=1.0)
    api_url = await api.start()
    registry = write_registry(tmp / "district.yaml", size["grids"])
    reader = Reader(target.database_url) if target.database_url else None
    run = Running(target, tmp, api, api_url, registry)
    result: dict[str, Any] = {"target": target.name, "bot": target.bot, "mode": target.mode,
                              "workers": target.workers}
    try:
        await run.start()
        await asyncio.sleep(1.0)  # start-up work (registry, first sweep) out of the way

        async def quiet() -> bool:
            if reader is None:
                return True
            rows = await reader.look("SELECT count(*) FROM outbox WHERE status = 'pending'")
            return bool(rows) and rows[0][0] == 0

        # the bot's own cost when nothing arrives (its loops), over a few seconds
        cpu0, t0 = run.cpu(), time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)
        idle = (run.cpu() - cpu0) / (time.monotonic() - t0)
        result["idle_cpu_per_s"] = idle

        # life: every case through its life, all cases at once
        driver = Driver(run, api, seed)
        specs = workload(size, seed)
        run.profiler(True)
        cpu0, bench0, t0 = run.cpu(), time.process_time(), time.monotonic()
        await asyncio.gather(*(driver.life(s) for s in specs))
        last = max((p.t1 for p in driver.pendings if p.t1 is not None), default=t0)
        settled = await _until(quiet, 120)
        cpu = run.cpu() - cpu0
        idle_share = idle * (time.monotonic() - t0)
        updates = len(driver.pendings)
        life = {"updates": updates, "cases": len(specs), "wall_s": last - t0,
                "rate": updates / (last - t0) if last > t0 else None,
                "cpu_s": cpu, "cpu_ms_per_update": cpu / updates * 1000 if updates else None,
                "cpu_ms_per_update_net": max(cpu - idle_share, 0) / updates * 1000
                if updates else None,
                "bench_cpu_s": time.process_time() - bench0, "sends": api.sends,
                "failures": driver.failures[:5], "failed": len(driver.failures),
                "settled": settled, **_stats(driver.pendings)}
        kinds = defaultdict(list)
        for p in driver.pendings:
            kinds[p.kind].append(p)
        life["by_kind"] = {k: {"n": len(v), **_stats(v)} for k, v in sorted(kinds.items())}
        result["life"] = life

        # burst: reports at once, how fast they become cases
        count = size["burst"]
        before = 0
        if reader is not None:
            before = int((await reader.look("SELECT count(*) FROM cases"))[0][0])
        cpu0, t0 = run.cpu(), time.monotonic()
        pendings = await driver.burst(count, size["grids"])

        async def filed() -> bool:
            if reader is None:
                return all(p.t1 is not None for p in pendings)
            rows = await reader.look("SELECT count(*) FROM cases")
            return bool(rows) and rows[0][0] >= before + count

        done = await _until(filed, 300)
        wall = time.monotonic() - t0
        cpu_handled = run.cpu() - cpu0
        await _until(quiet, 300)
        cpu = run.cpu() - cpu0
        run.profiler(False)
        if target.profile is not None:
            await _until(lambda: _true(target.profile is not None and target.profile.exists()
                                       and target.profile.stat().st_size > 0), 30)
        result["burst"] = {"updates": count, "done": done, "wall_s": wall,
                           "rate": count / wall if done else None,
                           "cpu_s_handling": cpu_handled, "cpu_s": cpu,
                           "cpu_ms_per_update": cpu / count * 1000, **_stats(pendings)}
    finally:
        await run.stop()
        await api.stop()
        if reader is not None:
            await reader.close()
    return result


# --- SQL statements and transactions per update kind --------------------------------------

async def sql_counts(tmp: Path) -> list[dict[str, Any]]:
    """One update of each kind through the production path in tests.harness (store in the
    inbox, process it, deliver what it owes), with the statements and transactions of each
    part counted."""
    from sqlalchemy import event

    from bot.app import _inbox
    from bot.telegram.inbox import store
    from tests.harness import BUILDING_CHAT, HEAD, LEADER, RESIDENT, RESIDENT2, make_harness

    h = await make_harness(tmp)
    counts = {"sql": 0, "commit": 0, "rollback": 0}
    shapes: list[str] = []

    def on_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counts["sql"] += 1
        shapes.append(_shape(statement))

    def on_commit(*_: Any) -> None:
        counts["commit"] += 1

    def on_rollback(*_: Any) -> None:
        counts["rollback"] += 1

    sync = h.app.engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_sql)
    event.listen(sync, "commit", on_commit)
    event.listen(sync, "rollback", on_rollback)
    inbox = _inbox(h.app)
    rows: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def counted(into: dict[str, Any], part: str) -> Iterator[None]:
        before, first, t0 = dict(counts), len(shapes), time.perf_counter()
        yield
        into[f"{part}_ms"] = (time.perf_counter() - t0) * 1000
        into[f"{part}_statements"] = dict(Counter(shapes[first:]).most_common())
        into[f"{part}_sql"] = counts["sql"] - before["sql"]
        into[f"{part}_tx"] = counts["commit"] - before["commit"] + \
            counts["rollback"] - before["rollback"]

    async def one(kind: str, update: dict[str, Any]) -> None:
        row: dict[str, Any] = {"kind": kind}
        with counted(row, "store"):
            await store(h.app.sessions, [update], h.clock.now())
        with counted(row, "handle"):
            await inbox.process_pending()
        with counted(row, "deliver"):
            row["sent"] = await h.deliver()
        row["total_sql"] = row["store_sql"] + row["handle_sql"] + row["deliver_sql"]
        row["total_tx"] = row["store_tx"] + row["handle_tx"] + row["deliver_tx"]
        rows.append(row)

    u = h.updates
    try:
        await one("group report (text)",
                  u.message(BUILDING_CHAT, RESIDENT, "/report 3单元楼道灯坏了"))
        await one("group report (photo)",
                  u.message(BUILDING_CHAT, RESIDENT2, photo="ph1",
                            caption="/report 楼下垃圾没人清运"))
        case_id = (await h.cases())[-1].id
        card = h.card(HEAD, case_id)
        await one("verify 属实 (head)",
                  u.callback(HEAD, Driver.button(_msg(card), f"c1:vc:{case_id}:", ""), card))
        card = h.card(LEADER, case_id)
        await one("accept 受理 (leader)",
                  u.callback(LEADER, Driver.button(_msg(card), f"c1:ac:{case_id}:", ""), card))
        card = h.card(LEADER, case_id)
        await one("resolve 办结 (leader)",
                  u.callback(LEADER, Driver.button(_msg(card), f"c1:rs:{case_id}:", ""), card))
        await one("result text (leader)", u.message(LEADER, LEADER, "已更换灯泡"))
        preview = h.last(LEADER)
        await one("result 提交 (leader)", u.callback(LEADER, "pr:ok", preview))
        card = h.card(RESIDENT2, case_id)
        data = next(d for d in _msg(card).data if d.startswith(f"c1:rt:{case_id}:")
                    and d.endswith(":good"))
        await one("rate 满意 (reporter)", u.callback(RESIDENT2, data, card))
        me = 5550077
        await one("private /report", u.message(me, me, "/report 路灯不亮"))
        for label, kind in (("rf:b:", "flow: building"), ("rf:c:", "flow: category"),
                            ("rf:next", "flow: skip photos")):
            prompt = h.last(me)
            data = next(d for d in _msg(prompt).data if d.startswith(label))
            await one(kind, u.callback(me, data, prompt))
        await one("flow: skip location", u.message(me, me, "跳过"))
        prompt = h.last(me)
        await one("flow: 提交", u.callback(me, "rf:ok", prompt))
    finally:
        await h.app.close()
    return rows


def _shape(statement: str) -> str:
    """A statement reduced to its verb and table(s), to count repeats: `SELECT … FROM nodes
    WHERE nodes.id = ?` and the same with other values are one shape."""
    words = " ".join(statement.split())
    verb = words.split(" ", 1)[0].upper()
    tables = re.findall(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+\"?(\w+)", words, re.IGNORECASE)
    where = re.search(r"\bWHERE\s+(.{0,60})", words, re.IGNORECASE)
    tail = f" WHERE {where.group(1)}" if where else ""
    return f"{verb} {','.join(dict.fromkeys(tables))}{tail}"[:110]


def _msg(sent: Any) -> Msg:
    return Msg(sent.chat_id, sent.message_id, sent.text,
               [str(b["callback_data"]) for r in sent.buttons for b in r
                if b.get("callback_data")], 0)


# --- PostgreSQL ----------------------------------------------------------------------------

async def fresh(url: str) -> None:
    """Empty the server database (the bot makes the schema at start)."""
    from tests.harness import empty_database
    await empty_database(url)


# --- the run ---------------------------------------------------------------------------------

def targets(args: Any, tmp: Path) -> list[Target]:
    sqlite = f"sqlite+aiosqlite:///{tmp}/gridbot.db"
    out = [Target("floor polling", "floor", "run"),
           Target("floor webhook", "floor", "webhook"),
           Target("gridbot run · SQLite", "gridbot", "run", sqlite),
           Target("gridbot webhook · SQLite", "gridbot", "webhook", sqlite)]
    if args.database_url:
        pg = args.database_url
        out += [Target("gridbot run · PostgreSQL", "gridbot", "run", pg),
                Target("gridbot webhook · PostgreSQL", "gridbot", "webhook", pg),
                Target("gridbot webhook · PostgreSQL ×2", "gridbot", "webhook", pg, workers=2)]
    if args.only:
        out = [t for t in out if any(o.lower() in t.name.lower() for o in args.only)]
    if args.profile:  # a run of its own: the profiler's overhead stays out of the numbers above
        out.append(Target("gridbot run · SQLite (profiled)", "gridbot", "run", sqlite,
                          profile=tmp / "profile.txt"))
    return out


async def main_async(args: Any) -> dict[str, Any]:
    size = SIZES[args.size]
    results: list[dict[str, Any]] = []
    sql: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as top:
        for n, target in enumerate(targets(args, Path(top))):
            tmp = Path(top) / f"t{n}"
            tmp.mkdir()
            if target.database_url and target.database_url.startswith("sqlite"):
                target.database_url = f"sqlite+aiosqlite:///{tmp}/gridbot.db"
            elif target.database_url:
                await fresh(target.database_url)
            print(f"… {target.name}", file=sys.stderr, flush=True)
            results.append(await measure(target, size, args.seed, tmp))
            if target.profile is not None and target.profile.exists():
                text = target.profile.read_text()
                results[-1]["profile_top"] = profile_top(text)
                if args.json_path:  # the whole profile (call tree too), next to the results
                    Path(f"{args.json_path}.profile.txt").write_text(text, encoding="utf-8")
        if args.sql:
            sql_tmp = Path(top) / "sql"
            sql_tmp.mkdir()
            sql = await sql_counts(sql_tmp)
    from tests.harness import server_database
    return {"sql_database": "PostgreSQL" if server_database() else "SQLite",
            "size": args.size, "sizes": size, "seed": args.seed, "machine": machine(),
            "results": results, "sql": sql}


SELF_MARK = "=== by own time (every frame) ==="
TOTAL_MARK = "=== by total time (library frames folded) ==="
TREE_MARK = "=== call tree ==="


def profile_top(text: str, lines: int = 25) -> list[str]:
    """The top functions by own time and by total time, from the child's profile file."""
    out: list[str] = []
    section: list[str] = []
    for ln in text.splitlines():
        if ln in (SELF_MARK, TOTAL_MARK, TREE_MARK):
            if section:
                out += section[:lines + 1]
            section = [ln] if ln != TREE_MARK else []
            if ln == TREE_MARK:
                break
        elif section and re.match(r"^\s*\d+\.\d+ ", ln) and "epoll.poll" not in ln:
            section.append(ln.rstrip())
    return out


def summary(data: dict[str, Any]) -> str:
    res = data["results"]
    floor = {r["mode"]: r for r in res if r["bot"] == "floor"}
    rows = []
    for r in res:
        base = floor.get(r["mode"])
        life, burst = r["life"], r["burst"]
        ratio = None
        if base and base["life"]["cpu_ms_per_update_net"] and life["cpu_ms_per_update_net"]:
            ratio = life["cpu_ms_per_update_net"] / base["life"]["cpu_ms_per_update_net"]
        r["cost_ratio"] = ratio
        rows.append({
            "target": r["target"], "updates": life["updates"],
            "upd/s": life["rate"], "p50 ms": life["p50_ms"], "p99 ms": life["p99_ms"],
            "CPU ms/upd": life["cpu_ms_per_update"],
            "net of idle": life["cpu_ms_per_update_net"],
            "× floor CPU": ratio, "≤3×": goal_met(ratio, 3.0) if r["bot"] == "gridbot" else None,
            "burst upd/s": burst["rate"], "burst p50 ms": burst["p50_ms"],
            "burst CPU ms/upd": burst["cpu_ms_per_update"],
            "failed": life["failed"],
        })
    headers = ["target", "updates", "upd/s", "p50 ms", "p99 ms", "CPU ms/upd", "net of idle",
               "× floor CPU",
               "≤3×", "burst upd/s", "burst p50 ms", "burst CPU ms/upd", "failed"]
    parts = [markdown_table(rows, headers)]
    one = next((r for r in res if r["target"] == "gridbot webhook · PostgreSQL"), None)
    two = next((r for r in res if r["target"] == "gridbot webhook · PostgreSQL ×2"), None)
    if one and two and one["burst"]["rate"] and two["burst"]["rate"]:
        scale = two["burst"]["rate"] / one["burst"]["rate"]
        data["two_worker_scale"] = scale
        parts.append("")
        parts.append(markdown_table([{
            "measure": "two webhook workers on PostgreSQL ÷ one (burst rate)",
            "measured": f"{scale:.2f}×", "goal": "≥ 1.6×", "met": goal_met(scale, 1.6,
                                                                           at_most=False)}],
            ["measure", "measured", "goal", "met"]))
    kinds = []
    for r in res:
        for kind, s in r["life"]["by_kind"].items():
            kinds.append({"target": r["target"], "kind": kind, "n": s["n"],
                          "p50 ms": s["p50_ms"], "p99 ms": s["p99_ms"]})
    parts += ["", "Latency by update kind (life phase):", "",
              markdown_table(kinds, ["target", "kind", "n", "p50 ms", "p99 ms"])]
    if data["sql"]:
        heads = ["kind", "store_sql", "store_tx", "handle_sql", "handle_tx", "deliver_sql",
                 "deliver_tx", "sent", "total_sql", "total_tx"]
        heads += ["handle_ms", "deliver_ms"]
        parts += ["", "SQL statements and transactions per update (one of each through inbox "
                  "store → processing → delivery, tests.harness, in-process, "
                  f"{data.get('sql_database', 'SQLite')}; `deliver` ends with one empty pass):",
                  "", markdown_table(data["sql"], heads)]
        first = data["sql"][0]
        for part in ("handle", "deliver"):
            shapes = [{"n": n, "statement": shape}
                      for shape, n in first[f"{part}_statements"].items()]
            parts += ["", f"Statements of one {first['kind']}, {part}:", "",
                      markdown_table(shapes, ["n", "statement"])]
    return "\n".join(parts)


def child_profile(out: str, argv: list[str]) -> int:
    """`gridbot` (argv) under pyinstrument, sampling only between SIGUSR1 and SIGUSR2, so the
    profile shows the load and not the start-up. Writes the call tree and the flat list of
    functions by their own time to `out`."""
    from pyinstrument import Profiler

    from bot.cli import main as gridbot

    prof = Profiler(interval=0.001, async_mode="disabled")

    def start(*_: Any) -> None:
        if not prof.is_running:
            prof.start()

    def stop(*_: Any) -> None:
        if prof.is_running:
            prof.stop()
            own = prof.output_text(unicode=True, flat=True, show_all=True)
            total = prof.output_text(unicode=True, flat=True, flat_time="total")
            tree = prof.output_text(unicode=True)
            Path(out).write_text(f"{SELF_MARK}\n{own}\n{TOTAL_MARK}\n{total}\n{TREE_MARK}\n"
                                 f"{tree}", encoding="utf-8")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    try:
        return gridbot(argv)
    finally:
        stop()


def main(argv: list[str] | None = None) -> None:
    ap = base_parser(__doc__.splitlines()[0] if __doc__ else "intake")
    ap.add_argument("--only", action="append", default=[],
                    help="run only targets whose name contains this (repeatable)")
    ap.add_argument("--profile", action="store_true",
                    help="profile `gridbot run` on SQLite with pyinstrument")
    ap.add_argument("--no-sql", dest="sql", action="store_false",
                    help="skip counting SQL statements per update kind")
    args = ap.parse_args(argv)
    data = asyncio.run(main_async(args))
    notes = ["Latency: push (polling) or POST (webhook) → the bot's answer at the fake Bot API. "
             "CPU: utime+stime of the bot process(es) until their outbox is empty; "
             "'net of idle' takes off what the process burns idle (its loops) over the same "
             "time, and the × floor ratio is of those. "
             "Gridbot paces its answers to Telegram's limits (1/s per chat, 25/s overall); "
             "the floor does not."]
    for r in data["results"]:
        if r.get("profile_top"):
            notes += ["", f"Profile of {r['target']} (pyinstrument, top):", "```",
                      *r["profile_top"], "```"]
    report(f"Intake vs the framework floor ({args.size})", summary(data), notes,
           data["machine"])
    write_json(args.json_path, data)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child-profile"]:
        sys.exit(child_profile(sys.argv[2], sys.argv[3:]))
    main()
