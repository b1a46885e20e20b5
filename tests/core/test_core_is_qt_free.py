"""core/ must work where Qt is not installed: import every module with PySide6 blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]

BLOCK_QT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    from importlib.abc import MetaPathFinder

    class BlockQt(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"PySide6", "shiboken6", "PyQt5", "PyQt6"}:
                raise ImportError(f"Qt is blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, BlockQt())
    import mixtral_desk.core as core
    names = [m.name for m in pkgutil.walk_packages(core.__path__, "mixtral_desk.core.")]
    for name in names:
        importlib.import_module(name)
    assert not any(m.split(".")[0] in {"PySide6", "shiboken6"} for m in sys.modules)
    from mixtral_desk.core.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_every_core_module_imports_and_the_cli_runs_with_qt_blocked() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCK_QT, "models", "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "mixtral-8x7b-instruct" in result.stdout


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    mapping = config["tool"]["setuptools"]["package-dir"]
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            assert ".".join((package, *relative)) in listed, f"{init.parent} is not packaged"


def test_models_toml_ships_inside_the_package() -> None:
    from importlib.resources import files

    shipped = files("mixtral_desk").joinpath("models.toml")
    assert shipped.is_file()
    assert shipped.read_text(encoding="utf-8") == (ROOT / "models.toml").read_text(
        encoding="utf-8")
