"""The documentation holds together: every ``docs/<file>.md#<anchor>`` cited in code or docs names a heading
that exists (GitHub's anchor rules), code cites only the paper or docs/, and the README's layout section
lists exactly the top-level folders of the repository."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", ".venv", "venv", "runs", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}

DOC_CITATION = re.compile(r"docs/(?P<file>[A-Za-z0-9_.-]+\.md)#(?P<anchor>[A-Za-z0-9_-]+)")
MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
# Built from pieces so this file does not cite what it forbids.
_OUTSIDE_DOCS = "|".join(("SP" + "EC", "DES" + "IGN", "BRI" + "EF"))
OUTSIDE_CITATION = re.compile(rf"(?<![A-Za-z0-9])(?:PROGRESS_)?(?:{_OUTSIDE_DOCS})(?![A-Za-z0-9])")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lower case, punctuation dropped, spaces → '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)
    text = text.strip().lower()
    kept = "".join(
        ch
        for ch in text
        if ch in "-_ " or unicodedata.category(ch)[0] in ("L", "N") or unicodedata.category(ch) == "Mn"
    )
    return kept.replace(" ", "-")


def anchors_of(markdown: str) -> set[str]:
    """Anchors of every heading outside fenced code blocks, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    in_fence = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        m = None if in_fence else HEADING.match(line)
        if m is None:
            continue
        base = github_anchor(m.group("text"))
        n = seen.get(base, 0)
        anchors.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return anchors


def source_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    suffixes = tuple(suffixes)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if SKIP_DIRS.intersection(rel) or any(p.endswith(".egg-info") or p.startswith(".venv") for p in rel):
            continue
        if path.is_file() and path.suffix in suffixes:
            out.append(path)
    return sorted(out)


def broken_doc_citations(root: Path, files: Iterable[Path]) -> list[str]:
    """``file:line: docs/x.md#a`` for every citation whose file or heading does not exist."""
    cache: dict[str, set[str] | None] = {}
    bad = []
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in DOC_CITATION.finditer(line):
                name, anchor = m.group("file"), m.group("anchor")
                if name not in cache:
                    doc = root / "docs" / name
                    cache[name] = anchors_of(doc.read_text(encoding="utf-8")) if doc.is_file() else None
                anchors = cache[name]
                if anchors is None:
                    bad.append(f"{path.relative_to(root)}:{lineno}: {m.group(0)} (no file docs/{name})")
                elif anchor not in anchors:
                    bad.append(f"{path.relative_to(root)}:{lineno}: {m.group(0)} (no such heading)")
    return bad


def broken_markdown_links(root: Path, files: Iterable[Path]) -> list[str]:
    """Relative links ``[text](file.md#anchor)`` / ``(#anchor)`` in Markdown whose target is missing."""
    bad = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            for m in MD_LINK.finditer(line):
                target = m.group("target")
                if re.match(r"^[a-z]+:", target):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (path.parent / file_part).resolve() if file_part else path
                if not dest.exists():
                    bad.append(f"{path.relative_to(root)}:{lineno}: {target} (no such file)")
                elif anchor and dest.suffix == ".md" and anchor not in anchors_of(dest.read_text(encoding="utf-8")):
                    bad.append(f"{path.relative_to(root)}:{lineno}: {target} (no such heading)")
    return bad


def outside_citations(root: Path, files: Iterable[Path]) -> list[str]:
    """``file:line: text`` for every citation of a document that is not in the repository."""
    return [
        f"{path.relative_to(root)}:{lineno}: {line.strip()[:100]}"
        for path in files
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_CITATION.search(line)
    ]


def layout_section(readme: str) -> str:
    m = re.search(r"^## Layout\s*$(?P<body>.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert m, "README.md has no '## Layout' section"
    return m.group("body")


def listed_folders(readme: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z0-9_.-]+)/`", layout_section(readme)))


def top_level_folders(root: Path) -> set[str]:
    """Top-level folders holding tracked files (untracked build output such as .venv or runs/ excluded)."""
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        tracked = [str(p.relative_to(root)) for p in source_files(root, (".py", ".md", ".sh"))]
    return {f.split("/", 1)[0] for f in tracked if "/" in f and not f.startswith(".")}


# ------------------------------------------------------------------------------------- the repository


def test_docs_exist_with_the_headings_the_code_cites():
    for name in ("architecture.md", "algorithm.md"):
        assert (REPO / "docs" / name).is_file(), f"docs/{name} is missing"
    assert {
        "layers",
        "stage-contract",
        "file-kinds",
        "a-round-through-the-files",
        "orchestration",
        "configuration",
    } <= (anchors_of((REPO / "docs" / "architecture.md").read_text(encoding="utf-8")))
    assert {
        "features",
        "concept-clustering",
        "warm-up-pools",
        "round-schedule",
        "selection",
        "probe-and-judge",
        "training",
        "differences-from-the-original-scripts",
    } <= anchors_of((REPO / "docs" / "algorithm.md").read_text(encoding="utf-8"))


def test_every_cited_docs_heading_exists():
    files = [p for p in source_files(REPO, (".py", ".md")) if p != Path(__file__).resolve()]
    bad = broken_doc_citations(REPO, files)
    assert not bad, "citations of missing docs headings:\n" + "\n".join(bad)


def test_relative_markdown_links_resolve():
    files = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
    bad = broken_markdown_links(REPO, [p for p in files if p.is_file()])
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_code_cites_only_the_paper_or_docs():
    files = [p for p in source_files(REPO, (".py",)) if p != Path(__file__).resolve()]
    bad = outside_citations(REPO, files)
    assert not bad, (
        f"{len(bad)} citation(s) of documents outside the repository; cite the paper or a docs/ heading:\n"
        + "\n".join(bad)
    )


def test_readme_layout_lists_exactly_the_top_level_folders():
    listed = listed_folders((REPO / "README.md").read_text(encoding="utf-8"))
    present = top_level_folders(REPO)
    assert listed == present, (
        f"listed but absent: {sorted(listed - present)}; present but unlisted: {sorted(present - listed)}"
    )


# ------------------------------------------------------------------------------------- the checkers


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Layers", "layers"),
        ("A round through the files", "a-round-through-the-files"),
        ("Differences from the original scripts", "differences-from-the-original-scripts"),
        ("Probe and judge", "probe-and-judge"),
        ("Warm-up pools", "warm-up-pools"),
        ("The `progress` strategy (T = 0.5)", "the-progress-strategy-t--05"),
        ("**Bold** and [a link](x.md)", "bold-and-a-link"),
        ("snake_case name", "snake_case-name"),
        ("Größe über alles", "größe-über-alles"),
    ],
)
def test_github_anchor(heading, anchor):
    assert github_anchor(heading) == anchor


def test_anchors_skip_code_blocks_and_number_repeats():
    md = "# Title\n\n## Setup\n\n```bash\n# not a heading\n```\n\n## Setup\n### Setup\n"
    assert anchors_of(md) == {"title", "setup", "setup-1", "setup-2"}


def test_checkers_find_broken_citations_links_and_outside_references(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Real heading\n\nSee [b](b.md#x) and [self](#real-heading).\n")
    code = tmp_path / "m.py"
    code.write_text(
        '"""Cites docs/a.md#real-heading, docs/a.md#gone and docs/nope.md#x."""\n'
        f"# {'SP' + 'EC'} §3.3 and PROGRESS_{'DES' + 'IGN'} §1\n"
        "# INSPECTOR and SPECTRUM are words, not citations\n"
    )
    assert broken_doc_citations(tmp_path, [code]) == [
        "m.py:1: docs/a.md#gone (no such heading)",
        "m.py:1: docs/nope.md#x (no file docs/nope.md)",
    ]
    assert broken_markdown_links(tmp_path, [tmp_path / "docs" / "a.md"]) == ["docs/a.md:5: b.md#x (no such file)"]
    assert [line.split(":")[1] for line in outside_citations(tmp_path, [code])] == ["2"]


def test_layout_parsing():
    readme = "# X\n\n## Layout\n\n- `tasks/` wrappers\n- `docs/` docs, see `a.md`\n\n## Other\n\n`flows/`\n"
    assert listed_folders(readme) == {"tasks", "docs"}
