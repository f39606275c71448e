"""Every template and label of every locale renders, escapes user text, and matches zh_CN.

zh_CN is the reference locale: the others must have the same files, the same label blocks and
use the same variables. Each message template is rendered with a realistic context (shaped like
what `bot/cases/notify.py` and `bot/cases/views.py` pass) in each of its variants;
StrictUndefined makes a
variable the context lacks an error, and an AST check catches those in branches not taken.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined, meta, nodes

from bot.texts import TEXT_LIMIT, Texts
from tests.template_context_campaigns import campaigns_context
from tests.template_context_digest import digest_context
from tests.template_context_stats import stats_context

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
REFERENCE = "zh_CN"
LOCALES = ("zh_CN", "en")

EVIL = '<b>x</b> & <a href="y">'
ESCAPED = "&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href="
CASE_ID = 4217
ITEM_IDS = (4217, 4230)
NOW = datetime(2025, 3, 14, 2, 30, tzinfo=UTC)
CARD_KINDS = (
    "verify", "urgent", "unverified", "new", "escalated", "returned", "task_done", "reopened",
    "task", "check", "check_failed", "resumed", "split", "extended",
    "category", "found_patrol", "found_visit",
)
# Tags Telegram's HTML parse mode understands.
TELEGRAM_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "span",
    "tg-spoiler", "tg-emoji", "blockquote",
}
LINK = "https://t.me/gridbot?start=b12"

# labels.j2 and each part's labels_*.j2 hold label blocks, not messages.
LABEL_FILES = [n for n in Texts(TEMPLATES, REFERENCE).template_names()
               if n == "labels" or n.startswith("labels_")]
MESSAGE_NAMES = [n for n in Texts(TEMPLATES, REFERENCE).template_names()
                 if n not in LABEL_FILES]


def _source(locale: str, name: str) -> str:
    return (TEMPLATES / locale / f"{name}.j2").read_text(encoding="utf-8")


def _parse(locale: str, name: str) -> nodes.Template:
    env = Environment()
    env.filters["local"] = str  # only parsed here, never rendered
    return env.parse(_source(locale, name))


def _plain(texts: Texts, locale: str) -> Environment:
    """The same environment as `texts` but without autoescape: shows where user text lands."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES / locale)), undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    env.filters["local"] = texts.local_time
    env.globals["label"] = texts.label
    return env


# -- sample data --------------------------------------------------------------------------


def _staff_case(texts: Texts, **changes: Any) -> dict[str, Any]:
    """Like notify.case_view(): everything the templates may show of a case to staff."""
    case = {
        "id": CASE_ID,
        "status": texts.label("status_accepted"),
        "level": texts.label("level_community"),
        "category": "Stairwell lighting",
        "urgent": True,
        "verified": texts.label("verified_confirmed"),
        "place": f"Xingfuli 3 {EVIL}",
        "grid": "BSY-01",
        "description": f"The stairwell light in unit 3 is broken {EVIL}",
        "reporter": f"Wang Fang {EVIL}",
        "submitted_by": f"Li Qiang {EVIL}",
        "reported_at": NOW - timedelta(hours=5),
        "deadline_at": NOW + timedelta(hours=43),
        "light": "yellow",
        "latitude": 31.23041,
        "longitude": 121.47370,
        "map_url": "https://uri.amap.com/marker?position=121.478139,31.228473&x=<b>",
        "result": f"Replaced the bulb {EVIL}",
        "photo_count": 3,
        "assignee": f"Zhao Min {EVIL}",
        "extended": True,
        "original_deadline_at": NOW + timedelta(hours=19),
        "rework": 2,
        "review_at": NOW + timedelta(days=30),
        "checked": texts.label("checked_pending"),
        "affected": 4,
        "merged_into": None,
        "split_from": 7,
    }
    case.update(changes)
    return case


def _bare_case(texts: Texts) -> dict[str, Any]:
    """A case with every optional part missing: photo-only, no location, not yet handled."""
    return _staff_case(
        texts, urgent=False, description="", submitted_by=None, latitude=None, longitude=None,
        map_url=None, photo_count=0, result=None, assignee=None,
        verified=texts.label("verified_pending"),
        status=texts.label("status_verifying"), level=texts.label("level_grid"),
        extended=False, rework=0, review_at=None, checked=None, affected=None,
        split_from=None,
    )


def _resident_case(texts: Texts, **changes: Any) -> dict[str, Any]:
    """Like views._resident_view(): what a reporter sees of their own case."""
    case = {
        "id": CASE_ID,
        "status": texts.label("status_closed"),
        "category": "Stairwell lighting",
        "description": f"The stairwell light in unit 3 is broken {EVIL}",
        "reported_at": NOW - timedelta(days=2),
        "result": f"Replaced the bulb {EVIL}",
        "reject_reason": f"Already repaired {EVIL}",
        "rating": texts.label("rating_fair"),
        "merged_into": None,
    }
    case.update(changes)
    return case


def _context(texts: Texts) -> dict[str, Any]:
    """One context holding every variable any message template uses."""
    t = texts.label
    return {
        "case": _staff_case(texts),
        "case_id": CASE_ID,
        "kind": "new",
        "note": f"Needs the property company {EVIL}",
        "category": "Stairwell lighting",
        "urgent": False,
        "verifying": True,
        "on_behalf": True,
        "deadline_at": NOW + timedelta(hours=48),
        "name": f"Wang Fang {EVIL}",
        "user_id": 5550001234,
        "code": "BSY-01-03",
        "link": LINK,
        "bound": True,
        "place": f"Xingfuli 3 {EVIL}",
        "rating": t("rating_good"),
        "reason": f"Could not find the problem {EVIL}",
        "description": f"Water leaking from the roof {EVIL}",
        "photos": 2,
        "has_location": True,
        "result": f"Replaced the bulb {EVIL}",
        "private": True,
        "count": 2,
        "total": len(ITEM_IDS),
        "limit": 20,
        "items": [
            {
                "id": ITEM_IDS[0], "light": "red", "status": t("status_open"),
                "category": "Stairwell lighting", "place": f"Xingfuli 3 {EVIL}",
                "deadline_at": NOW - timedelta(hours=1), "urgent": True,
                "summary": f"Light broken {EVIL}",
                # A reminder list's line (reminders.j2): which reminder, and its count.
                "kind": "overdue", "n": 2, "level": t("level_grid"), "text": None,
            },
            {
                "id": ITEM_IDS[1], "light": "", "status": t("status_resolved"),
                "category": "Sanitation", "place": "Xingfuli 5",
                "deadline_at": NOW + timedelta(days=2), "urgent": False,
                "summary": "Rubbish not collected",
                "kind": "escalated", "n": 1, "level": t("level_community"), "text": None,
            },
        ],
        "events": [
            {"at": NOW - timedelta(hours=5), "actor": f"Wang Fang {EVIL}",
             "action": t("event_report"), "note": None},
            {"at": NOW - timedelta(hours=4), "actor": "Zhao Min",
             "action": t("event_escalate"), "note": f"Needs the community {EVIL}"},
            {"at": NOW - timedelta(hours=1), "actor": None,
             "action": t("event_auto_escalate"), "note": t("overdue_note")},
        ],
        "roles": [
            {"role": t("role_grid_leader"), "place": f"Grid 1 {EVIL}", "code": "BSY-01"},
            {"role": t("role_building_head"), "place": "Xingfuli 3", "code": "BSY-01-03"},
        ],
        # 合并 and 拆分: merge_reporter, merge_staff, split_reporter.
        "main_id": CASE_ID - 3,
        "new_id": CASE_ID + 1,
        "merged_id": CASE_ID + 2,
        # What the main case took over (issue 20, defect 3).
        "kept_deadline": "11-24 14:00", "kept_overdue": True, "kept_urgent": True,
        "actor": f"Zhao Min {EVIL}",
        # 是同一问题: duplicate_question.
        "in_group": True,
        "minutes": 5,
        # Requests (延期 / 挂账): request_card and request_answered.
        "requester": f"Zhao Min {EVIL}",
        "length": 2 * 86400,
        "new_deadline_at": NOW + timedelta(days=3),
        "review_at": NOW + timedelta(days=90),
        "answer_by": NOW + timedelta(days=1),
        "outcome": "approved",
        "working": False,
        "asked_review_at": None,
        "skipped": None,
        # The parts' templates (whistles, checks, suspension).
        "department": f"Police station {EVIL}",
        "ask": f"Please check the stall {EVIL}",
        "caller": f"Zhao Min {EVIL}",
        "ack_due_at": NOW + timedelta(minutes=30),
        "person": f"Officer Li {EVIL}",
        "whistle": {
            "called_at": NOW - timedelta(hours=1), "caller": f"Zhao Min {EVIL}",
            "ask": f"Please check the stall {EVIL}", "ack_due_at": NOW - timedelta(minutes=30),
        },
        # The variables of the figures' and the digest's templates, kept with those parts.
        **stats_context(texts, now=NOW, evil=EVIL),
        **digest_context(texts, now=NOW, evil=EVIL),
        **campaigns_context(now=NOW, evil=EVIL),
    }


def _variants(texts: Texts, name: str) -> list[dict[str, Any]]:
    """Overrides of the base context: each branch of each template at least once."""
    t = texts.label
    resident_items = [_resident_case(texts, id=i, rating=None) for i in ITEM_IDS]
    variants: dict[str, list[dict[str, Any]]] = {
        "ack": [
            {"urgent": True, "verifying": False, "on_behalf": True},
            {"urgent": False, "verifying": True, "on_behalf": False},
            {"urgent": False, "verifying": False, "on_behalf": False},
        ],
        "bound": [{"kind": t(f"kind_{k}")} for k in ("grid", "building", "unit")],
        "case_card": [{"kind": k} for k in CARD_KINDS]
        + [{"kind": k, "note": None, "case": _bare_case(texts)} for k in CARD_KINDS],
        "notice_message": [{"text": f"Flood warning {EVIL}", "sender": f"Grid 1 {EVIL}"}],
        "notice_preview": [
            {"body": f"Notice {EVIL}", "photos": p, "chats": 40, "nobody": nobody,
             "nobody_more": more}
            for p in (0, 3) for nobody, more in (([], 0), ([f"Building 12 {EVIL}"], 0),
                                                 ([f"Building 12 {EVIL}"], 4))],
        "notice_summary": [
            {"id": 12, "sent_at": NOW, "text": f"Flood warning {EVIL}", "confirmed": 32,
             "can": 40, "complete": False, "missing": [f"Building 3 {EVIL}", "Building 5"],
             "more": 6, "nobody": [f"Building 12 {EVIL}"], "nobody_count": 20,
             "nobody_more": 19, "reminded_at": NOW},
            {"id": 12, "sent_at": NOW, "text": "Water off", "confirmed": 40, "can": 40,
             "complete": True, "missing": [], "more": 0, "nobody": [], "nobody_count": 0,
             "nobody_more": 0, "reminded_at": None},
            # Sent only to groups with nobody to confirm.
            {"id": 12, "sent_at": NOW, "text": "Water off", "confirmed": 0, "can": 0,
             "complete": False, "missing": [], "more": 0, "nobody": ["Building 12"],
             "nobody_count": 1, "nobody_more": 0, "reminded_at": None},
        ],
        "notice_remind": [{"text": f"Flood warning {EVIL}", "places": [f"Building 3 {EVIL}"],
                           "sender": f"Grid 1 {EVIL}"}],
        "notice_reminded": [
            {"count": 2, "places": 3, "nobody": nobody, "nobody_count": count,
             "people": people}
            for people in ([{"name": f"Head {EVIL}", "places": [f"Building 3 {EVIL}"],
                             "first": True},
                            {"name": "Unit head", "places": ["Building 3 1", "Building 5"],
                             "first": False}],
                           [])
            for nobody, count in (([], 0), ([f"Building 12 {EVIL}"], 1),
                                  (["Building 12"], 4), ([], 4))] + [
            {"count": 0, "places": 0, "people": [], "nobody": n, "nobody_count": len(n)}
            for n in ([], [f"Building 12 {EVIL}"])],
        "notice_list": [
            {"items": [{"id": 12, "sent_at": NOW, "text": f"Flood warning {EVIL}",
                        "confirmed": c, "can": can, "nobody": nobody}]}
            for c, can, nobody in ((32, 40, 0), (32, 40, 2), (0, 0, 1))] + [{"items": []}],
        "duplicate_question": [
            {"case": {"id": CASE_ID, "category": "Sanitation", "status": t("status_open"),
                      "summary": f"Rubbish not collected {EVIL}"}, "in_group": g}
            for g in (True, False)],
        "case_detail": [{}, {"case": _bare_case(texts), "events": []},
                        {"case": _staff_case(texts, merged_into=CASE_ID - 3)}],
        "case_list": [{}, {"total": 25}, {"items": [], "total": 0}],
        "request_card": [
            {"kind": "extension", "review_at": None},
            {"kind": "extension", "length": 12 * 3600, "answer_by": None, "review_at": None},
            {"kind": "suspension", "length": None, "new_deadline_at": None,
             "case": _bare_case(texts)},
            # A working-time case; a review date moved off a holiday; asked one level up.
            {"kind": "extension", "review_at": None, "working": True},
            {"kind": "extension", "review_at": None, "working": True, "length": 12 * 3600},
            {"kind": "suspension", "length": None, "new_deadline_at": None,
             "asked_review_at": NOW + timedelta(days=88),
             "skipped": texts.label("request_skipped", kind=f"Community {EVIL}",
                                    name="Street")},
        ],
        "request_answered": [
            {"kind": k, "outcome": o, "note": n}
            for k in ("extension", "suspension")
            for o in ("approved", "declined", "expired", "withdrawn", "refused")
            for n in (None, f"Too long {EVIL}")
        ] + [{"kind": "suspension", "outcome": "approved", "review_at": None}],
        "case_mine": [
            {"case": _resident_case(texts)},
            {"case": _resident_case(texts, merged_into=CASE_ID - 3)},
            {"case": _resident_case(texts, description="", reject_reason=None, result=None,
                                    rating=None, status=t("status_open"))},
        ],
        "my_cases": [{"items": resident_items}, {"items": []},
                     {"items": [_resident_case(texts, merged_into=CASE_ID - 3)]}],
        "overdue": [{"count": 1}, {"count": 3}],
        "group_help": [{}, {"bound": False, "place": None}],
        "report_summary": [{}, {"has_location": False, "photos": 0}],
        "result_preview": [{}, {"private": False}],
        "welcome_resident": [{}, {"place": None}],
        "whoami": [{}, {"roles": []}],
    }
    return variants.get(name, [{}])


# -- checks -------------------------------------------------------------------------------


class _TagChecker(HTMLParser):
    """Collects tags and checks they nest: what Telegram would reject as bad markup."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def _check_markup(text: str) -> None:
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.stack, f"unclosed tags {checker.stack}"
    assert checker.tags <= TELEGRAM_TAGS, checker.tags - TELEGRAM_TAGS


def _check_escaped(out: str, raw: str) -> None:
    """User text is escaped in `out` wherever the unescaped render `raw` shows it."""
    assert "<b>x</b>" not in out
    assert '<a href="y">' not in out
    if EVIL in raw:
        assert ESCAPED in out


def _check_variables(tree: nodes.Template, context: dict[str, Any]) -> None:
    """Every variable and attribute the template could read is in the context (any branch)."""
    missing = meta.find_undeclared_variables(tree) - set(context) - {"label"}
    assert not missing, f"context lacks {sorted(missing)}"
    loops = {
        f.target.name: f.iter.name
        for f in tree.find_all(nodes.For)
        if isinstance(f.target, nodes.Name) and isinstance(f.iter, nodes.Name)
    }
    for node in tree.find_all(nodes.Getattr):
        if not isinstance(node.node, nodes.Name):
            continue
        var = node.node.name
        rows = context[loops[var]] if var in loops else [context[var]]
        for row in rows:
            assert node.attr in row, f"context {var!r} lacks {node.attr!r}"


def _case_numbers(source: str) -> list[str]:
    return re.findall(r"#\{\{ ?(?:case_id|case\.id|c\.id) ?\}\}", source)


def _label_blocks(locale: str) -> dict[str, set[str]]:
    """Each block of labels.j2 and the labels_*.j2 files, with the variables it reads; a
    block in two files is an error (Texts refuses it too)."""
    blocks: dict[str, set[str]] = {}
    for file in LABEL_FILES:
        for block in _parse(locale, file).find_all(nodes.Block):
            assert block.name not in blocks, f"{file}.j2 repeats block {block.name!r}"
            blocks[block.name] = {n.name for n in block.find_all(nodes.Name)
                                  if n.ctx == "load"}
    return blocks


# -- (a) same shape in every locale -------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
def test_same_template_files(locale: str) -> None:
    names = Texts(TEMPLATES, locale).template_names()
    assert names == Texts(TEMPLATES, REFERENCE).template_names()
    assert "labels" in names


@pytest.mark.parametrize("locale", LOCALES)
def test_same_label_blocks(locale: str) -> None:
    blocks = _label_blocks(locale)
    reference = _label_blocks(REFERENCE)
    assert list(blocks) == list(reference)
    for name, used in reference.items():
        assert blocks[name] == used, f"labels.j2 block {name!r} uses other variables"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_same_variables(locale: str, name: str) -> None:
    tree, reference = _parse(locale, name), _parse(REFERENCE, name)
    assert meta.find_undeclared_variables(tree) == meta.find_undeclared_variables(reference)

    def attrs(t: nodes.Template) -> set[tuple[str, str]]:
        return {
            (n.node.name, n.attr) for n in t.find_all(nodes.Getattr)
            if isinstance(n.node, nodes.Name)
        }

    assert attrs(tree) == attrs(reference)
    assert _case_numbers(_source(locale, name)) == _case_numbers(_source(REFERENCE, name))


def test_case_card_kinds_all_tested() -> None:
    kinds = set(re.findall(r'kind == "(\w+)"', _source(REFERENCE, "case_card")))
    assert kinds == set(CARD_KINDS)


def test_english_is_translated() -> None:
    cjk = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
    for path in sorted((TEMPLATES / "en").glob("*.j2")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            # The ideographic space only indents the second line of list items.
            assert not cjk.search(line.replace("\u3000", "")), f"{path.name}:{number}: {line}"


# -- (b) every message template renders --------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_template_renders(locale: str, name: str) -> None:
    texts = Texts(TEMPLATES, locale)
    plain = _plain(texts, locale)
    tree = _parse(locale, name)
    source = _source(locale, name)
    for variant in _variants(texts, name):
        context = {**_context(texts), **variant}
        _check_variables(tree, context)
        out = texts.render(name, **context)
        raw = plain.get_template(f"{name}.j2").render(**context)
        where = f"{locale}/{name}.j2 with {sorted(variant)}"
        assert out.strip(), where
        assert len(out) <= TEXT_LIMIT, where
        assert "\n\n\n" not in out, where
        _check_markup(out)
        _check_escaped(out, raw)
        if "case_id" in source or "case.id" in source:
            assert f"#{CASE_ID}" in out, where
        if "c.id" in source:
            for item in context["items"]:
                assert f"#{item['id']}" in out, where


def test_case_card_shows_location_and_urgency() -> None:
    texts = Texts(TEMPLATES, "en")
    out = texts.render("case_card", **_context(texts))
    assert "31.23041, 121.47370" in out
    assert "(urgent)" in out
    assert "Photos: 3" in out


def test_local_time_in_timezone() -> None:
    texts = Texts(TEMPLATES, "en")
    out = texts.render("ack", **_context(texts))
    assert "03-16 10:30" in out  # NOW + 48h, in Asia/Shanghai


# -- (c) every label renders -------------------------------------------------------------

LABEL_CONTEXT: dict[str, Any] = {
    "case_id": CASE_ID,
    "code": f"BSY-99 {EVIL}",
    "limit": 10,
    "count": 3,
    "place": f"Xingfuli 3 {EVIL}",
    "category": f"Stairwell lighting {EVIL}",
    "kind": f"Building group {EVIL}",
    "name": f"Supervisor {EVIL}",
    "link": LINK,
    "from_status": "checking",
    # /stats refusals (labels_stats.j2): the first day with data.
    "first": "2026-09-01",
    # 合并 and 拆分 (labels_merge.j2).
    "any": True,
    "main_id": CASE_ID - 3,
    "kept_deadline": "11-24 14:00", "kept_overdue": True, "kept_urgent": True,
    "into": CASE_ID - 3,
    "new_id": CASE_ID + 1,
    "description": f"Water leaking {EVIL}",
    "text": f"Rubbish in the stairwell {EVIL}",
    "photos": 2,
    "n": 1,
    "on": True,
    # Notices (labels_notices.j2).
    "chats": 40,
    "page": 2,
    "pages": 5,
    "role": "Grid leader",
    "confirmed": 32,
    "total": 40,
    "id": 12,
    "minutes": 25,
    # 改类别 (labels_category.j2): what moved.
    "old": f"Other {EVIL}",
    "new": f"Disputes {EVIL}",
    "how": "held",
    "before": "11-26 10:00",
    "after": "11-24 10:00",
    "proposed": "11-30 10:00",
    "urgent": False,
}


@pytest.mark.parametrize("locale", LOCALES)
def test_labels_render(locale: str) -> None:
    texts = Texts(TEMPLATES, locale)
    env = _plain(texts, locale)
    files = {b.name: f for f in LABEL_FILES
             for b in _parse(locale, f).find_all(nodes.Block)}
    for name, used in _label_blocks(locale).items():
        plain = env.get_template(f"{files[name]}.j2")
        missing = used - set(LABEL_CONTEXT)
        assert not missing, f"labels.j2 block {name!r} needs {sorted(missing)}"
        assert texts.has_label(name)
        out = texts.label(name, **LABEL_CONTEXT)
        raw = "".join(plain.blocks[name](plain.new_context(LABEL_CONTEXT)))
        assert out, f"{locale} label {name!r} is empty"
        _check_markup(out)
        _check_escaped(out, raw)
        if "case_id" in used:
            assert f"#{CASE_ID}" in out, name
        if "limit" in used:
            assert "10" in out, name
        if "count" in used:
            assert "3" in out, name
        if "link" in used:
            assert LINK in out, name


@pytest.mark.parametrize("locale", LOCALES)
def test_missing_label_is_an_error(locale: str) -> None:
    with pytest.raises(KeyError):
        Texts(TEMPLATES, locale).label("no_such_label")
