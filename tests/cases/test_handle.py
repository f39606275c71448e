"""Verify, route, handle, resolve, rate: the loop after a report, through the real Dispatcher."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from storage.models import Case, CaseEvent, CaseTimerStep, Reminder
from tests.harness import (
    BUILDING_CHAT,
    COMMUNITY_SUP,
    HEAD,
    HEAD5,
    LEADER,
    LEADER2,
    MEMBER,
    RESIDENT,
    RESIDENT2,
    STRANGER,
    STREET_SUP,
    UNIT_CHAT,
    WORK_CHAT,
    Harness,
)


async def confirmed(h: Harness, text: str = "楼道灯坏了") -> Case:
    case = await h.report_in_group(text)
    await h.press(HEAD, h.card(HEAD, case.id), "✅ 属实")
    return await h.case(case.id)


async def resolve(h: Harness, user: int, case_id: int, result: str,
                  photos: tuple[str, ...] = ()) -> None:
    await h.press(user, h.card(user, case_id), "办结")
    assert "办理结果" in h.last(user).text
    for p in photos:
        await h.private(user, photo=p)
    await h.private(user, result)
    preview = h.last(user)
    assert result in preview.text
    await h.press(user, preview, "提交办结")


async def test_confirm_routes_to_grid_leader_with_card(h: Harness) -> None:
    case = await confirmed(h)
    assert case.status == "open" and case.verified == "confirmed"
    card = h.card(LEADER, case.id)
    assert "新诉求" in card.text and "user5550001" in card.text
    # The primary actions of a new case, the rest behind 更多 (issue 21); 延期, 挂账 and 吹哨
    # follow these, in the districts that have them.
    assert card.labels == ["受理", "交楼栋长", "办结", "更多"]
    assert (await h.all_labels(LEADER, card))[:5] == ["受理", "交楼栋长", "办结", "上报", "改类别"]
    # The head's card now shows no buttons for a case that moved on.
    assert await h.events(case.id) == ["report", "confirm"]


async def test_reject_asks_reason_and_tells_reporter(h: Harness) -> None:
    case = await h.report_in_group()
    await h.press(HEAD, h.card(HEAD, case.id), "❌ 不属实")
    assert "原因" in h.last(HEAD).text
    await h.private(HEAD, "   ")
    assert "文字" in h.last(HEAD).text
    await h.private(HEAD, "现场查看灯是好的")
    case = await h.case(case.id)
    assert case.status == "rejected" and case.reject_reason == "现场查看灯是好的"
    told = h.texts(RESIDENT)
    assert told and "现场查看灯是好的" in told[-1]
    assert h.texts(LEADER) == []


async def test_head_changes_category_and_deadline_follows(h: Harness) -> None:
    # A dispute no keyword catches (邻居装修噪音 would be filed as one already): "other".
    case = await h.report_in_group("隔壁天天半夜打麻将")
    assert case.category == "other"
    card = h.card(HEAD, case.id)
    await h.press(HEAD, card, "改类别")
    # The card now offers the categories; the fake records the edit, so build from data.
    from bot.cases.buttons import Action, CaseButton

    data = CaseButton(Action.SET_CATEGORY, case.id, case.rev, "dispute").pack()
    await h.press_data(HEAD, data)
    case = await h.case(case.id)
    assert case.category == "dispute"
    # A longer SLA does not lengthen the deadline: more time is 延期, approved above (issue
    # 19, defect 8; tests/cases/test_category_change.py).
    assert case.deadline_at - case.reported_at == timedelta(days=3)
    assert case.status == "verifying"


async def test_verify_timeout_goes_to_leader_unverified_and_tells_head(h: Harness) -> None:
    case = await h.report_in_group()
    await h.advance(timedelta(minutes=91))  # remind_at 0.75 of 2h
    assert "待您核实" in h.last(HEAD).text
    await h.advance(timedelta(minutes=30))
    case = await h.case(case.id)
    assert case.status == "open" and case.verified == "unverified"
    assert "未经楼栋长核实" in h.card(LEADER, case.id).text
    assert "超过核实时限" in h.last(HEAD).text
    # The head's old verify button is stale now.
    await h.feed(h.updates.callback(HEAD, f"c1:vc:{case.id}:1"))
    assert "已失效" in h.answers()[-1]
    assert (await h.case(case.id)).verified == "unverified"


async def test_building_without_head_goes_straight_to_leader(h: Harness) -> None:
    await h.say(-1009200000212, RESIDENT, "/report 12号楼门口积水")
    [case] = await h.cases()
    assert case.status == "open" and case.verified == "unverified"
    assert h.card(LEADER2, case.id)


async def test_accept_then_resolve_notifies_reporter_and_group(h: Harness) -> None:
    case = await confirmed(h, "楼道灯坏了，我的电话13812345678")
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    assert (await h.case(case.id)).status == "accepted"
    await resolve(h, LEADER, case.id, "已更换灯泡", photos=("after-1",))
    case = await h.case(case.id)
    assert case.status == "resolved" and case.result == "已更换灯泡"
    notice = h.last(RESIDENT)
    assert "已更换灯泡" in notice.text and notice.labels == ["满意", "基本满意", "不满意"]
    assert notice.photos == ["after-1"]
    public = h.last(BUILDING_CHAT)
    assert f"#{case.id}" in public.text and "已更换灯泡" in public.text
    assert "user5550001" not in public.text and "13812345678" not in public.text
    assert await h.events(case.id) == ["report", "confirm", "accept", "resolve"]


async def test_rating_good_closes_and_tells_resolver(h: Harness) -> None:
    case = await confirmed(h)
    await resolve(h, LEADER, case.id, "已修好")
    await h.press(RESIDENT, h.last(RESIDENT), "满意")
    case = await h.case(case.id)
    assert case.status == "closed" and case.rating == "good"
    assert "满意" in h.last(LEADER).text


async def test_rating_fair_closes(h: Harness) -> None:
    case = await confirmed(h)
    await resolve(h, LEADER, case.id, "已修好")
    await h.press(RESIDENT, h.last(RESIDENT), "基本满意")
    assert (await h.case(case.id)).rating == "fair"


async def test_unsatisfied_reopens_to_leader_with_comment(h: Harness) -> None:
    case = await confirmed(h)
    await resolve(h, LEADER, case.id, "已修好")
    notice = h.last(RESIDENT)
    await h.press(RESIDENT, notice, "不满意")
    await h.private(RESIDENT, "灯还是不亮")
    case = await h.case(case.id)
    assert case.status == "open" and case.rating == "bad" and case.round == 2
    card = h.card(LEADER, case.id)
    assert "重新办理" in card.text and "灯还是不亮" in card.text and "返工：1 次" in card.text
    # 不满意 is 返工, one kind of event with a failed check.
    assert (await h.events(case.id))[-1] == "rework"
    # Resolving the second round sends a fresh notice with fresh rating buttons.
    await resolve(h, LEADER, case.id, "更换了整条线路")
    await h.press(RESIDENT, h.last(RESIDENT), "满意")
    assert (await h.case(case.id)).status == "closed"


async def test_rating_timeout_closes_as_no_feedback(h: Harness) -> None:
    case = await confirmed(h)
    await resolve(h, LEADER, case.id, "已修好")
    await h.advance(timedelta(days=3, minutes=1))
    case = await h.case(case.id)
    assert case.status == "closed" and case.close_reason == "no_feedback"


async def test_assign_to_head_confirm_and_done(h: Harness) -> None:
    case = await confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "交楼栋长")
    task = h.card(HEAD, case.id)
    assert "交办任务" in task.text and task.labels == ["收到", "已完成"]
    await h.press(HEAD, task, "收到")
    assert (await h.case(case.id)).assignee_ack_at is not None
    await h.press(HEAD, task, "已完成")
    case = await h.case(case.id)
    assert case.status == "accepted" and case.assignee_id is None
    assert "已完成交办任务" in h.card(LEADER, case.id).text
    await resolve(h, LEADER, case.id, "楼栋长已修复")
    assert (await h.case(case.id)).status == "resolved"


async def test_manual_escalation_and_send_back(h: Harness) -> None:
    case = await confirmed(h)
    await h.press(LEADER, h.card(LEADER, case.id), "上报")
    await h.private(LEADER, "需要物业和社区协调")
    case = await h.case(case.id)
    assert case.level == "community" and case.status == "open"
    card = h.card(COMMUNITY_SUP, case.id)
    assert "需要物业和社区协调" in card.text and "退回下级" in card.labels
    # The leader's old card is stale now.
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    assert "已失效" in h.answers()[-1]
    await h.press(COMMUNITY_SUP, card, "上报")
    await h.private(COMMUNITY_SUP, "涉及多个社区")
    case = await h.case(case.id)
    assert case.level == "street"
    street_card = h.card(STREET_SUP, case.id)
    assert "上报" not in await h.all_labels(STREET_SUP, street_card)  # the top level
    await h.press(STREET_SUP, street_card, "退回下级")
    await h.private(STREET_SUP, "社区先行处置")
    assert (await h.case(case.id)).level == "community"
    # Each move's event names the level the case went to: the figures count 上报 by it.
    assert await _moves(h, case.id) == [("escalate", "community"), ("escalate", "street"),
                                        ("send_back", "community")]


async def _moves(h: Harness, case_id: int) -> list[tuple[str, str | None]]:
    async with h.app.sessions() as db:
        rows = await db.execute(
            select(CaseEvent.action, CaseEvent.level)
            .where(CaseEvent.case_id == case_id, CaseEvent.level.is_not(None))
            .order_by(CaseEvent.id))
        return [(action, level) for action, level in rows.all()]


async def test_due_soon_overdue_repeat_and_escalation(h: Harness) -> None:
    case = await confirmed(h)  # "other": 72h SLA
    await h.press(LEADER, h.card(LEADER, case.id), "受理")
    await h.advance(timedelta(hours=54))  # 0.75 of 72h; 2026-11-25 16:00 local
    assert "临期提醒" in h.last(LEADER).text
    await h.advance(timedelta(hours=18))  # deadline, 11-26 10:00 local
    assert "超期" in h.last(LEADER).text
    assert h.reminded(LEADER, "超期", case.id) == 1
    # The repeat 4 h on is folded: the case was listed to the leader today (issue 21).
    await h.advance(timedelta(hours=4))
    assert h.reminded(LEADER, "超期", case.id) == 1
    # The next morning's first list carries it, with the count of alerts.
    await h.advance(timedelta(hours=17, minutes=5))  # 07:05 local, after the quiet hours
    assert h.reminded(LEADER, "超期", case.id) == 2
    assert "次提醒" in h.reminder_lists(LEADER)[-1].text
    await h.advance(timedelta(hours=2, minutes=55))  # 24h overdue: community; 11-27 10:00
    case = await h.case(case.id)
    assert case.level == "community"
    assert h.reminded(COMMUNITY_SUP, "超期未办结，自动上报", case.id) == 1
    card = await h.open_case(COMMUNITY_SUP, case.id)
    assert "办结" in card.labels
    await h.advance(timedelta(hours=24))
    case = await h.case(case.id)
    assert case.level == "street"
    assert h.reminded(STREET_SUP, "自动上报", case.id) == 1
    assert await _moves(h, case.id) == [("auto_escalate", "community"),
                                        ("auto_escalate", "street")]


async def test_quiet_hours_hold_reminders_until_morning(h: Harness) -> None:
    # Reported at 17:00 local with a 48h SLA: due soon at +36h, 05:00, inside 22:00-07:00.
    h.clock.advance(timedelta(hours=7))  # 17:00 local
    case = await confirmed(h)
    async with h.app.sessions() as db:
        row = await db.get(Case, case.id)
        assert row is not None
        row.category = "sanitation"
        row.deadline_at = row.reported_at + timedelta(hours=48)
        row.next_check_at = row.reported_at + timedelta(hours=36)
        await db.commit()
    await h.advance(timedelta(hours=36))  # 05:00 local: inside 22:00-07:00
    assert not any("临期" in t for t in h.texts(LEADER))
    await h.advance(timedelta(hours=1, minutes=59))  # 06:59
    assert not any("临期" in t for t in h.texts(LEADER))
    await h.advance(timedelta(minutes=2))  # 07:01
    assert len([t for t in h.texts(LEADER) if "临期" in t]) == 1


async def test_urgent_reminders_ignore_quiet_hours(h: Harness) -> None:
    h.clock.advance(timedelta(hours=11))  # 21:00 local
    await h.say(BUILDING_CHAT, RESIDENT, "/report 先报一次")
    await h.report_privately(RESIDENT, "消防通道被堵", "消防安全")
    await h.advance(timedelta(hours=3, minutes=1))  # 00:01 local, 0.75 of 4h passed
    assert any("临期" in t for t in h.texts(LEADER))


async def test_restart_sends_no_reminder_twice_and_loses_none(h: Harness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.harness import make_harness

    case = await confirmed(h)
    await h.advance(timedelta(hours=72))
    before = len([t for t in h.texts(LEADER) if "超期" in t])
    assert before == 1
    # A crash between the sweep's commit and delivery: rows wait in the outbox.
    h.clock.advance(timedelta(hours=4))
    await h.app.sweep()
    await h.app.close()
    h2 = await make_harness(tmp_path, load=False, clock=h.clock, api=h.api)
    await h2.app.sweep()
    await h2.app.sweep()
    await h2.deliver()
    # The repeat is folded (listed today already): kept, waiting for the next list.
    assert h2.reminded(LEADER, "超期") == 1
    assert await h2.outbox_count("pending") == 0
    async with h2.app.sessions() as db:
        kept = (await db.execute(select(Reminder.n, Reminder.status).where(
            Reminder.case_id == case.id, Reminder.person_id == LEADER)
            .order_by(Reminder.n))).all()
    assert [tuple(r) for r in kept] == [(1, "listed"), (2, "waiting")]
    async with h2.app.sessions() as db:
        taken = (await db.scalars(select(CaseTimerStep.n).where(
            CaseTimerStep.case_id == case.id, CaseTimerStep.step == "overdue"))).all()
    assert sorted(taken) == [1, 2]
    # The next morning's list (07:05, before the case goes up at 10:00) shows it.
    await h2.advance(timedelta(hours=17, minutes=5))
    assert h2.reminded(LEADER, "超期") == 2
    await h2.app.close()


async def test_staff_without_private_chat_get_card_in_work_chat(h: Harness) -> None:
    h.api.forbid(LEADER)
    case = await confirmed(h)
    fallback = h.card(WORK_CHAT, case.id)
    assert 'tg://user?id=920001' in fallback.text and "start" in fallback.text
    assert await h.outbox_count("held") == 1
    # Pressing the card in the group works for the leader, and nobody else.
    await h.feed(h.updates.callback(MEMBER, await h.data_of(LEADER, fallback, "上报"),
                                    fallback))
    assert "无权" in h.answers()[-1]
    # Once the leader starts the bot, the held card arrives privately.
    h.api.allow(LEADER)
    await h.private(LEADER, "/start")
    assert h.card(LEADER, case.id)
    assert await h.outbox_count("held") == 0


async def test_reporter_unreachable_gets_reply_in_group(h: Harness) -> None:
    case = await confirmed(h)
    h.api.forbid(RESIDENT)
    await resolve(h, LEADER, case.id, "已修好")
    replies = [s for s in h.api.to(BUILDING_CHAT) if s.reply_to == case.source_message_id]
    rating = [s for s in replies if s.buttons]
    assert rating and "已修好" in rating[-1].text
    # Another resident cannot rate someone else's case.
    await h.feed(h.updates.callback(RESIDENT2, rating[-1].button_data("满意"), rating[-1]))
    assert "无权" in h.answers()[-1]
    await h.feed(h.updates.callback(RESIDENT, rating[-1].button_data("满意"), rating[-1]))
    assert (await h.case(case.id)).status == "closed"


async def test_refusals_for_people_who_may_not_act(h: Harness) -> None:
    case = await h.report_in_group()
    verify = h.card(HEAD, case.id)
    for outsider in (RESIDENT, STRANGER, HEAD5, LEADER, LEADER2):
        await h.feed(h.updates.callback(outsider, verify.button_data("✅ 属实"), verify))
        assert "无权" in h.answers()[-1], outsider
    assert (await h.case(case.id)).status == "verifying"
    await h.press(HEAD, verify, "✅ 属实")
    card = h.card(LEADER, case.id)
    data = {label: await h.data_of(LEADER, card, label) for label in ("受理", "办结", "上报")}
    for outsider in (RESIDENT, STRANGER, HEAD, LEADER2, HEAD5):
        for label in ("受理", "办结", "上报"):
            await h.feed(h.updates.callback(outsider, data[label], card))
            assert "无权" in h.answers()[-1], (outsider, label)
    assert (await h.case(case.id)).status == "open"
    # A grid member may accept but not escalate.
    await h.feed(h.updates.callback(MEMBER, data["上报"], card))
    assert "无权" in h.answers()[-1]
    await h.feed(h.updates.callback(MEMBER, data["受理"], card))
    assert (await h.case(case.id)).status == "accepted"


async def test_stale_and_forged_buttons_change_nothing(h: Harness) -> None:
    case = await confirmed(h)
    card = h.card(LEADER, case.id)
    old_accept = card.button_data("受理")
    await h.press(LEADER, card, "受理")
    await h.feed(h.updates.callback(LEADER, old_accept, card))  # the same button again
    assert "已失效" in h.answers()[-1]
    for data in ("c1:zz:1:1", "c1:ac:999:1", "c1:ac:x:1", "c1:ac", "garbage"):
        await h.feed(h.updates.callback(LEADER, data))
        assert h.answers()[-1], data
    assert (await h.case(case.id)).status == "accepted"
    assert await h.events(case.id) == ["report", "confirm", "accept"]


async def test_cases_case_my_and_scope(h: Harness) -> None:
    case = await confirmed(h)
    await h.say(UNIT_CHAT, RESIDENT2, "/report 单元门坏了")
    await h.private(LEADER, "/cases")
    listing = h.last(LEADER).text
    assert f"#{case.id}" in listing and "🟢" in listing
    await h.private(LEADER2, "/cases")
    assert f"#{case.id}" not in h.last(LEADER2).text
    await h.private(LEADER, f"/case {case.id}")
    detail = h.last(LEADER)
    assert "办理记录" in detail.text and "核实属实" in detail.text
    assert "受理" in detail.labels
    await h.private(LEADER2, f"/case {case.id}")
    assert "未找到" in h.last(LEADER2).text
    await h.private(RESIDENT, f"/case {case.id}")
    assert f"#{case.id}" in h.last(RESIDENT).text and "办理记录" not in h.last(RESIDENT).text
    await h.private(RESIDENT, "/my")
    assert f"#{case.id}" in h.last(RESIDENT).text
    await h.private(RESIDENT, "/cases")
    assert "工作人员" in h.last(RESIDENT).text
    await h.private(LEADER, "/case abc")
    assert "用法" in h.last(LEADER).text
    await h.say(BUILDING_CHAT, LEADER, "/cases")
    assert "私聊" in h.last(BUILDING_CHAT).text


async def test_lights_in_cases(h: Harness) -> None:
    case = await confirmed(h)
    await h.advance(timedelta(hours=55))
    await h.private(LEADER, "/cases")
    assert "🟡" in h.last(LEADER).text
    await h.advance(timedelta(hours=18))
    await h.private(LEADER, "/cases")
    assert f"🔴 #{case.id}" in h.last(LEADER).text


async def test_bind_and_whoami(h: Harness) -> None:
    await h.say(-100555, STRANGER, "/bind BSY-01-05")
    assert "无权" in h.last(-100555).text
    await h.say(-100555, LEADER2, "/bind BSY-01-05")
    assert "无权" in h.last(-100555).text  # another grid's leader
    await h.say(-100555, LEADER, "/bind NOPE-1")
    assert "不存在" in h.last(-100555).text
    await h.say(-100555, LEADER, "/bind")
    assert "用法" in h.last(-100555).text
    await h.say(-100555, LEADER, "/bind BSY-01-05")
    # BSY-01-05 has a group of its own: moving it here is confirmed first.
    assert "另一个群" in h.last(-100555).text
    await h.press(LEADER, h.last(-100555), "确认改绑")
    assert "已绑定" in h.last(-100555).text
    await h.say(-100555, RESIDENT, "/report 5号楼电梯异响")
    [case] = await h.cases()
    assert h.card(HEAD5, case.id)
    await h.say(-100556, COMMUNITY_SUP, "/bind BSY-01-03/1")
    await h.press(COMMUNITY_SUP, h.last(-100556), "确认改绑")
    assert "单元群" in h.last(-100556).text
    await h.private(LEADER, "/whoami")
    assert "网格长" in h.last(LEADER).text and "BSY-01" in h.last(LEADER).text
    await h.private(RESIDENT, "/whoami")
    assert "居民" in h.last(RESIDENT).text


async def test_added_to_group_posts_help(h: Harness) -> None:
    await h.feed(h.updates.added_to_group(BUILDING_CHAT, LEADER))
    help_text = h.last(BUILDING_CHAT).text
    assert "/report" in help_text and "start=b" in help_text
    await h.feed(h.updates.added_to_group(-100888, LEADER))
    assert "/bind" in h.last(-100888).text


async def test_grid_without_leader_cards_go_to_members_who_may_escalate(h: Harness) -> None:
    from bot.cases.registry_edit import apply_registry
    from bot.org.registry import parse_registry
    from tests.harness import SAMPLE

    text = SAMPLE.read_text("utf-8").replace(
        "            leader: {id: 920001, name: 网格长甲}\n", "")
    async with h.app.sessions() as db:
        await apply_registry(db, parse_registry(text), h.clock)
    case = await confirmed(h)
    card = h.card(MEMBER, case.id)
    assert h.texts(LEADER) == []
    await h.press(MEMBER, card, "上报")
    await h.private(MEMBER, "网格长空缺，请社区协调")
    assert (await h.case(case.id)).level == "community"
