"""The README's Architecture section names every module of core/ and desktop/, and nothing else.

The section's code block is a tree. An entry line is indented 0, 2, 4 or 6 spaces (two per
package level) and starts with one name or several separated by ", ": a module (``paths``) or a
folder (``engine/``); its description follows after two spaces. A line indented further is the
continuation of a description. Entries below a folder, two spaces deeper, are its contents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("core", "desktop")  # every module and package in these must be named
_NAME = r"[A-Za-z_][A-Za-z0-9_]*/?"
_NAMES = re.compile(rf"{_NAME}(, {_NAME})*")
_MAX_ENTRY_INDENT = 6


@dataclass(frozen=True)
class Mention:
    path: str  # relative to the repository, e.g. "core/engine/host" or "core/engine/"
    line: int


def architecture_block(readme: str) -> list[str]:
    """The lines of the first code block after the ``## Architecture`` heading."""
    section = readme.split("\n## Architecture\n", 1)
    assert len(section) == 2, "the README has no '## Architecture' section"
    match = re.search(r"^```[^\n]*\n(.*?)^```", section[1], re.MULTILINE | re.DOTALL)
    assert match, "the Architecture section has no code block"
    return match.group(1).splitlines()


def parse_tree(lines: list[str]) -> list[Mention]:
    """Every name the tree mentions, as a path; raises AssertionError on a line it cannot read."""
    mentions: list[Mention] = []
    folders: list[str] = []  # the open folders, one per level
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent > _MAX_ENTRY_INDENT:
            continue  # a description's continuation
        names = re.split(r" {2,}", line.strip(), maxsplit=1)[0]
        assert indent % 2 == 0 and _NAMES.fullmatch(names), (
            f"Architecture line {number}: expected 'name, name/  description', got {line!r}")
        level = indent // 2
        assert level <= len(folders), (
            f"Architecture line {number}: indented deeper than under a folder: {line!r}")
        del folders[level:]
        parent = "".join(folders)
        for name in names.split(", "):
            mentions.append(Mention(parent + name, number))
        last = names.split(", ")[-1]
        if last.endswith("/") and len(names.split(", ")) == 1:
            folders.append(last)
    return mentions


def source_tree() -> set[str]:
    """Every package (``core/engine/``) and module (``core/engine/host``) under CHECKED; package
    ``__init__`` files and data folders (``locale/``) are not modules to name."""
    found: set[str] = set()
    for top in CHECKED:
        found.add(f"{top}/")
        for path in (ROOT / top).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT)
            if path.name != "__init__.py":
                found.add(relative.with_suffix("").as_posix())
            for folder in relative.parents:
                if folder != Path() and (ROOT / folder / "__init__.py").is_file():
                    found.add(folder.as_posix() + "/")
    return found


def _exists(path: str) -> bool:
    if path.endswith("/"):
        return (ROOT / path).is_dir()
    return (ROOT / f"{path}.py").is_file()


def test_the_tree_format_is_read_as_documented() -> None:
    lines = ["core/          the core", "  paths, settings",
             "                where files live; the settings",
             "  engine/       the engine", "    host, worker  the two sides",
             "  chat          one turn", "desktop/      the window"]
    assert [m.path for m in parse_tree(lines)] == [
        "core/", "core/paths", "core/settings", "core/engine/", "core/engine/host",
        "core/engine/worker", "core/chat", "desktop/"]


def test_every_module_is_named_and_every_name_exists() -> None:
    mentions = parse_tree(architecture_block((ROOT / "README.md").read_text(encoding="utf-8")))
    named = [m.path for m in mentions]
    missing = sorted(source_tree() - set(named))
    assert not missing, f"the README's Architecture section does not name: {missing}"
    wrong = [f"{m.path} (line {m.line})" for m in mentions if not _exists(m.path)]
    assert not wrong, f"the README's Architecture section names what does not exist: {wrong}"
    twice = sorted({path for path in named if named.count(path) > 1})
    assert not twice, f"the README's Architecture section names these twice: {twice}"
