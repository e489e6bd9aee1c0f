"""Every ```python block in docs/ runs, page by page, so the docs cannot drift from the code.

The blocks of one page run in order in one shared namespace (a page is one story), with a fresh
temporary directory as the working directory, so snippets that open ``sqlite:///...`` files or
the ``./idstitch.db`` default write there. A block fenced as ```python no-run is skipped on
purpose (only for PostgreSQL URLs that need a server of the reader's own). Tracebacks point at
the Markdown file and line of the failing snippet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from idstitch.testing import TemporaryPostgres

DOCS = Path(__file__).parents[2] / "docs"
README = DOCS.parent / "README.md"
PAGES = [*sorted(DOCS.rglob("*.md")), README]  # the README's example is executed too
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
LINK = re.compile(r"\]\((?P<target>[^)\s#]*\.md)(?:#(?P<anchor>[^)\s]*))?\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*$")
RUN, SKIP = "python", "python no-run"


class Block(NamedTuple):
    """One fenced code block: its info string, its first code line (1-based) and its code."""

    info: str
    line: int
    code: str


def closes(line: re.Match[str], fence: str) -> bool:
    """A closing fence: the opening's character, at least as long, nothing after it."""
    return (line["fence"][0] == fence[0] and len(line["fence"]) >= len(fence)
            and not line["info"].strip())


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a page, in order (CommonMark fences: ``` or ~~~, closed alike)."""
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        indent = len(opening["indent"])
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if closing is not None and closes(closing, fence):
                break
            # An indented fence's content loses up to that much indentation (CommonMark).
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            j += 1
        else:
            raise AssertionError(f"{page}:{i + 1}: code fence is never closed")
        out.append(Block(info, i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return out


def page_id(page: Path) -> str:
    """The test id of a page: its path relative to docs/."""
    return page.name if page == README else page.relative_to(DOCS).as_posix()


def test_the_docs_exist() -> None:
    """An empty docs/ would make the parametrized test below vanish instead of fail."""
    assert PAGES, f"no Markdown pages under {DOCS}"
    assert any(b.info == RUN for page in PAGES for b in blocks(page)), "no runnable snippet"


def test_the_reference_names_every_public_name_and_command() -> None:
    """What ``idstitch`` exports, its errors and the CLI's subcommands are all in the API
    reference (a name added to the code and not to the page drifted before)."""
    import idstitch
    import idstitch.errors
    from idstitch.cli import build_parser

    reference = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    names = [*idstitch.__all__, *idstitch.errors.__all__]
    assert [n for n in names if f"`{n}`" not in reference and f"`{n}(" not in reference] == []
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert [c for c in commands if f"`idstitch {c}" not in reference] == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_are_spelled_as_the_runner_expects(page: Path) -> None:
    """A misspelt fence (```py, ```python3, ```python norun) would silently never run."""
    for block in blocks(page):
        words = block.info.split()
        if words and words[0].lower() in {"py", "python", "python3", "py3"}:
            assert block.info in (RUN, SKIP), (
                f"{page_id(page)}:{block.line - 1}: fence {block.info!r}; "
                f"use {RUN!r} or {SKIP!r}"
            )


def anchors(page: Path) -> set[str]:
    """The anchors a page's headings get on GitHub (lower-case, punctuation dropped)."""
    fenced = {line for b in blocks(page) for line in range(b.line, b.line + b.code.count("\n"))}
    out: set[str] = set()
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        heading = HEADING.match(line)
        if heading is not None and number not in fenced:
            title = heading["title"].lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_links_between_pages_resolve(page: Path) -> None:
    """Relative links to other pages point at files that exist, and at headings they have."""
    text = page.read_text(encoding="utf-8")
    for link in LINK.finditer(text):
        target, anchor = link["target"], link["anchor"]
        if "://" in target:
            continue
        linked = (page.parent / target).resolve()
        assert linked.is_file(), f"{page_id(page)}: broken link {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page_id(page)}: no heading #{anchor} in {target}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run a page's snippets in order in one namespace; any exception fails the page."""
    monkeypatch.chdir(tmp_path)
    # Snippets document the default store, so a developer's own setting must not leak in;
    # setenv first so that a snippet that sets the variable is undone after the test too.
    monkeypatch.setenv("IDSTITCH_DATABASE_URL", "")
    monkeypatch.delenv("IDSTITCH_DATABASE_URL")
    namespace: dict[str, object] = {"__name__": f"docs:{page_id(page)}"}
    try:
        for block in blocks(page):
            if block.info != RUN:
                continue
            # Pad with blank lines so a traceback names the Markdown file and its real line.
            code = compile("\n" * (block.line - 1) + block.code, str(page), "exec")
            exec(code, namespace)
    finally:
        # A page that fails half-way must not leave a PostgreSQL server running.
        for value in namespace.values():
            if isinstance(value, TemporaryPostgres) and Path(value.data).is_dir():
                value.stop()
