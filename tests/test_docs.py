"""The README and the docs stay findable: the README fits on a few screens with its two quick-start commands, every
relative link in the README, CONTRIBUTING.md and docs/ reaches a file (and a heading, when it names one), and the
tiers' markers say what they leave out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens (code blocks are not headings)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    titles = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in titles}


def test_the_readme_fits_on_a_few_screens_with_its_two_quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["python3 studio/bootstrap.py launch", "python3 studio/bootstrap.py test"]
    usage = (ROOT / "studio" / "bootstrap.py").read_text()
    assert all(command in usage for command in commands)  # the set-up's own usage names both


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_its_file_and_heading(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_slow_marker_covers_ray_browser_and_load_files():
    """The fast tier (`-m "not slow"`) starts no Ray cluster, drives no browser and runs no load test."""
    heavy = [*(ROOT / "tests").glob("test_ray_*.py"), ROOT / "tests" / "test_browser.py",
             *(ROOT / "tests" / "load").glob("test_*.py")]
    assert len(heavy) >= 6
    for path in heavy:
        marks = re.search(r"^pytestmark = (.+)$", path.read_text(), flags=re.MULTILINE)
        assert marks and "pytest.mark.slow" in marks.group(1), f"{path.name}: no module-level slow mark"
    drivers = [path for path in (ROOT / "tests").rglob("test_*.py")
               if "sync_playwright" in path.read_text() and path != Path(__file__).resolve()]
    assert drivers and set(drivers) <= set(heavy), "a file that drives Chromium is not marked slow"
