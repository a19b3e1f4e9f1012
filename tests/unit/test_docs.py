"""The user-facing docs stay a short door plus pages by topic, without the tracker's vocabulary.

Cheap checks of what `mkdocs build --strict` (in CI) does not see: the README's length, issue
references in user-facing text, and every page under docs/ being reachable from the navigation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_MAX_LINES = 200
ISSUE_REFERENCE = re.compile(
    r"(?<![\w&/#])#\d+\b"  # "#16", but not "&#39;", "a/#1" or "##2"
    r"|\b(?:issues?|PR|pull request)\s+#?\d+\b",  # "issue 16", "PR #3"
    re.IGNORECASE,
)


def user_facing() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def nav_pages(entries: Any) -> set[str]:
    """Every page the mkdocs.yml nav names, however deeply sectioned."""
    if isinstance(entries, str):
        return {entries}
    if isinstance(entries, list):
        return set().union(*(nav_pages(e) for e in entries)) if entries else set()
    if isinstance(entries, dict):
        return set().union(*(nav_pages(v) for v in entries.values())) if entries else set()
    return set()


def test_readme_is_a_short_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("path", user_facing(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_references(path: Path):
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in ISSUE_REFERENCE.finditer(line)
    ]
    assert not hits, "issue references in user-facing text:\n" + "\n".join(hits)


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config.get("nav", []))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), f"pages missing from mkdocs.yml nav: {sorted(pages - listed)}"
    assert listed - pages == set(), f"nav names missing pages: {sorted(listed - pages)}"


@pytest.mark.parametrize(
    "text, found",
    [
        ("fixed in #16", True),
        ("see issue 16", True),
        ("Issue #21 says", True),
        ("PR #3", True),
        ("instances[3].features", False),
        ("[Cost](delivery.md#cost-as-the-bill-would-show-it)", False),
        ("&#39;quoted&#39;", False),
        ("## 2. Heading", False),
    ],
)
def test_the_issue_pattern(text: str, found: bool):
    assert bool(ISSUE_REFERENCE.search(text)) is found
