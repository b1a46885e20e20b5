"""The interface in Simplified Chinese: switching at runtime, nothing left in English, CJK text
that renders and is found, and screenshots of the main screens in Chinese."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QFontDatabase, QFontMetrics
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QLabel, QWidget
from pytestqt.qtbot import QtBot

from mixtral_desk.core import i18n
from mixtral_desk.desktop.chat.sidebar import Sidebar
from mixtral_desk.desktop.i18n import apply_language
from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.signals import emit
from tests.desktop.desktop_helpers import shoot
from tests.desktop.text_walk import english_sources, shown_texts, untranslated

LU_XUN = "鲁迅为什么打周树人？"


@pytest.fixture
def chinese() -> None:
    """The interface in Chinese for this test (the shared fixture switches back to English)."""
    assert apply_language("zh_CN") == "zh_CN", "the zh_CN catalog is not compiled"


def results_text(sidebar: Sidebar) -> str:
    """The words of the search results as shown."""
    labels = [sidebar.results.itemWidget(sidebar.results.item(row))
              for row in range(sidebar.results.count())]
    return " ".join(label.text() for label in labels if isinstance(label, QLabel))


def check_all_translated(root: QWidget, *, skip: tuple[QWidget, ...] = ()) -> int:
    texts = shown_texts(root, skip=skip)
    left = untranslated(texts, english_sources())
    assert not left, "English left in the Chinese interface:\n" + "\n".join(
        f"  {t.where} {t.kind}: {t.text!r}" for t in left)
    return len(texts)


def test_switching_language_at_runtime_retranslates_everything(window: MainWindow) -> None:
    page = window.chat_page
    assert window.chat_action.text() == "Chat"
    assert page.sidebar.search_box.placeholderText().startswith("Search")
    apply_language("zh_CN")
    assert window.chat_action.text() == "聊天"
    assert window.models_action.text() == "模型"
    assert window.settings_action.text() == "设置"
    assert "搜索" in page.sidebar.search_box.placeholderText()
    # Qt's own strings come from Qt's bundled catalog.
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
    assert buttons.button(QDialogButtonBox.StandardButton.Cancel).text() == "取消"
    buttons.deleteLater()
    apply_language("en")
    assert window.chat_action.text() == "Chat"
    assert page.sidebar.search_box.placeholderText().startswith("Search")
    assert i18n.current_language() == "en"


def test_language_setting_is_applied_when_saved(window: MainWindow, qtbot: QtBot) -> None:
    settings = window.settings
    chinese = settings.model_copy(update={"interface": settings.interface.model_copy(
        update={"language": "zh_CN"})})
    with qtbot.waitSignal(window.settings_saved, timeout=5000):
        window.save_settings(chinese)
    assert i18n.current_language() == "zh_CN"
    assert window.settings_action.text() == "设置"
    assert '"language": "zh_CN"' in window.paths.settings_file.read_text(encoding="utf-8")


def test_no_visible_string_is_left_in_english(window: MainWindow, qtbot: QtBot,
                                              chinese: None) -> None:
    counted = check_all_translated(window)  # the welcome screen (first run)
    window.show_chat()
    window.pages.setCurrentWidget(window.chat_page)
    counted += check_all_translated(window)
    with qtbot.waitSignal(window.models_page.catalog.catalog_shown, timeout=10_000):
        window.show_models()  # the catalog's rows (buttons, fit hints) are walked too
    tabs = window.models_page.tabs
    for index in range(tabs.count()):
        tabs.setCurrentIndex(index)
        counted += check_all_translated(window)
    window.show_settings()
    counted += check_all_translated(window)
    from mixtral_desk.desktop.about import AboutDialog

    about = AboutDialog(window)
    counted += check_all_translated(about, skip=(about.text,))
    about.deleteLater()
    assert counted > 100  # the walk saw the screens, not an empty window


def test_a_cjk_font_is_installed_and_used() -> None:
    families = QFontDatabase.families(QFontDatabase.WritingSystem.SimplifiedChinese)
    assert families, ("no font for Simplified Chinese is installed; install one "
                      "(Debian/Ubuntu: apt-get install fonts-noto-cjk)")
    metrics = QFontMetrics(QApplication.font())
    # Each Chinese character gets a real glyph of about the text's height, not a missing-glyph box.
    width = metrics.horizontalAdvance("鲁迅")
    assert width >= metrics.height()


def test_chinese_search_finds_two_character_words(window: MainWindow, qtbot: QtBot,
                                                  chinese: None) -> None:
    store = window.store.store
    assert store is not None
    conversation = store.create_conversation("鲁迅与周树人")
    store.add_message(conversation.id, "user", LU_XUN)
    store.add_message(conversation.id, "assistant", "因为鲁迅就是周树人的笔名，这是一个玩笑。")
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 1)
    window.show_chat()
    assert window.pages.currentWidget() is window.chat_page
    sidebar = window.chat_page.sidebar
    for word in ("鲁迅", "周树人"):
        with qtbot.waitSignal(sidebar.search_results, timeout=5000) as found:
            sidebar.search_box.setText(word)
        assert found.args[0] >= 1
        assert word in results_text(sidebar)
    shoot(window, "zh-search")


def test_screenshots_of_the_main_screens_in_chinese(window: MainWindow, qtbot: QtBot,
                                                     chinese: None) -> None:
    shoot(window, "zh-first-run")
    store = window.store.store
    assert store is not None
    conversation = store.create_conversation("用 Python 反转字符串")
    store.add_message(conversation.id, "user", "怎样在 Python 里反转一个字符串？")
    store.add_message(conversation.id, "assistant",
                      "用切片就行：\n\n```python\ntext[::-1]\n```\n\n步长为 **-1** 时从后往前取。",
                      model="mixtral-8x7b-instruct",
                      stats={"completion_tokens": 32, "decode_tokens_per_s": 18.5})
    other = store.create_conversation(LU_XUN)
    store.add_message(other.id, "user", LU_XUN)
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 2)
    window.show_chat()
    with qtbot.waitSignal(window.chat_page.branch_shown, timeout=5000):
        window.chat_page.open(conversation.id)
    window.notifications.dismiss()
    shoot(window, "zh-chat")
    with qtbot.waitSignal(window.models_page.catalog.catalog_shown, timeout=10_000):
        window.show_models()
    qtbot.waitUntil(lambda: window.models_page.catalog.table.rowCount() > 0)
    shoot(window, "zh-models")
    window.show_settings()
    shoot(window, "zh-settings")
