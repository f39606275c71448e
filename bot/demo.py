"""`gridbot demo`: one case from report to rating, offline, as each person saw it.

The real Dispatcher, domain and outbox run against the in-process fake Bot API and a clock
the demo moves by hand, on a throwaway SQLite database loaded with the sample registry.
"""

from __future__ import annotations

import html
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from bot.app import App, build_app
from bot.cases.registry_edit import apply_registry
from bot.clock import ManualClock
from bot.config import Settings
from bot.ledger import digest
from bot.org.registry import parse_registry
from bot.telegram.fake import FakeTelegram, Sent, Updates
from bot.telegram.ratelimit import Limits
from storage.models import Case, Node, Person

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "registry.yaml"
START = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # 09:30 in Shanghai, a Monday
RESIDENT, RESIDENT_NAME = 5550001, "居民小王"
HEAD, LEADER = 930103, 920001
MEMBER = 920002  # 网格员乙, who patrols the grid
BUILDING_CHAT = -1009200000103


def plain(text: str) -> str:
    """Telegram HTML as a terminal shows it."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


SWEEP_EVERY = timedelta(minutes=30)


class Demo:
    def __init__(self, app: App, api: FakeTelegram, clock: ManualClock, out: TextIO) -> None:
        self.app, self.api, self.clock, self.out = app, api, clock, out
        self.updates = Updates()
        self.names: dict[int, str] = {RESIDENT: RESIDENT_NAME}
        self.seen = 0

    async def load_names(self) -> None:
        async with self.app.sessions() as db:
            for person in (await db.scalars(select(Person))).all():
                self.names.setdefault(person.id, person.name)
            for node in (await db.scalars(select(Node).where(Node.chat_id.is_not(None)))).all():
                assert node.chat_id is not None
                self.names[node.chat_id] = f"{node.name}群"

    def where(self, chat_id: int) -> str:
        if chat_id > 0:
            return f"{self.names.get(chat_id, chat_id)}（私聊）"
        return self.names.get(chat_id, str(chat_id))

    def stamp(self) -> str:
        return self.app.ctx.texts.with_timezone("Asia/Shanghai").local_time(
            self.clock.now(), "%m-%d %H:%M")

    def say(self, line: str) -> None:
        print(line, file=self.out)

    async def step(self, who: int, chat: int, what: str, update: dict[str, Any]) -> None:
        self.say(f"\n[{self.stamp()}] {self.names.get(who, who)} 在 {self.where(chat)}：{what}")
        await self.app.dp.feed_raw_update(self.app.bot, update)
        await self.flush()

    async def flush(self) -> None:
        while await self.app.delivery.flush():
            pass
        for sent in self.api.sent[self.seen:]:
            self.show(sent)
        self.seen = len(self.api.sent)

    def show(self, sent: Sent) -> None:
        if not sent.text and sent.photos:
            self.say(f"    → {self.where(sent.chat_id)} 收到照片 {', '.join(sent.photos)}")
            return
        body = plain(sent.text).replace("\n", "\n      ")
        photo = f"［附照片 {', '.join(sent.photos)}］" if sent.photos else ""
        self.say(f"    → {self.where(sent.chat_id)} 看到：{photo}\n      {body}")
        if sent.labels:
            self.say("      " + " ".join(f"[{label}]" for label in sent.labels))

    def card(self, chat_id: int) -> Sent:
        return next(s for s in reversed(self.api.to(chat_id)) if s.buttons)

    async def press(self, who: int, sent: Sent, label: str) -> None:
        update = self.updates.callback(who, sent.button_data(label), sent,
                                       name=self.names.get(who, ""))
        await self.step(who, sent.chat_id, f"点击「{label}」", update)
        for call in self.api.calls[-3:]:
            text = getattr(call, "text", None)
            if type(call).__name__ == "AnswerCallbackQuery" and text:
                self.say(f"    ← 提示：{text}")

    async def message(self, who: int, chat: int, text: str | None = None,
                      **kwargs: Any) -> None:
        update = self.updates.message(chat, who, text, name=self.names.get(who, ""), **kwargs)
        shown = text or ("［位置］" if kwargs.get("location") else
                         f"［照片］{kwargs.get('caption') or ''}")
        await self.step(who, chat, shown, update)

    async def wait(self, delta: timedelta, why: str) -> None:
        """Time passes with the bot running: the sweep every `SWEEP_EVERY`, and what it sends
        shown at the moment it went (the daily digest at 08:30, reminders when due)."""
        hours = int(delta.total_seconds() // 3600)
        self.say(f"\n… {hours} 小时过去（{why}），定时巡检每 30 分钟运行一次")
        end = self.clock.now() + delta
        while self.clock.now() < end:
            self.clock.advance(min(SWEEP_EVERY, end - self.clock.now()))
            await self.app.sweep()
            while await self.app.delivery.flush():
                pass
            if len(self.api.sent) > self.seen:
                self.say(f"\n[{self.stamp()}] 定时巡检：")
                await self.flush()


async def run_demo(out: TextIO) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp}/demo.db",
                            bot_token=None, _env_file=None)
        api, clock = FakeTelegram(), ManualClock(START)
        app = await build_app(settings, clock=clock, session=api, limits=Limits.unlimited())
        try:
            await app.identify()
            async with app.sessions() as db:
                await apply_registry(db, parse_registry(SAMPLE.read_text("utf-8")), clock)
            # The story of one case: the daily digests of those days would fill the screen.
            app.ctx.extra[digest.OFF] = True
            demo = Demo(app, api, clock, out)
            await demo.load_names()
            await play(demo)
        finally:
            await app.close()


async def play(d: Demo) -> None:
    d.say("Gridbot 演示：一件诉求从反映到回访（离线，模拟 Telegram）")
    await d.message(RESIDENT, BUILDING_CHAT, photo="photo-corridor-light",
                    caption="/report 3单元4楼楼道灯坏了一周，晚上上下楼很危险")
    await d.press(HEAD, d.card(HEAD), "✅ 属实")
    await d.press(LEADER, d.card(LEADER), "受理")
    await d.wait(timedelta(hours=54), "已过办理时限的 75%")
    # The reminder list names the case: its number opens the card.
    await d.press(LEADER, d.card(LEADER), "🟡 #1")
    await d.press(LEADER, d.card(LEADER), "办结")
    await d.message(LEADER, LEADER, "已联系物业更换4楼楼道灯泡，经现场查看照明恢复正常")
    await d.press(LEADER, d.card(LEADER), "提交办结")
    await d.press(RESIDENT, d.card(RESIDENT), "满意")
    async with d.app.sessions() as db:
        case = await db.get(Case, 1)
        assert case is not None
        d.say(f"\n诉求 #{case.id} 最终状态：{d.app.ctx.texts.label('status_' + case.status)}，"
              f"评价：{d.app.ctx.texts.label('rating_' + (case.rating or 'good'))}")
    await patrol(d)


async def patrol(d: Demo) -> None:
    """One patrol (巡查) that finds a problem: filed at once, no head's verification."""
    d.say("\n—— 网格员巡查，发现问题当场上报 ——")
    await d.message(MEMBER, MEMBER, "/patrol")
    await d.press(MEMBER, d.card(MEMBER), "🚶 开始巡查")
    panel = d.card(MEMBER)
    d.clock.advance(timedelta(minutes=20))
    await d.message(MEMBER, MEMBER, location=(31.8059, 117.3002))
    await d.message(MEMBER, MEMBER, photo="photo-manhole")
    await d.press(MEMBER, panel, "⚠️ 发现问题")
    await d.message(MEMBER, MEMBER, "5号楼门口井盖松动，踩上去会晃，容易绊倒")
    await d.press(MEMBER, d.card(MEMBER), "提交")
    # The sample registry gives its buildings no points: the building is chosen.
    await d.press(MEMBER, d.card(MEMBER), "5号楼")
    d.clock.advance(timedelta(minutes=25))
    await d.press(MEMBER, d.card(MEMBER), "🏁 结束巡查")
