"""The docs keep their word: a short README, and no link that leads nowhere.

Every relative link in README.md, docs/, benchmarks/ and deploy/ must name a
file that exists and, with ``#anchor``, a heading of that file (GitHub's
anchors: lower case, punctuation dropped, spaces as hyphens, ``-1`` for the
second heading of the same name).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

README_MAX_LINES = 200
PAGES = sorted(
    [
        REPO / "README.md",
        REPO / "deploy" / "README.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "benchmarks").glob("*.md"),
    ]
)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The page without code: a `[x](y)` or `# comment` inside code is not a link or a heading."""
    return FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path: Path) -> list[str]:
    return LINK.findall(INLINE_CODE.sub("", prose(path.read_text(encoding="utf-8"))))


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; at most {README_MAX_LINES}"


def test_the_checker_sees_links_and_anchors(tmp_path):
    """The checker itself: a link in code is ignored, a link in prose found, headings slugged."""
    page = tmp_path / "p.md"
    page.write_text(
        "# Reading it: the contract\n## `summary.json`\n## Same\n## Same\n"
        "see [a](b.md#x) and `[no](c.md)`\n```\n[no](d.md)\n# not a heading\n```\n"
    )
    assert links(page) == ["b.md#x"]
    assert anchors(page) == {"reading-it-the-contract", "summaryjson", "same", "same-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_somewhere(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_docs_folder_is_reachable_from_the_readme():
    """Every page in docs/ is linked from the README's table of contents."""
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md")}
    orphans = [p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs/ pages the README does not link: {', '.join(sorted(orphans))}"


NIGHTLY_COMMAND = re.compile(r"python\S*\s+jobs/nightly_copy\.py([^\n`]*)")


def documented_nightly_commands() -> list[tuple[str, list[str]]]:
    """Every ``python jobs/nightly_copy.py ...`` in the README and docs/ (code blocks and inline
    code), as (page, the job's arguments); ``...`` and ``[optional]`` brackets are dropped."""
    import shlex

    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n", " ", page.read_text(encoding="utf-8"))  # continued lines joined
        for match in NIGHTLY_COMMAND.finditer(text):
            words = [w.strip("[]") for w in shlex.split(match.group(1), comments=True) if w != "..."]
            # A placeholder (--run-date <date>) is dropped with its flag.
            held = [i for i, w in enumerate(words) if re.fullmatch(r"<[^>]+>", w)]
            drop = set(held) | {i - 1 for i in held}
            found.append((page.name, [w for i, w in enumerate(words) if i not in drop]))
    return found


def test_documented_nightly_commands_use_real_flags():
    """A documented command whose flag was renamed or dropped fails here, not in a reader's shell."""
    from factory.cli import build_parser
    from factory.errors import UsageError

    commands = documented_nightly_commands()
    assert len(commands) >= 8, commands  # the README's, running.md's, campaigns.md's, ...
    parser = build_parser()
    wrong = []
    for page, args in commands:
        try:
            parser.parse_args(args)
        except (SystemExit, UsageError) as exc:  # the job's parser prints the mistake and exits 2
            wrong.append(f"{page}: {' '.join(args)}: {exc}")
    assert not wrong, "\n".join(wrong)
