"""The README and the docs/ pages: every relative link resolves, and the README stays a front page.

A link resolves when its file exists (relative to the page) and its anchor, if any, is a heading of the target page
under GitHub's slug rules: the heading's text in lower case, punctuation other than `-` and `_` dropped, each space
a `-`, and repeated headings numbered `-1`, `-2`, ... in page order. Headings and links inside fenced code blocks,
and links inside inline code, do not count. http(s) and mailto links are not checked (no network here).

Standard library and pytest only, no project imports: it runs in milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, inside a fenced code block) for every line; a fence's own lines count as inside."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None:
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence = match.group(1)
                yield number, line, True
                continue
            yield number, line, False
        else:
            if match and closes(fence, match):
                fence = None
            yield number, line, True


def closes(fence: str, match: re.Match[str]) -> bool:
    """A closing fence: the opening's character, at least as many of them, nothing after."""
    marks, rest = match.group(1), match.group(2)
    return marks[0] == fence[0] and len(marks) >= len(fence) and not rest.strip()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (before numbering repeats)."""
    text = INLINE_LINK_TEXT.sub(r"\1", heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor the page's headings give, repeats numbered as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line, in_code in prose_lines(page.read_text(encoding="utf-8")):
        match = None if in_code else HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2) or "")
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every markdown link and image outside code."""
    for number, line, in_code in prose_lines(page.read_text(encoding="utf-8")):
        if in_code:
            continue
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            yield number, match.group(1)


def broken(page: Path, target: str, cache: dict[Path, set[str]]) -> str | None:
    """Why a link target does not resolve from `page`, or None when it does."""
    if not target:
        return "empty link"
    if SCHEME.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    destination = (page.parent / unquote(path_part)).resolve() if path_part else page
    if not destination.exists():
        return f"no such file: {destination.relative_to(ROOT) if destination.is_relative_to(ROOT) else destination}"
    if not anchor:
        return None
    if destination.suffix != ".md":
        return f"an anchor into a file that is not a markdown page: {target}"
    if destination not in cache:
        cache[destination] = anchors(destination)
    if unquote(anchor) not in cache[destination]:
        return f"no heading for #{anchor} in {destination.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    cache: dict[Path, set[str]] = {}
    problems = [
        f"{page.relative_to(ROOT)}:{number}: ({target}) {reason}"
        for number, target in links(page)
        if (reason := broken(page, target, cache)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def test_readme_opens_with_the_two_commands() -> None:
    """CI and users rely on the README's first code block holding `make demo` and `make test`."""
    block: list[str] = []
    started = False
    for _, line, in_code in prose_lines(README.read_text(encoding="utf-8")):
        if in_code:
            if started and FENCE.match(line):
                break
            if started:
                block.append(line.strip())
            started = True
        elif started:
            break
    assert any(line.startswith("make demo") for line in block), block
    assert any(line.startswith("make test") for line in block), block


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README)
        if target and not SCHEME.match(target) and target.partition("#")[0]
    }
    missing = [str(page.relative_to(ROOT)) for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not missing, f"docs pages the README does not link to: {missing}"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Running it locally with the SAM CLI (no AWS account)", "running-it-locally-with-the-sam-cli-no-aws-account"),
        ("Long audio: fan-out", "long-audio-fan-out"),
        (
            "Exactness: fastcluster's `linkage_vector` against scipy's `linkage`",
            "exactness-fastclusters-linkage_vector-against-scipys-linkage",
        ),
        ("Per file — Test and sample (never tuned on)", "per-file--test-and-sample-never-tuned-on"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_repeated_headings_are_numbered_and_code_blocks_do_not_count(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n## Notes\n\n```bash\n# not a heading\n```\n\n## Notes\n", encoding="utf-8")
    assert anchors(page) == {"notes", "notes-1", "notes-2"}
