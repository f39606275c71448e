"""Typed names everywhere (issue 18): a case status or an event kind is written with its enum
(`case.status == CaseStatus.MERGED`, `record(tx, case, EventKind.SPLIT, ...)`), never as a
string literal, outside the enum's own module.

The check walks the AST of every module under bot/ and handlers/ and looks at the places where
such a name means a status or an event, and nowhere else (a template name, a label key, a
photo kind or an outbox status that happens to read "done" or "report" is no finding):

- a comparison (`==`, `!=`, `in`, `not in`) whose other side is a status (`.status`,
  `.from_status`, `.to_status`, a name ending in `status`) or an event (`.action`, `action`);
- an argument of `.in_()` / `.notin_()` called on such a column;
- the event of `transition(tx, case, <event>, ...)`, `record(tx, case, <event>, ...)`,
  `check(tx, actor, case_id, rev, <event>)` and `act(...)` (the same position);
- a keyword argument `status=`, `from_status=`, `to_status=` or `action=` of any call
  (`CaseEvent(action=...)`, `update(...).values(status=...)`), or such a key in a dict literal;
- an assignment to an attribute `.status`, `.from_status`, `.to_status` or `.action`.

A literal reaches these places directly, through a tuple, list or set, a conditional
expression or an `or`/`and`, or through a name bound at the top of the module
(`UNCOUNTED = ("rejected", "merged")`). Docstrings are never looked at.

Only these two enums: other rows' statuses share their words with rows that have none
("pending", "done", "sent" are outbox and inbox states too), so a check keyed on `.status`
could not tell them apart without false findings.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bot.cases import events, lifecycle, status
from bot.cases.events import EventKind
from bot.cases.status import CaseStatus

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers")


@dataclass(frozen=True)
class Typed:
    """One enum: its values, the module that may spell them, and how its subjects are named."""

    enum: type[StrEnum]
    module: str  # path relative to the repository root
    fields: frozenset[str]  # attribute / keyword / dict key names that hold it
    suffixes: tuple[str, ...]  # a name ending in one of these holds it too

    @property
    def values(self) -> frozenset[str]:
        return frozenset(m.value for m in self.enum)

    def holds(self, name: str | None) -> bool:
        return name is not None and (name in self.fields or name.endswith(self.suffixes))


STATUS = Typed(CaseStatus, "bot/cases/status.py",
               frozenset({"status", "from_status", "to_status"}), ("status", "statuses"))
EVENT = Typed(EventKind, "bot/cases/events.py", frozenset({"action"}), ("_action",))
TYPED = (STATUS, EVENT)
# Calls whose argument at this position (or keyword `action`) is an event.
EVENT_ARGUMENT = {"transition": 2, "record": 2, "check": 4, "act": 4}
Names = dict[str, list[ast.expr]]


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    value: str
    enum: str
    where: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.value!r} ({self.where}): use {self.enum}"


def _name(node: ast.AST) -> str | None:
    """What an expression is called: `case.status` -> status, `action` -> action,
    `row["status"]` -> status; None for anything else."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)):
        return node.slice.value
    return None


def _literals(node: ast.AST | None, names: Names, depth: int = 0) -> Iterator[ast.Constant]:
    """The string constants an expression may evaluate to (or contain, for a collection),
    following a name bound at the top of the module (`UNCOUNTED = ("rejected", "merged")`)."""
    if node is None or depth > 4:
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _literals(elt, names, depth)
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body, names, depth)
        yield from _literals(node.orelse, names, depth)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _literals(value, names, depth)
    elif isinstance(node, ast.Starred):
        yield from _literals(node.value, names, depth)
    elif isinstance(node, ast.Call) and _name(node.func) in ("frozenset", "set", "tuple", "list"):
        for arg in node.args:
            yield from _literals(arg, names, depth)
    elif isinstance(node, ast.Name):
        for value in names.get(node.id, ()):
            yield from _literals(value, names, depth + 1)


def _module_names(tree: ast.Module) -> Names:
    """What each name assigned at the top of the module is bound to."""
    names: Names = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, []).append(stmt.value)
        elif (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
              and stmt.value is not None):
            names.setdefault(stmt.target.id, []).append(stmt.value)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                found.add(id(body[0].value))
    return found


def _uses(tree: ast.AST) -> Iterator[tuple[Typed, ast.AST | None, str]]:
    """(enum, expression, where) for every place an expression stands for a status or event."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                left, right = sides[i], sides[i + 1]
                for typed in TYPED:
                    if typed.holds(_name(left)):
                        yield typed, right, f"compared with {_name(left)}"
                    if typed.holds(_name(right)):
                        verb = ("tested in" if isinstance(op, (ast.In, ast.NotIn))
                                else "compared with")
                        yield typed, left, f"{verb} {_name(right)}"
        elif isinstance(node, ast.Call):
            func = _name(node.func)
            if func in ("in_", "notin_") and isinstance(node.func, ast.Attribute):
                for typed in TYPED:
                    if typed.holds(_name(node.func.value)):
                        for arg in node.args:
                            yield typed, arg, f"{_name(node.func.value)}.{func}()"
            if func in EVENT_ARGUMENT and len(node.args) > EVENT_ARGUMENT[func]:
                yield EVENT, node.args[EVENT_ARGUMENT[func]], f"the event of {func}()"
            for kw in node.keywords:
                for typed in TYPED:
                    if kw.arg is not None and kw.arg in typed.fields:
                        yield typed, kw.value, f"{kw.arg}= of {func}()"
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                for typed in TYPED:
                    if (isinstance(key, ast.Constant) and isinstance(key.value, str)
                            and key.value in typed.fields):
                        yield typed, value, f"the {key.value!r} of a dict"
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                pairs: list[tuple[ast.AST, ast.AST | None]] = [(target, node.value)]
                if (isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                        and len(target.elts) == len(node.value.elts)):
                    pairs = list(zip(target.elts, node.value.elts, strict=True))
                for tgt, value in pairs:
                    for typed in TYPED:
                        if isinstance(tgt, ast.Attribute) and tgt.attr in typed.fields:
                            yield typed, value, f"assigned to .{tgt.attr}"


def findings(source: str, path: str) -> list[Finding]:
    """The status and event literals in `source` used where their enum belongs."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    names = _module_names(tree)
    found: set[Finding] = set()
    for typed, expr, where in _uses(tree):
        if path == typed.module:
            continue
        for const in _literals(expr, names):
            if id(const) not in docs and const.value in typed.values:
                found.add(Finding(path, const.lineno, const.value, typed.enum.__name__, where))
    return sorted(found, key=lambda f: (f.path, f.line, f.value))


def modules() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix()
                  for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _found(paths: list[str]) -> list[Finding]:
    return [f for path in paths for f in findings((ROOT / path).read_text(encoding="utf-8"), path)]


def test_no_status_or_event_literals() -> None:
    found = _found(modules())
    assert not found, "status/event names written as strings:\n" + "\n".join(map(str, found))


def test_the_check_finds_what_it_must() -> None:
    """The detector itself, on a small source: every way back to a literal is caught, and
    what merely reads like a status or an event is not."""
    bad = '''
def f(tx, case, ev, row, Case, CaseEvent, update):
    if case.status == "merged":
        pass
    if "open" == case.status or case.status != "closed":
        pass
    if case.status in ("open", "accepted"):
        pass
    q = Case.status.in_(["verifying", "suspended"])
    q = CaseEvent.action.notin_(["rework"])
    record(tx, case, "whistle", None)
    cases.transition(tx, case, "resolve_check" if x else "resolve", None)
    cases.act(tx, actor, 1, 2, "confirm")
    case.status = "rejected"
    ev.action = "split_from"
    tx.db.add(CaseEvent(action="follow", from_status="resolved"))
    update(Case).values({"status": "checking"})
    if ev.action == "rate":
        pass
    if row["to_status"] == "assigned":
        pass
UNCOUNTED = ("rejected", "merged")
ESCALATIONS = ("escalate", "auto_escalate")
COUNTED = (*ESCALATIONS, "rate")
q = Case.status.in_(UNCOUNTED)
q = CaseEvent.action.in_(COUNTED)
'''
    got = {(f.line, f.value) for f in findings(bad, "bot/example.py")}
    assert got == {
        (3, "merged"), (5, "open"), (5, "closed"), (7, "open"), (7, "accepted"),
        (9, "verifying"), (9, "suspended"), (10, "rework"), (11, "whistle"),
        (12, "resolve_check"), (12, "resolve"), (13, "confirm"), (14, "rejected"),
        (15, "split_from"), (16, "follow"), (16, "resolved"), (17, "checking"), (18, "rate"),
        (20, "assigned"), (22, "rejected"), (22, "merged"), (23, "escalate"),
        (23, "auto_escalate"), (24, "rate"),
    }
    fine = '''
"""A docstring may say case.status == "merged"."""
def g(tx, case, row, photo, CasePhoto, Outbox):
    """And record(tx, case, "whistle")."""
    tx.texts.render("rejected", case_id=1)
    case.close_reason = "merged"
    case.verified = "rejected"
    if row.status in ("new", "done"):
        pass
    if CasePhoto.kind == "report":
        pass
    q = CasePhoto.kind.in_(["report", "check"])
    notify.handler_card(tx, case, lin, "split")
    tell_staff(tx, key, heads, case, lin, "verify_timeout")
    Outbox(status="pending", kind="report")
    record(tx, case, EventKind.SPLIT, None, "done")
    if case.status == CaseStatus.MERGED:
        pass
OPEN = ("called", "acked")
KIND = "report"
q = Whistle.status.in_(OPEN)
q = CasePhoto.kind == KIND
'''
    assert findings(fine, "bot/example.py") == []
    # The enum's own module may spell its values.
    assert findings('case.status = "merged"\n', STATUS.module) == []
    assert findings('case.status = "merged"\n', EVENT.module) != []


def test_the_enums_own_modules_are_where_they_are_defined() -> None:
    assert CaseStatus.__module__ == status.__name__
    assert EventKind.__module__ == events.__name__
    for typed in TYPED:
        assert (ROOT / typed.module).is_file()
        assert typed.module.removesuffix(".py").replace("/", ".") == typed.enum.__module__


def test_transitions_and_prompts_are_events_and_intents() -> None:
    """The transition table is keyed by events; a prompt's value never equals an event's,
    or PROMPT_FROM and `_permit` would mistake one for the other."""
    assert all(isinstance(action, EventKind) for action in lifecycle.TRANSITIONS)
    events_ = {e.value for e in EventKind}
    assert not events_ & {i.value for i in lifecycle.Intent}


def test_every_event_has_its_label() -> None:
    """The case history shows each event by its label `event_<value>`, in every locale."""
    for locale in sorted((ROOT / "templates").iterdir()):
        labels = "".join(p.read_text(encoding="utf-8") for p in locale.glob("labels*.j2"))
        missing = [e.value for e in EventKind if f"block event_{e.value} " not in labels
                   and f"block event_{e.value}%" not in labels]
        assert not missing, f"{locale.name}: no label for {missing}"
