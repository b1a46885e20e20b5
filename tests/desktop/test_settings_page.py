"""The Settings page: the interface, network, idle-unload and prompt cache controls, keyboard use,
and a language switch that re-renders the page without touching the user's unsaved edits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.engine import prompt_cache
from mixtral_desk.core.engine.prompt_cache import folder_usage
from mixtral_desk.core.session import CacheFolderError, CacheReport, cache_folder
from mixtral_desk.core.session.loading import prompt_cache_dir
from mixtral_desk.core.settings import LoadDefaults, Settings
from mixtral_desk.core.units import format_bytes
from mixtral_desk.desktop.bridge.tasks import TaskQueue
from mixtral_desk.desktop.i18n import apply_language
from mixtral_desk.desktop.settings.page import SettingsPage
from tests.desktop.desktop_helpers import fill_prompt_cache, use_mini_catalog

#: A few of the page's strings, enough to see a language switch re-render it.
MINI_CATALOG: dict[str | tuple[str, str], str] = {
    "Save": "保存", "Revert": "还原", "Language": "语言", "Theme": "主题",
    "Follow the system": "跟随系统", "Light": "浅色", "Dark": "深色", "Never": "从不",
    " min": " 分钟", "Offline mode": "离线模式", "all layers": "全部层",
    "Automatic (8,192, more if memory is plentiful)": "自动（8,192，内存充裕时更长）",
}


@pytest.fixture
def mini_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A small zh_CN catalog in place of the real one; English again afterwards."""
    use_mini_catalog(tmp_path / "locale", monkeypatch, MINI_CATALOG)
    yield
    apply_language("en")


@pytest.fixture
def io() -> Iterator[TaskQueue]:
    """The window's ``io`` task queue, as the page gets it (closed after the test)."""
    queue = TaskQueue("io")
    yield queue
    queue.close()


@pytest.fixture
def page(qtbot: QtBot, io: TaskQueue) -> SettingsPage:
    widget = SettingsPage(Settings(), io)
    qtbot.addWidget(widget)
    return widget


def test_new_controls_show_the_settings_and_save_them(page: SettingsPage, qtbot: QtBot) -> None:
    assert [page.language.itemData(i) for i in range(page.language.count())] == \
        ["system", "en", "zh_CN"]
    # Each language is named in its own language, whatever the interface language.
    assert [page.language.itemText(i) for i in range(page.language.count())] == \
        ["Follow the system", "English", "简体中文"]
    assert [page.theme.itemText(i) for i in range(page.theme.count())] == \
        ["Follow the system", "Light", "Dark"]
    assert page.language.currentData() == "system" and page.theme.currentData() == "system"
    assert not page.offline_mode.isChecked()
    assert "chat, search and export work as always" in page.offline_note.text()
    assert page.idle_unload.value() == 30 and page.idle_unload.suffix() == " min"
    assert page.n_ctx.value() == 0
    assert page.n_ctx.text() == "Automatic (8,192, more if memory is plentiful)"
    page.idle_unload.setValue(0)
    assert page.idle_unload.text() == "Never"

    page.language.setCurrentIndex(page.language.findData("zh_CN"))
    page.theme.setCurrentIndex(page.theme.findData("dark"))
    page.offline_mode.setChecked(True)
    page.n_ctx.setValue(100)  # below the minimum: saved as the minimum
    with qtbot.waitSignal(page.save_requested, timeout=1000) as saved:
        QTest.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    settings = saved.args[0]
    assert isinstance(settings, Settings)
    assert settings.interface.language == "zh_CN" and settings.interface.theme == "dark"
    assert settings.network.offline is True
    assert settings.load.idle_unload_minutes == 0 and settings.load.n_ctx == 256

    page.set_settings(settings)
    assert page.language.currentData() == "zh_CN" and page.theme.currentData() == "dark"
    assert page.offline_mode.isChecked() and page.idle_unload.value() == 0
    page.n_ctx.setValue(0)
    assert page.settings().load.n_ctx is None  # automatic


def test_the_idle_unload_time_needs_no_reload(page: SettingsPage) -> None:
    settings = Settings()
    page.set_settings(settings)
    page._loaded_with = settings.load  # a model was loaded with these
    page.saved(settings.model_copy(update={
        "load": settings.load.model_copy(update={"idle_unload_minutes": 5})}))
    assert page.reload_note.isHidden()
    page.saved(settings.model_copy(update={
        "load": settings.load.model_copy(update={"n_batch": 256})}))
    assert not page.reload_note.isHidden()


def test_new_controls_work_from_the_keyboard(page: SettingsPage, qtbot: QtBot) -> None:
    page.show()
    qtbot.waitExposed(page)
    for widget in (page.language, page.theme, page.offline_mode, page.idle_unload,
                   page.save_button, page.revert_button):
        assert widget.focusPolicy() & Qt.FocusPolicy.TabFocus, widget
    QTest.keyClick(page.language, Qt.Key.Key_Down)
    assert page.language.currentData() == "en"
    QTest.keyClick(page.offline_mode, Qt.Key.Key_Space)
    assert page.offline_mode.isChecked()
    page.idle_unload.setValue(1)
    QTest.keyClick(page.idle_unload, Qt.Key.Key_Down)
    assert page.idle_unload.value() == 0 and page.idle_unload.text() == "Never"
    with qtbot.waitSignal(page.save_requested, timeout=1000) as saved:
        QTest.keyClick(page.save_button, Qt.Key.Key_Space)
    assert saved.args[0].interface.language == "en" and saved.args[0].network.offline
    # The labels name their fields (screen readers, Alt shortcuts of translations).
    assert page.language_label.buddy() is page.language
    assert page.idle_unload_label.buddy() is page.idle_unload
    assert page.gpu_layers_label.buddy() is page.gpu_slider
    assert page.gpu_slider.accessibleName() == "GPU layers"


def test_a_language_switch_keeps_unsaved_edits_and_saves_nothing(
        page: SettingsPage, qtbot: QtBot, mini_chinese: None) -> None:
    page.theme.setCurrentIndex(page.theme.findData("light"))
    page.language.setCurrentIndex(page.language.findData("zh_CN"))
    page.idle_unload.setValue(0)
    page.offline_mode.setChecked(True)
    page.gpu_slider.setValue(page.gpu_slider.maximum())
    page.temperature.setValue(1.25)
    before = page.settings()
    with qtbot.assertNotEmitted(page.save_requested), \
            qtbot.assertNotEmitted(page.language.currentIndexChanged), \
            qtbot.assertNotEmitted(page.theme.currentIndexChanged):
        assert apply_language("zh_CN") == "zh_CN"
    assert page.save_button.text() == "保存" and page.language_label.text() == "语言"
    assert page.theme.currentText() == "浅色" and page.language.itemText(0) == "跟随系统"
    assert page.language.itemText(2) == "简体中文" and page.language.itemText(1) == "English"
    assert page.idle_unload.text() == "从不" and page.offline_mode.text() == "离线模式"
    assert page.gpu_label.text() == "全部层"
    assert page.settings() == before  # the unsaved edits are all still there
    apply_language("en")
    assert page.save_button.text() == "Save" and page.theme.currentText() == "Light"
    assert page.settings() == before


# --- the prompt cache ---------------------------------------------------------------------------


def test_the_prompt_cache_budget_round_trips(page: SettingsPage, qtbot: QtBot) -> None:
    box = page.prompt_cache
    assert [box.mode.itemText(i) for i in range(box.mode.count())] == \
        ["Automatic", "Off", "Up to"]
    assert box.mode.currentData() == "auto" and page.settings().load.prompt_cache_gib is None
    assert box.limit.isHidden()
    for value in (0.0, 2.5, None, 16.0):
        page.set_settings(Settings(load=LoadDefaults(prompt_cache_gib=value)))
        assert page.settings().load.prompt_cache_gib == value
    assert box.mode.currentData() == "limit" and not box.limit.isHidden()
    assert box.limit.text() == "16.0 GiB"

    page.show()  # measures the folder in the background
    qtbot.waitExposed(page)
    assert box.mode.focusPolicy() & Qt.FocusPolicy.TabFocus
    assert box.mode_label.buddy() is box.mode
    QTest.keyClick(box.mode, Qt.Key.Key_Up)  # "Up to" → "Off"
    assert box.mode.currentData() == "off" and box.limit.isHidden()
    with qtbot.waitSignal(page.save_requested, timeout=1000) as saved:
        QTest.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    assert saved.args[0].load.prompt_cache_gib == 0
    box.mode.setCurrentIndex(box.mode.findData("limit"))
    box.limit.setValue(3.24)
    assert page.settings().load.prompt_cache_gib == 3.2  # one decimal, as shown
    qtbot.waitUntil(lambda: not box.working)
    assert box.usage.text() == "The cache is empty."


def test_clear_cache_empties_the_folder_off_the_gui_thread(page: SettingsPage, qtbot: QtBot,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fill_prompt_cache(["a", "b", "c"])
    threads: list[threading.Thread] = []

    def clear_and_note_the_thread(root: Path) -> int:
        threads.append(threading.current_thread())
        return prompt_cache.clear_folder(root)

    monkeypatch.setattr(cache_folder, "clear_folder", clear_and_note_the_thread)
    box = page.prompt_cache
    with qtbot.waitSignal(box.measured, timeout=5000) as measured:
        page.show()
    report = measured.args[0]
    assert isinstance(report, CacheReport) and report.entries == 3
    assert box.usage.text() == f"{format_bytes(report.bytes)} in 3 saved states."
    assert box.usage.toolTip() == f"Folder: {prompt_cache_dir()}"
    assert "Automatic allows" in box.note.text()
    assert "may be slower" in box.clear_button.toolTip()

    with qtbot.waitSignal(box.cleared, timeout=5000) as cleared:
        QTest.mouseClick(box.clear_button, Qt.MouseButton.LeftButton)
    assert cleared.args[0] == report.bytes
    assert threads and threads[0] is not threading.main_thread()
    assert folder_usage(prompt_cache_dir()).files == 0
    assert box.usage.text() == \
        f"Cleared: {format_bytes(report.bytes)} freed. The cache is empty."
    assert box.clear_button.isEnabled()


def test_an_unreadable_cache_folder_is_said_in_the_group(page: SettingsPage,
                                                         qtbot: QtBot) -> None:
    folder = prompt_cache_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the folder should be")
    box = page.prompt_cache
    with qtbot.waitSignal(box.measured, timeout=5000) as measured:
        page.show()
    assert isinstance(measured.args[0], CacheFolderError)
    assert box.usage.text().startswith(f"Cannot read the prompt cache folder {folder}")
    with qtbot.waitSignal(box.measured, timeout=5000):
        box.clear()
    assert box.usage.text().startswith("Cannot read the prompt cache folder")
    assert box.clear_button.isEnabled() and folder.is_file()
