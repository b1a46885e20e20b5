"""Keep the translation catalogs in step with the code.

    python packaging/translations.py extract        # code → core/locale/mixtral_desk.pot, then
                                                    # update every .po (new strings empty, gone
                                                    # strings dropped, translations kept)
    python packaging/translations.py merge A.po …   # copy translations from other .po files into
                                                    # the zh_CN catalog (for strings it has)
    python packaging/translations.py check          # exit 1 unless every string in the code has
                                                    # a translation with the same {placeholders}
    python packaging/translations.py compile        # .po → .mo (the package build does this too)

Strings are found by Babel in calls to ``tr`` / ``ntr`` / ``N_`` in core/, desktop/ and
mixtral_desk/. Needs Babel (installed with the ``test`` extra).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "core" / "locale"
TEMPLATE = LOCALE / "mixtral_desk.pot"
SOURCES = ("core", "desktop", "mixtral_desk")
KEYWORDS = {"tr": None, "ntr": (1, 2), "N_": None}
PLACEHOLDER = re.compile(r"\{(\w*)[^{}]*\}")

sys.path.insert(0, str(ROOT))
from setup import compile_catalogs  # noqa: E402 - the package build's own compiler


def catalogs() -> Iterator[Path]:
    """Every translated catalog (``core/locale/<language>/LC_MESSAGES/mixtral_desk.po``)."""
    yield from sorted(LOCALE.glob("*/LC_MESSAGES/mixtral_desk.po"))


def read(path: Path) -> Catalog:
    """A .po/.pot file as a Babel catalog."""
    with path.open("rb") as handle:
        return read_po(handle, abort_invalid=True)


def write(catalog: Catalog, path: Path) -> None:
    """Write a catalog sorted by message, without line numbers (stable diffs)."""
    with path.open("wb") as handle:
        write_po(handle, catalog, width=100, sort_output=True, omit_header=False,
                 include_lineno=False)


def extract() -> Catalog:
    """Every translatable string in the code, with the files it is in."""
    template = Catalog(project="mixtral-desk", charset="utf-8")
    for folder in SOURCES:
        method_map = [("**/locale/**", "ignore"), ("**.py", "python")]
        for filename, lineno, message, comments, context in extract_from_dir(
                ROOT / folder, method_map=method_map, keywords=KEYWORDS):
            template.add(message, locations=[(f"{folder}/{filename}", lineno)],
                         auto_comments=comments, context=context)
    return template


def update() -> None:
    """Rewrite the template from the code and update every catalog from it."""
    template = extract()
    write(template, TEMPLATE)
    for path in catalogs():
        catalog = read(path)
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        write(catalog, path)
        print(f"{path.relative_to(ROOT)}: {len(catalog)} strings")


def merge(fragments: list[Path], language: str = "zh_CN") -> None:
    """Take translations from ``fragments`` for the strings the catalog has and lacks."""
    path = LOCALE / language / "LC_MESSAGES" / "mixtral_desk.po"
    catalog = read(path)
    taken = 0
    for fragment in fragments:
        for message in read(fragment):
            if not message.id or not message.string:
                continue
            mine = catalog.get(message.id, message.context)
            if mine is not None and not _translated(mine):
                mine.string = message.string
                mine.flags.discard("fuzzy")
                taken += 1
    write(catalog, path)
    print(f"{path.relative_to(ROOT)}: took {taken} translations")


def _translated(message: Message) -> bool:
    strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
    return bool(strings) and all(strings) and "fuzzy" not in message.flags


def problems(template: Catalog, catalog: Catalog) -> list[str]:
    """What is missing or wrong in ``catalog`` for the strings of ``template``."""
    found = []
    for wanted in template:
        if not wanted.id:
            continue
        ids = wanted.id if isinstance(wanted.id, (list, tuple)) else [wanted.id]
        where = ", ".join(f"{file}:{line}" for file, line in wanted.locations[:2])
        message = catalog.get(wanted.id, wanted.context)
        if message is None or not _translated(message):
            found.append(f"untranslated ({where}): {ids[0]!r}")
            continue
        holes = set(PLACEHOLDER.findall(" ".join(ids))) | ({"count"} if len(ids) > 1 else set())
        strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
        for string in strings:
            theirs = set(PLACEHOLDER.findall(string))
            if "{" in ids[0] and theirs - holes:
                found.append(f"unknown placeholder ({where}): {ids[0]!r} → {string!r}")
            elif "{" in ids[0] and len(ids) == 1 and theirs != holes:
                found.append(f"placeholders differ ({where}): {ids[0]!r} → {string!r}")
    return found


def check() -> int:
    """Print every problem of every catalog; 1 when there is one."""
    template = extract()
    status = 0
    for path in catalogs():
        found = problems(template, read(path))
        for line in found:
            print(f"{path.relative_to(ROOT)}: {line}")
        print(f"{path.relative_to(ROOT)}: {len(template)} strings, {len(found)} problem(s)")
        status |= bool(found)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("extract", help="update the template and the catalogs from the code")
    merged = commands.add_parser("merge", help="take translations from other .po files")
    merged.add_argument("fragments", nargs="+", type=Path)
    commands.add_parser("check", help="fail unless every string is translated")
    commands.add_parser("compile", help="compile the catalogs to .mo files")
    args = parser.parse_args()
    if args.command == "extract":
        update()
    elif args.command == "merge":
        merge(args.fragments)
    elif args.command == "check":
        return check()
    else:
        for target in compile_catalogs(LOCALE):
            print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
