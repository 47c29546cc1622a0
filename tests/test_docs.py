"""docs/architecture.md keeps up with the code: its layout names every module of
kern_tasks/ and no module that is gone, and every file it names in `backticks` exists.
README.md's configuration table has a row for every variable Settings reads.

The layout is the code block under "## Layout, module by module": one entry a line,
nested by two spaces, a folder ending in "/", several files of one line separated by
commas, a description after the names. A folder entry with a description of its own
stands for everything below it (e.g. `workflow/`); otherwise each module is listed.
Package `__init__.py` files need no entry (the top package's does).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
README = ROOT / "README.md"
SETTINGS = ROOT / "kern_tasks" / "settings.py"
PACKAGE = "kern_tasks"
ENTRY = re.compile(r"^(?P<indent> *)(?P<names>[\w.]+/?(?:, *[\w.]+/?)*)(?P<rest>.*)$")


def layout_block(text: str) -> list[str]:
    section = text.split("## Layout, module by module", 1)[1]
    return section.split("```", 2)[1].splitlines()[1:]


def layout_entries(lines: list[str]) -> tuple[set[str], set[str]]:
    """(files, folders described as a whole), as paths relative to kern_tasks/."""
    files: set[str] = set()
    whole: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, folder path) of the enclosing folders
    for line in lines:
        match = ENTRY.match(line)
        if not match or not line.strip():
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        for name in (n.strip() for n in match["names"].split(",")):
            path = parent + name
            if name.endswith("/"):
                if match["rest"].strip():
                    whole.add(path)
                stack.append((indent, path))
            else:
                files.add(path)
    root = PACKAGE + "/"
    return ({f[len(root):] for f in files if f.startswith(root)}, {w[len(root):] for w in whole if w.startswith(root)})


def modules() -> set[str]:
    base = ROOT / PACKAGE
    found = {str(p.relative_to(base)) for p in base.rglob("*.py") if "__pycache__" not in p.parts}
    return {m for m in found if not m.endswith("/__init__.py")}


def test_the_layout_names_every_module_and_no_missing_one() -> None:
    files, whole = layout_entries(layout_block(DOC.read_text()))
    present = modules()
    unlisted = sorted(m for m in present if m not in files and not any(m.startswith(w) for w in whole))
    assert not unlisted, f"modules missing from docs/architecture.md's layout: {unlisted}"
    gone = sorted(f for f in files if f not in present)
    assert not gone, f"docs/architecture.md's layout names modules that do not exist: {gone}"


def test_every_file_the_document_names_exists() -> None:
    """A `path.py` is a path from the repository root or from kern_tasks/, or a file name
    of tests/ (the document names test modules by file name)."""
    named = set(re.findall(r"`([\w/.-]+\.py)`", DOC.read_text()))
    tests = {p.name for p in (ROOT / "tests").glob("*.py")}
    missing = sorted(
        n for n in named if not (ROOT / n).exists() and not (ROOT / PACKAGE / n).exists() and n not in tests
    )
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_the_layout_parser_reads_nesting_lists_and_whole_folders() -> None:
    lines = [
        "kern_tasks/",
        "  app.py        the app",
        "  db/",
        "    engine.py   the engine",
        "    a.py, b.py  two at once",
        "  os/",
        "    routers/    every router",
        "  workflow/     all of it",
        "tests/          not ours",
    ]
    files, whole = layout_entries(lines)
    assert files == {"app.py", "db/engine.py", "db/a.py", "db/b.py"}
    assert whole == {"os/routers/", "workflow/"}


def test_the_readme_configuration_table_has_every_setting() -> None:
    """Every environment variable settings.py names ("KERN_...", "OPENAI_...") is a row of
    the table under README's "## Configuration", and the table names no variable that is gone."""
    read = set(re.findall(r'"((?:KERN|OPENAI)_[A-Z0-9_]+)"', SETTINGS.read_text()))
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `((?:KERN|OPENAI)_[A-Z0-9_]+)` \|", section, re.MULTILINE))
    assert read, "no setting found in settings.py"
    assert not read - rows, f"settings missing from README's configuration table: {sorted(read - rows)}"
    assert not rows - read, f"README's configuration table names settings nothing reads: {sorted(rows - read)}"
