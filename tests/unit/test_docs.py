"""The documentation tree stays usable: a short README, working links, nothing outside the repository.

README.md is the front page (at most 12 KiB, the two commands on its first screen, CI runs the second);
everything else lives in docs/ and bench/README.md. Every relative Markdown link must resolve to a file
(and heading) inside the repository, no page may send a reader to ``../shared``, and every docs page must
be reachable from README.md by following links.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
README_MAX_BYTES = 12_288
FIRST_SCREEN_LINES = 40
RUN_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install . && vastkeep up"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest -q"

FENCE_RE = re.compile(r"^(```|~~~)")
LINK_RE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def doc_files() -> list[Path]:
    """Every Markdown page the docs tree is made of."""
    files = [README, ROOT / "bench" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "ops").glob("*.md"))
    return [f for f in files if f.is_file()]


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks, with inline code spans removed (links there are examples)."""
    out, in_fence = [], False
    for line in text.splitlines():
        if FENCE_RE.match(line.strip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append(re.sub(r"`[^`]*`", "", line))
    return out


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(path.read_text()) for m in LINK_RE.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link inside a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page offers (duplicates get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in path.read_text().splitlines():
        if FENCE_RE.match(line.strip()):
            in_fence = not in_fence
            continue
        m = None if in_fence else HEADING_RE.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def resolve(page: Path, target: str) -> tuple[Path, str]:
    """The file and anchor a relative link points at."""
    file_part, _, anchor = target.partition("#")
    dest = page if not file_part else (page.parent / unquote(file_part)).resolve()
    return dest, anchor


def relative_links() -> list[tuple[Path, str]]:
    return [(p, t) for p in doc_files() for t in links(p) if not t.startswith(EXTERNAL)]


def test_there_are_docs_to_check():
    names = {p.name for p in doc_files()}
    assert {"README.md", "ARCHITECTURE.md", "configuration.md", "state.md", "testing.md"} <= names
    assert len(relative_links()) > 50


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes (limit {README_MAX_BYTES})"


def test_readme_first_screen_has_exactly_the_two_commands():
    first = README.read_text().splitlines()[:FIRST_SCREEN_LINES]
    commands, in_fence = [], False
    for line in first:
        if FENCE_RE.match(line.strip()):
            in_fence = not in_fence
        elif in_fence and line.strip():
            commands.append(line.strip())
    assert commands == [RUN_COMMAND, TEST_COMMAND], commands


def test_ci_runs_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    assert TEST_COMMAND in ci.read_text()


@pytest.mark.parametrize(("page", "target"), relative_links(),
                         ids=lambda v: v.name if isinstance(v, Path) else v)
def test_relative_link_resolves(page: Path, target: str):
    dest, anchor = resolve(page, target)
    assert dest == ROOT.resolve() or ROOT.resolve() in dest.parents, f"{target} leaves the repository"
    assert dest.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{page.relative_to(ROOT)}: no heading #{anchor} in {dest.name}"


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_outside_the_repository(page: Path):
    text = page.read_text()
    assert "../shared" not in text and "/work/shared" not in text
    for target in links(page):
        if not target.startswith(EXTERNAL):
            dest, _ = resolve(page, target)
            assert ROOT.resolve() in dest.parents or dest == ROOT.resolve(), target


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        for target in links(page):
            if not target.startswith(EXTERNAL):
                todo.append(resolve(page, target)[0])
    wanted = {p.resolve() for p in doc_files()}
    missing = sorted(str(p.relative_to(ROOT.resolve())) for p in wanted - seen)
    assert not missing, f"not reachable from README.md: {missing}"


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Layer 2: token management", "layer-2-token-management"),
    ("Events (`vastkeep.state.events.EventLog`)", "events-vastkeepstateeventseventlog"),
    ("Control API and fault injection (`/_sim`, header `X-Sim-Token`)",
     "control-api-and-fault-injection-_sim-header-x-sim-token"),
])
def test_slug_matches_github(heading: str, anchor: str):
    assert slug(heading) == anchor


def test_link_checker_catches_a_broken_link(tmp_path: Path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n[ok](p.md#title) [bad](missing.md) [anchor](p.md#nope)\n"
                    "```\n[code](x.md)\n```\n")
    found = links(page)
    assert found == ["p.md#title", "missing.md", "p.md#nope"]
    assert resolve(page, "missing.md")[0].exists() is False
    assert "nope" not in anchors(page) and "title" in anchors(page)
