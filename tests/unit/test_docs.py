"""The documentation's links go somewhere, and the README stays a five-minute read."""

import re
from pathlib import Path

from tests.conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_MAX_LINES = 250


def prose(page: Path) -> str:
    """The page without its code blocks (a `#` comment there is no heading, `](x)` no link)."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to '-'."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", prose(page), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    return [link for link in LINK.findall(prose(page)) if not re.match(r"[a-z]+:", link)]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    assert len(PAGES) > 5, PAGES
    broken = []
    checked = 0
    for page in PAGES:
        for link in relative_links(page):
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            checked += 1
            if not path.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {link} (no such heading)")
    assert checked > 10  # the pages do link to each other
    assert not broken, "\n".join(broken)


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = {Path(link.partition("#")[0]).name for link in relative_links(REPO_ROOT / "README.md")}
    assert {page.name for page in PAGES[1:]} <= linked
