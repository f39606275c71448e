"""Voice reports: a voice or video note stands for the description, privately or as a reply
to the bot's prompt in a group; staff get the note itself after the card, by its file_id."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import openpyxl
from sqlalchemy import select

from bot.ledger.export import write_ledger
from bot.ledger.figures import Period
from bot.telegram.delivery import Part, plan
from bot.telegram.fake import Sent
from storage.models import Outbox
from tests.harness import BUILDING_CHAT, HEAD, LEADER, MORNING, RESIDENT, WORK_CHAT, Harness


def voice(file_id: str = "vf-1", seconds: int = 42) -> dict[str, Any]:
    return {"voice": {"file_id": file_id, "file_unique_id": f"u-{file_id}",
                      "duration": seconds, "mime_type": "audio/ogg"}}


def video_note(file_id: str = "vn-1", seconds: int = 15) -> dict[str, Any]:
    return {"video_note": {"file_id": file_id, "file_unique_id": f"u-{file_id}",
                           "length": 240, "duration": seconds}}


async def to_description(h: Harness) -> None:
    """/start, the building, the category: the flow asks for the description."""
    await h.private(RESIDENT, "/start")
    await h.press(RESIDENT, h.last(RESIDENT), "柏树郢社区 3号楼")
    await h.press(RESIDENT, h.last(RESIDENT), "环境卫生")
    assert "语音" in h.last(RESIDENT).text  # the question says a voice will do


async def finish(h: Harness, ask_photos: Sent) -> Sent:
    """No photo, no location; returns the summary, then submits."""
    await h.press(RESIDENT, ask_photos, "下一步")
    await h.private(RESIDENT, "跳过")
    summary = h.last(RESIDENT)
    await h.press(RESIDENT, summary, "提交")
    return summary


def after_card(h: Harness, chat: int, case_id: int) -> Sent:
    """The message sent to `chat` right after the case's latest card."""
    sent = h.api.to(chat)
    card = h.card(chat, case_id)
    return sent[sent.index(card) + 1]


def voices_to(h: Harness, chat: int) -> list[str | None]:
    return [s.voice for s in h.api.to(chat) if s.voice_kind is not None]


async def test_private_voice_report_goes_to_staff_with_its_voice(h: Harness) -> None:
    await to_description(h)
    await h.private(RESIDENT, extra=voice())
    assert "已收到语音（0:42）" in h.texts(RESIDENT)[-2]
    summary = await finish(h, h.last(RESIDENT))
    assert "🎤 语音 0:42" in summary.text
    [case] = await h.cases()
    assert (case.voice_file_id, case.voice_kind, case.voice_seconds) == ("vf-1", "voice", 42)
    assert case.description == "" and case.status == "verifying"
    # The building head's verify card says 语音 and its length, and the voice follows it.
    card = h.card(HEAD, case.id)
    assert "内容：🎤 语音 0:42" in card.text
    follow = after_card(h, HEAD, case.id)
    assert (follow.voice, follow.voice_kind, follow.buttons) == ("vf-1", "voice", [])
    await h.press(HEAD, card, "✅ 属实")
    card = h.card(LEADER, case.id)
    assert "新诉求" in card.text and "🎤 语音 0:42" in card.text
    assert after_card(h, LEADER, case.id).voice == "vf-1"
    # The reporter's receipt and every group get no voice.
    assert voices_to(h, RESIDENT) == [] and voices_to(h, BUILDING_CHAT) == []
    # /case shows it too.
    await h.private(LEADER, f"/case {case.id}")
    assert "🎤 语音 0:42" in h.last(LEADER).text


async def test_voice_then_typed_text_keeps_both(h: Harness) -> None:
    await to_description(h)
    await h.private(RESIDENT, extra=voice(seconds=75))
    ask_photos = h.last(RESIDENT)
    await h.private(RESIDENT, "3单元门口垃圾堆了三天")
    assert "已补充文字说明" in h.last(RESIDENT).text
    summary = await finish(h, ask_photos)
    assert "🎤 语音 1:15" in summary.text and "垃圾堆了三天" in summary.text
    [case] = await h.cases()
    assert case.description == "3单元门口垃圾堆了三天" and case.voice_file_id == "vf-1"
    card = h.card(HEAD, case.id)
    assert "🎤 语音 1:15\n3单元门口垃圾堆了三天" in card.text
    assert after_card(h, HEAD, case.id).voice == "vf-1"


async def test_voice_with_caption_and_photo(h: Harness) -> None:
    """A caption on the voice is its text; a photo too: photos, card, voice, in that order."""
    await to_description(h)
    await h.private(RESIDENT, extra={**voice(), "caption": "楼下垃圾"})
    ask_photos = h.last(RESIDENT)
    await h.private(RESIDENT, photo="p1")
    await finish(h, ask_photos)
    [case] = await h.cases()
    assert case.description == "楼下垃圾" and case.voice_seconds == 42
    sent = h.api.to(HEAD)
    card = h.card(HEAD, case.id)
    i = sent.index(card)
    assert sent[i - 1].photos == ["p1"] and not sent[i - 1].text  # the photo alone, first
    assert sent[i + 1].voice == "vf-1"


async def test_video_note_report(h: Harness) -> None:
    await to_description(h)
    await h.private(RESIDENT, extra=video_note())
    assert "已收到视频留言（0:15）" in h.texts(RESIDENT)[-2]
    await finish(h, h.last(RESIDENT))
    [case] = await h.cases()
    assert (case.voice_kind, case.voice_seconds) == ("video_note", 15)
    assert "📹 视频留言 0:15" in h.card(HEAD, case.id).text
    follow = after_card(h, HEAD, case.id)
    assert (follow.voice, follow.voice_kind) == ("vn-1", "video_note")


async def test_empty_and_over_long_voices_are_refused_politely(h: Harness) -> None:
    await to_description(h)
    await h.private(RESIDENT, extra=voice(seconds=0))
    assert "没有录到声音" in h.last(RESIDENT).text
    await h.private(RESIDENT, extra=voice(seconds=301))
    assert "不超过 5 分钟" in h.last(RESIDENT).text
    # Still at the description: a good one goes on.
    await h.private(RESIDENT, extra=voice(seconds=300))
    await finish(h, h.last(RESIDENT))
    [case] = await h.cases()
    assert case.voice_seconds == 300


async def test_voice_in_the_wrong_step_gets_that_steps_hint(h: Harness) -> None:
    await h.private(RESIDENT, "/start")
    await h.private(RESIDENT, extra=voice())  # the building step
    assert "请点击上方按钮" in h.last(RESIDENT).text
    await h.press(RESIDENT, h.api.to(RESIDENT)[-2], "柏树郢社区 3号楼")
    await h.private(RESIDENT, extra=voice())  # the category step
    assert "请点击上方按钮" in h.last(RESIDENT).text
    await h.press(RESIDENT, h.api.to(RESIDENT)[-2], "环境卫生")
    await h.private(RESIDENT, "垃圾没人收")
    ask_photos = h.last(RESIDENT)
    await h.private(RESIDENT, extra=voice())  # the photos step, the text given already
    assert "请发送照片" in h.last(RESIDENT).text
    summary = await finish(h, ask_photos)
    assert "语音" not in summary.text
    [case] = await h.cases()
    assert case.voice_file_id is None and case.description == "垃圾没人收"


async def test_group_voice_reply_to_the_prompt_is_a_report(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    prompt = h.last(BUILDING_CHAT)
    msg = await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(prompt),
                      extra=voice("gv-1", 9))
    [case] = await h.cases()
    assert (case.voice_file_id, case.voice_seconds, case.description) == ("gv-1", 9, "")
    assert case.source_message_id == msg["message_id"] and case.category == "other"
    ack = h.last(BUILDING_CHAT)
    assert f"#{case.id}" in ack.text and ack.voice is None
    assert voices_to(h, BUILDING_CHAT) == []  # never reposted to the residents
    assert "🎤 语音 0:09" in h.card(HEAD, case.id).text
    assert after_card(h, HEAD, case.id).voice == "gv-1"


async def test_group_voice_too_long_or_not_a_reply(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    prompt = h.last(BUILDING_CHAT)
    await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(prompt),
                extra=voice(seconds=900))
    assert "不超过 5 分钟" in h.last(BUILDING_CHAT).text
    await h.say(BUILDING_CHAT, RESIDENT, extra=voice())  # no reply: chatter (privacy mode)
    assert await h.cases() == []


async def test_card_falls_back_to_the_work_chat_with_its_voice(h: Harness) -> None:
    """A grid leader who never started the bot: the card and its voice go to the grid's
    work chat (staff), not to a residents' group."""
    h.api.forbid(LEADER)
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(h.last(BUILDING_CHAT)),
                extra=voice("gv-2", 20))
    [case] = await h.cases()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    assert after_card(h, WORK_CHAT, case.id).voice == "gv-2"
    assert voices_to(h, BUILDING_CHAT) == []


async def _leader_row(h: Harness) -> Outbox:
    async with h.app.sessions() as db:
        row = await db.scalar(select(Outbox).where(Outbox.chat_id == LEADER)
                              .order_by(Outbox.id.desc()))
        assert row is not None
        return row


async def test_voice_part_resumes_without_repeating_the_card(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(h.last(BUILDING_CHAT)),
                extra=voice("gv-3", 30))
    [case] = await h.cases()
    h.api.fail_next_call("sendVoice", 500, "Internal Server Error")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    cards = [s for s in h.api.to(LEADER) if f"#{case.id}" in s.text]
    assert len(cards) == 1 and voices_to(h, LEADER) == []
    row = await _leader_row(h)
    assert (row.status, row.parts_done) == ("pending", 1)
    await h.advance(timedelta(minutes=1))
    assert len([s for s in h.api.to(LEADER) if f"#{case.id}" in s.text]) == 1
    assert voices_to(h, LEADER) == ["gv-3"]
    row = await _leader_row(h)
    assert row.status == "sent" and row.sent_message_id == cards[0].message_id


async def test_voice_refused_leaves_the_card_sent(h: Harness) -> None:
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(h.last(BUILDING_CHAT)),
                extra=voice("gv-4", 30))
    [case] = await h.cases()
    h.api.fail_next_call("sendVoice", 400, "Bad Request: VOICE_MESSAGES_FORBIDDEN")
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    assert "🎤 语音 0:30" in h.card(LEADER, case.id).text
    assert voices_to(h, LEADER) == []
    row = await _leader_row(h)
    assert row.status == "sent" and row.photos == []


def _row(photos: list[Any], text: str = "card", parts_done: int = 0) -> Outbox:
    return Outbox(id=1, dedupe_key="k", chat_id=5, text=text, photos=photos, buttons=[],
                  parts_done=parts_done, upload_kind=None,
                  created_at=datetime(2025, 1, 1, tzinfo=UTC))


def test_plan_puts_the_voice_after_the_card() -> None:
    assert plan(_row([{"voice": "v"}])) == [
        Part("text", text="card", markup=True), Part("voice", ("v",), media="voice")]
    # One photo and a short text would be a captioned photo; with a voice they go apart, so
    # a row resumed after the card cannot mistake which part went out.
    parts = plan(_row(["p1", {"video_note": "n"}]))
    assert [p.kind for p in parts] == ["photos", "text", "voice"]
    assert plan(_row(["p1", {"video_note": "n"}], parts_done=2)) == parts
    assert [p.kind for p in plan(_row(["p1"]))] == ["captioned"]


async def test_a_department_called_in_gets_the_voice_with_its_card(h: Harness) -> None:
    from tests.harness import POLICE
    from tests.workflow.test_whistles import blow

    await to_description(h)
    await h.private(RESIDENT, extra=voice("vf-dept", 30))
    await finish(h, h.last(RESIDENT))
    [case] = await h.cases()
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await blow(h, await h.case(case.id))
    card = h.card(POLICE, case.id)
    assert "🎤 语音 0:30" in card.text
    assert after_card(h, POLICE, case.id).voice == "vf-dept"


async def test_ledger_reads_a_voice_only_report_as_its_length(h: Harness) -> None:
    """台账: a report that was only spoken is 🎤 语音 0:30 in its description cell, not empty."""
    await h.say(BUILDING_CHAT, RESIDENT, "/report")
    await h.say(BUILDING_CHAT, RESIDENT, reply_to=h.updates.bot_message(h.last(BUILDING_CHAT)),
                extra=voice("gv-9", 30))
    [case] = await h.cases()
    out = io.BytesIO()
    async with h.app.sessions() as db:
        await write_ledger(db, Period.month_of(MORNING, "Asia/Shanghai"), None, out, "xlsx",
                           now=MORNING + timedelta(hours=1))
    sheet = openpyxl.load_workbook(io.BytesIO(out.getvalue())).worksheets[0]
    [row] = list(sheet.iter_rows(min_row=2, values_only=True))
    assert row[0] == f"#{case.id}" and row[5] == "🎤 语音 0:30"
