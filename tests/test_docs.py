"""The documents say what the code does: the state machine of docs/workflow.md is the
transition table, and the README stays a front page whose links lead somewhere."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from urllib.parse import unquote

from pydantic import BaseModel

from bot.cases.lifecycle import TRANSITIONS, CaseStatus
from bot.org.registry import RegistryModel

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "docs" / "workflow.md"
README = ROOT / "README.md"
REGISTRY = ROOT / "docs" / "registry.md"
README_MAX_LINES = 260
# One transition a line: `    from --> to : action`; `[*]` begins and ends a case.
EDGE = re.compile(r"^\s+(\[\*\]|\w+) --> (\[\*\]|\w+)(?: : (\w+))?\s*$")
START = "[*]"


def mermaid_block(text: str) -> list[str]:
    """The lines of the one Mermaid stateDiagram-v2 block of a document."""
    blocks = re.findall(r"^```mermaid\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    diagrams = [b for b in blocks if b.lstrip().startswith("stateDiagram-v2")]
    assert len(diagrams) == 1, "docs/workflow.md needs exactly one stateDiagram-v2 block"
    block: str = diagrams[0]
    return block.splitlines()[1:]


def diagram_edges() -> list[tuple[str, str, str | None]]:
    edges = []
    for line in mermaid_block(WORKFLOW.read_text(encoding="utf-8")):
        if not line.strip():
            continue
        match = EDGE.match(line)
        assert match is not None, f"not a transition line of the diagram: {line!r}"
        edges.append((match.group(1), match.group(2), match.group(3)))
    return edges


def table_edges() -> set[tuple[str, str, str]]:
    """(from, to, action) for each status an action may start from; a kept status loops."""
    out: set[tuple[str, str, str]] = set()
    for action, (sources, target) in TRANSITIONS.items():
        for source in sources:
            out.add((str(source), str(target or source), str(action)))
    return out


def test_the_diagram_is_the_transition_table() -> None:
    edges = diagram_edges()
    drawn = [(a, b, act) for a, b, act in edges if START not in (a, b)]
    assert all(act is not None for _, _, act in drawn), "every transition names its action"
    assert len(drawn) == len(set(drawn)), "a transition is drawn twice"
    got = {(a, b, act) for a, b, act in drawn if act is not None}
    want = table_edges()
    assert got - want == set(), f"drawn but not in TRANSITIONS: {sorted(got - want)}"
    assert want - got == set(), f"in TRANSITIONS but not drawn: {sorted(want - got)}"


def test_every_status_is_in_the_diagram() -> None:
    edges = diagram_edges()
    states = {s for a, b, _ in edges for s in (a, b)} - {START}
    values = {s.value for s in CaseStatus}
    assert states - values == set(), f"states the code does not know: {sorted(states - values)}"
    assert values - states == set(), f"statuses not drawn: {sorted(values - states)}"
    begins = {(b, act) for a, b, act in edges if a == START}
    assert {("verifying", "report"), ("open", "report")} <= begins
    ends = {a for a, b, _ in edges if b == START}
    # A status is final when no transition leaves it.
    left = {source.value for sources, _ in TRANSITIONS.values() for source in sources}
    assert ends == values - left


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_keeps_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "python3 -m pip install -e . && gridbot run --registry examples/registry.yaml" in text
    assert "bash scripts/test.sh" in text


def test_readme_links_to_docs_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+\.md)(?:#[^)\s]*)?\)", text)
    assert links, "the README links to its docs"
    missing = sorted({link for link in links if not (ROOT / unquote(link)).is_file()})
    assert missing == [], f"README links to docs that do not exist: {missing}"


def registry_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every key the registry's models accept, nested models included."""
    keys: set[str] = set()
    seen.add(model)
    for name, field in model.model_fields.items():
        keys.add(name)
        todo = [field.annotation]
        while todo:
            kind = todo.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                if kind not in seen:
                    keys |= registry_keys(kind, seen)
            else:
                todo.extend(typing.get_args(kind))
    return keys


def test_registry_doc_names_every_key() -> None:
    text = REGISTRY.read_text(encoding="utf-8")
    keys = registry_keys(RegistryModel, set())
    assert {"policy", "keywords", "boundary_file", "duplicate_radius", "weights"} <= keys
    missing = sorted(k for k in keys if f"`{k}`" not in text and f"`weights.{k}`" not in text)
    assert missing == [], f"docs/registry.md does not name these registry keys: {missing}"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"),
                  flags=re.MULTILINE | re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def test_links_between_the_docs_lead_somewhere() -> None:
    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = unquote(target).partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.is_file():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_files_the_docs_name_exist() -> None:
    """A module, test or script named in the README or a guide is where it says (the
    benchmarks page is a record of what was measured then, and is left out)."""
    pages = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md")
                             if p.name != "benchmarks.md")]
    named = re.compile(r"`((?:bot|handlers|storage|tests|scripts|examples|templates)"
                       r"/[\w./-]+\.(?:py|yaml|j2|sh))`")
    missing = sorted({f"{page.relative_to(ROOT)}: {path}" for page in pages
                      for path in named.findall(page.read_text(encoding="utf-8"))
                      if not (ROOT / path).is_file()})
    assert missing == []
