"""README is a first screen and the manual lives under docs/: every relative link in them leads somewhere.

A link to a file must name a file of the repository; a link with a `#fragment` must name a heading of the file
it points at, as GitHub makes anchors of headings (lower case, punctuation other than `-` and `_` dropped,
spaces become `-`). A link to the web is left alone (there is no network here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    slugs = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        slugs.add(slug)
    return slugs


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_and_a_heading_that_exist(document):
    broken = []
    for target in links(document):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (document.parent / file_part).resolve() if file_part else document
        if not resolved.exists() or ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_is_a_first_screen_that_leads_to_every_document():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    first = "\n".join(readme.splitlines()[:40])
    assert "make run" in first and "make test" in first
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    missing = [str(p.relative_to(ROOT)) for p in DOCUMENTS[1:] if p not in linked]
    assert not missing, f"README leads to none of {missing}"


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n## A section, here\n[ok](#a-section-here) [bad](#nowhere) [gone](missing.md)\n")
    assert anchors(page) == {"title", "a-section-here"}
    assert links(page) == ["#a-section-here", "#nowhere", "missing.md"]
