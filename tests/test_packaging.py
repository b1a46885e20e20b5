"""Fast checks that the packaging recipe (packaging/) is consistent; CI runs the real build.

Nothing here runs PyInstaller: these catch a renamed file, an icon that was not re-rendered, a
module the spec excludes that the app imports, a licence text that is missing.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import plistlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import tomllib

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from pytestqt.qtbot import QtBot

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "mixtral-desk.spec"


def _load(path: Path) -> ModuleType:
    """Import a script of packaging/ under a private name (``build`` is also a PyPI package)."""
    spec = importlib.util.spec_from_file_location(f"_packaging_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec_excludes() -> list[str]:
    tree = ast.parse(SPEC.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "EXCLUDES" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(v) for v in value]
    raise AssertionError("EXCLUDES not found in the spec")


def _app_sources() -> list[Path]:
    return [p for folder in ("core", "desktop", "mixtral_desk")
            for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_spec_compiles_and_names_existing_files() -> None:
    text = SPEC.read_text(encoding="utf-8")
    compile(text, str(SPEC), "exec")
    for relative in re.findall(r'HERE / "([^"]+)"(?: / "([^"]+)")?', text):
        path = PACKAGING.joinpath(*[part for part in relative if part])
        assert path.exists(), f"the spec names {path}, which does not exist"
    assert (PACKAGING / "launcher.py").is_file()
    assert (PACKAGING / "hooks" / "hook-llama_cpp.py").is_file()


def test_excludes_nothing_the_app_imports() -> None:
    excluded = set(_spec_excludes())
    imported = set().union(*(_imported_modules(p) for p in _app_sources()))
    clash = {name for name in imported
             if any(name == ex or name.startswith(ex + ".") for ex in excluded)}
    assert not clash, f"the spec excludes modules the app imports: {sorted(clash)}"


def test_excluded_llama_cpp_modules_are_not_needed_by_llama_cpp() -> None:
    """``import llama_cpp`` still works: llama_cpp/__init__ and llama.py import some siblings."""
    llama_cpp = pytest.importorskip("llama_cpp")
    package = Path(llama_cpp.__file__).parent
    needed = "".join((package / name).read_text(encoding="utf-8")
                     for name in ("__init__.py", "llama.py"))
    for name in _spec_excludes():
        if name.startswith("llama_cpp."):
            leaf = name.split(".", 1)[1]
            assert not re.search(rf"(from \.{leaf}\b|import {re.escape(name)}\b)", needed), name


def test_qt_modules_the_app_uses_are_shipped() -> None:
    used = {name.split(".")[1] for p in _app_sources() for name in _imported_modules(p)
            if name.startswith("PySide6.")}
    assert {"QtCore", "QtGui", "QtWidgets"} <= used
    excluded = {name.split(".")[1] for name in _spec_excludes() if name.startswith("PySide6.")}
    assert not used & excluded


def test_one_declared_http_client() -> None:
    """The app speaks HTTP through httpx2 only, the client huggingface_hub itself uses (so a
    transport error is one type everywhere), and declares it."""
    imported = {name.split(".")[0] for p in _app_sources() for name in _imported_modules(p)}
    assert "httpx2" in imported
    assert not imported & {"httpx", "requests", "urllib3", "aiohttp"}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower()
                for d in config["project"]["dependencies"]}
    assert "httpx2" in declared and "httpx" not in declared


def test_launcher_calls_freeze_support_before_importing_the_app() -> None:
    text = (PACKAGING / "launcher.py").read_text(encoding="utf-8")
    assert text.index("multiprocessing.freeze_support()") < text.index("from mixtral_desk")
    main_text = (ROOT / "mixtral_desk" / "__main__.py").read_text(encoding="utf-8")
    assert "multiprocessing.freeze_support()" in main_text


def test_engine_uses_spawn() -> None:
    """A frozen app can only start the engine by re-running its executable (spawn)."""
    host = (ROOT / "core" / "engine" / "host.py").read_text(encoding="utf-8")
    assert 'get_context("spawn")' in host


def test_licence_components_exist_and_are_dependencies() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    deps = {re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-")
            for d in config["project"]["dependencies"]}
    deps |= {"mixtral-desk", "pyinstaller"}
    components = tomllib.loads((PACKAGING / "licenses" / "components.toml").read_text())
    names = set()
    for entry in components["component"]:
        names.add(entry["name"])
        assert entry["file"] == "third-party" or (PACKAGING / "licenses" / entry["file"]).is_file()
        if "dist" in entry:
            assert entry["dist"].lower().replace("_", "-") in deps, entry["dist"]
    assert {"llama.cpp and ggml", "Qt 6", "Python", "huggingface_hub"} <= names
    lgpl = (PACKAGING / "licenses" / "LGPL-3.0.txt").read_text()
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in lgpl and "Version 3" in lgpl
    assert "MIT License" in (PACKAGING / "licenses" / "llama.cpp-MIT.txt").read_text()


def test_about_dialog_lists_licences(qtbot: QtBot) -> None:
    from mixtral_desk.desktop.about import AboutDialog, components, licence_dir, third_party

    folder = licence_dir()
    assert folder == PACKAGING / "licenses"  # a source checkout
    headline = components(folder)
    assert all(c.texts for c in headline if c.name != "PyInstaller bootloader")
    assert any("GNU LESSER" in c.text() for c in headline if c.name == "Qt 6")
    assert third_party(None) or third_party(folder) is not None
    dialog = AboutDialog()
    qtbot.addWidget(dialog)
    assert dialog.list.count() == len(dialog.entries()) >= len(headline)
    dialog.list.setCurrentRow(1)
    assert "ggml" in dialog.text.toPlainText()


def test_app_icon(qapp: object) -> None:
    from mixtral_desk.desktop.about import app_icon

    icon = app_icon()
    assert not icon.isNull() and 256 in [size.width() for size in icon.availableSizes()]


def test_icons_are_rendered_from_the_svg(qapp: object) -> None:
    """The committed PNGs match the SVG (run packaging/icons/render_icons.py after editing it)."""
    render_icons = _load(PACKAGING / "icons" / "render_icons.py")
    from PySide6.QtGui import QImage

    for size in render_icons.PNG_SIZES:
        committed = QImage(str(PACKAGING / "icons" / f"mixtral-desk-{size}.png"))
        assert committed.width() == size, f"mixtral-desk-{size}.png is missing or the wrong size"
        fresh = render_icons.render(size).convertToFormat(committed.format())
        assert fresh == committed, f"mixtral-desk-{size}.png is out of date: re-render the icons"
    for name in ("mixtral-desk.ico", "mixtral-desk.icns"):
        assert (PACKAGING / "icons" / name).stat().st_size > 1000


def test_desktop_entry() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment, method-assign]
    entry.read(PACKAGING / "linux" / "mixtral-desk.desktop", encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Name"] == "Mixtral Desk"
    assert section["Exec"] == "mixtral-desk" and section["Icon"] == "mixtral-desk"
    assert section["Terminal"] == "false" and section["Categories"].endswith(";")
    install = PACKAGING / "linux" / "install.sh"
    assert os.access(install, os.X_OK)
    assert subprocess.run(["sh", "-n", str(install)], check=False).returncode == 0


def test_linux_extras_exist() -> None:
    build = _load(PACKAGING / "build.py")
    for source in build.LINUX_EXTRAS:
        assert (PACKAGING / source).is_file(), source
    result = subprocess.run([sys.executable, str(PACKAGING / "build.py"), "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--dist" in result.stdout


def test_windows_and_macos_recipes() -> None:
    iss = (PACKAGING / "windows" / "mixtral-desk.iss").read_text(encoding="utf-8")
    for needed in ("AppVersion", "mixtral-desk.exe", "mixtral-desk-cli.exe", "mixtral-desk.ico",
                   "PrivilegesRequired=lowest"):
        assert needed in iss, needed
    version_info = (PACKAGING / "windows" / "version_info.txt").read_text(encoding="utf-8")
    assert "VSVersionInfo" in version_info
    with (PACKAGING / "macos" / "entitlements.plist").open("rb") as file:
        entitlements = plistlib.load(file)
    assert entitlements["com.apple.security.cs.allow-unsigned-executable-memory"] is True
    assert entitlements["com.apple.security.cs.disable-library-validation"] is True
    sign = (PACKAGING / "macos" / "sign.sh").read_text(encoding="utf-8")
    for needed in ("codesign", "--options runtime", "notarytool submit", "stapler staple"):
        assert needed in sign, needed


def test_smoke_script_is_valid() -> None:
    smoke = PACKAGING / "smoke_test.sh"
    assert os.access(smoke, os.X_OK)
    assert subprocess.run(["bash", "-n", str(smoke)], check=False).returncode == 0


def _spec_drop_pattern() -> re.Pattern[str]:
    tree = ast.parse(SPEC.read_text(encoding="utf-8"))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "_DROP" and isinstance(node.value, ast.Call)):
            return re.compile(ast.literal_eval(node.value.args[0]))
    raise AssertionError("_DROP not found in the spec")


def test_spec_keeps_the_qt_files_the_window_needs() -> None:
    drop = _spec_drop_pattern()
    kept = ["PySide6/Qt/plugins/platforms/libqxcb.so",
            "PySide6/Qt/plugins/platforms/libqwayland.so",
            "PySide6/Qt/plugins/platforms/libqoffscreen.so",
            "PySide6/Qt/plugins/platforminputcontexts/libibusplatforminputcontextplugin.so",
            "PySide6/Qt/plugins/imageformats/libqsvg.so", "PySide6/Qt/lib/libQt6Widgets.so.6",
            "PySide6/Qt/translations/qtbase_zh_CN.qm", "PySide6/Qt/translations/qt_zh_CN.qm"]
    dropped = ["PySide6/Qt/plugins/platforms/libqeglfs.so",
               "PySide6/Qt/plugins/platforms/libqminimalegl.so",
               "PySide6/Qt/translations/qtdeclarative_de.qm",
               "PySide6/Qt/lib/libQt6EglFSDeviceIntegration.so.6"]
    assert not [name for name in kept if drop.search(name)]
    assert all(drop.search(name) for name in dropped)


def test_llama_cpp_hook_collects_the_shared_libraries() -> None:
    hook = (PACKAGING / "hooks" / "hook-llama_cpp.py").read_text(encoding="utf-8")
    assert 'collect_dynamic_libs("llama_cpp")' in hook
    app_hook = (PACKAGING / "hooks" / "hook-mixtral_desk.py").read_text(encoding="utf-8")
    assert 'collect_submodules("mixtral_desk")' in app_hook and "models.toml" in app_hook


def test_duplicate_libraries_become_symlinks(tmp_path: Path) -> None:
    build = _load(PACKAGING / "build.py")
    lib = tmp_path / "llama_cpp" / "lib"
    lib.mkdir(parents=True)
    (lib / "libllama.so").write_bytes(b"x" * 100)
    (lib / "libllama.so.0").write_bytes(b"x" * 100)
    (lib / "libmtmd.so").write_bytes(b"y" * 10)  # no twin: stays a file
    (lib / "libggml.so").write_bytes(b"a" * 10)
    (lib / "libggml.so.0").write_bytes(b"b" * 10)  # differs: both stay
    assert build._link_duplicates(tmp_path) == 100
    assert (lib / "libllama.so").is_symlink() and (lib / "libllama.so").read_bytes() == b"x" * 100
    assert not (lib / "libmtmd.so").is_symlink() and not (lib / "libggml.so").is_symlink()
