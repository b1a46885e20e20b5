"""Build hook: compile the translation catalogs (``core/locale/*/LC_MESSAGES/*.po`` → ``.mo``).

Everything else about the package is in pyproject.toml. The compiled ``.mo`` files are written
beside their sources (so that editable installs find them too) and are never committed.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def compile_catalogs(locale_dir: Path) -> list[Path]:
    """Compile every ``.po`` under ``locale_dir`` to a ``.mo`` beside it; returns the ``.mo`` paths.

    Raises:
        ValueError: a catalog has a syntax error (Babel names the line).
    """
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    compiled = []
    for source in sorted(locale_dir.glob("*/LC_MESSAGES/*.po")):
        with source.open("rb") as handle:
            catalog = read_po(handle, abort_invalid=True)
        target = source.with_suffix(".mo")
        with target.open("wb") as handle:
            write_mo(handle, catalog, use_fuzzy=False)
        compiled.append(target)
    return compiled


class BuildPyWithCatalogs(build_py):
    """``build_py`` that first compiles the catalogs, so that package data includes them."""

    def run(self) -> None:
        compile_catalogs(HERE / "core" / "locale")
        super().run()


# setuptools runs this file as __main__; packaging/translations.py imports it.
if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithCatalogs})
