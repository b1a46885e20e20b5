"""Translations: the catalog is complete and compiled by the build, languages resolve from locales,
and text switches language within a process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_desk.core import i18n

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("tag", "language"), [
    ("zh_CN.UTF-8", "zh_CN"), ("zh-Hans-CN", "zh_CN"), ("zh_TW", "zh_CN"), ("zh", "zh_CN"),
    ("en_US.UTF-8", "en"), ("de_DE", "en"), ("C", "en"), ("", "en"), (None, "en"),
])
def test_locale_tags_map_to_a_supported_language(tag: str | None, language: str) -> None:
    assert i18n.normalize_language(tag) == language


def test_the_environment_chooses_the_system_language(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    assert i18n.system_language() == "en"
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert i18n.system_language() == "zh_CN"
    monkeypatch.setenv("LANGUAGE", "en_GB:zh_CN")  # the first preference wins
    assert i18n.system_language() == "en"
    assert i18n.resolve_language("system") == "en"
    assert i18n.resolve_language("zh_CN") == "zh_CN"
    assert i18n.resolve_language("system", "zh_CN") == "zh_CN"


def test_the_build_compiled_the_chinese_catalog() -> None:
    assert i18n.catalog_path("zh_CN").is_file(), "pip install compiles the .po (setup.py)"
    assert i18n.set_language("zh_CN") == "zh_CN"
    assert i18n.tr("Settings") == "设置"
    assert i18n.tr("Settings") != "Settings"
    i18n.set_language("en")
    assert i18n.tr("Settings") == "Settings"


def test_placeholders_are_filled_in_either_language() -> None:
    source = "{feature} needs the network, and Offline mode is on. Turn it off in Settings (or " \
             "drop --offline / HF_HUB_OFFLINE) to go online."
    assert i18n.tr(source, feature="Hub search").startswith("Hub search needs the network")
    i18n.set_language("zh_CN")
    text = i18n.tr(source, feature="Hub 搜索")
    assert "Hub 搜索" in text and "{" not in text and "network" not in text
    assert i18n.ntr("{count} model", "{count} models", 3) in ("3 个模型", "3 models")


@pytest.mark.allow_log("mixtral_desk.core.i18n", "No compiled zh_CN catalog")
def test_a_missing_catalog_falls_back_to_english(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    assert i18n.set_language("zh_CN") == "en"
    assert "No compiled zh_CN catalog" in caplog.text
    assert i18n.tr("Settings") == "Settings"


def test_every_string_in_the_code_is_translated() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "packaging" / "translations.py"),
                             "check"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 problem(s)" in result.stdout


def _calls_with_formatted_source(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("tr", "ntr", "N_") and node.args
                and isinstance(node.args[0], (ast.JoinedStr, ast.BinOp, ast.Call))):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_translated_text_is_never_built_before_lookup() -> None:
    """tr(f"…") or tr(a + b) would look up a string no catalog has: the text stays English."""
    offenders = [place for folder in ("core", "desktop")
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for place in _calls_with_formatted_source(path)]
    assert not offenders, offenders
