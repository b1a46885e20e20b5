"""The chat screen from the keyboard, its texts after a language switch, and its colours in a dark
palette: sidebar keys, message and branch keys, Ctrl+R, the status bar's network note."""

from __future__ import annotations

import gettext
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractItemView, QApplication, QMenu
from pytestqt.qtbot import QtBot

from mixtral_desk.core import i18n
from mixtral_desk.core.store import Conversation
from mixtral_desk.desktop.chat.chat_view import ChatView
from mixtral_desk.desktop.chat.message_view import MessageView
from mixtral_desk.desktop.chat.shown_branch import MessageItem, ShownBranch
from mixtral_desk.desktop.chat.sidebar import relative_time
from mixtral_desk.desktop.errors import Notice
from mixtral_desk.desktop.i18n import _language_hub
from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.notification_bar import NotificationBar
from mixtral_desk.desktop.signals import emit
from mixtral_desk.desktop.status_bar import StatusBar

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
CODE_REPLY = "Use a slice:\n\n```python\ntext[::-1]\n```\n\nor `reversed()`."


def item(id_: str, role: str, content: str, siblings: tuple[str, ...] = (),
         index: int = 0, status: str = "complete") -> MessageItem:
    return MessageItem(id=id_, role=role, content=content, status=status, model=None,
                       stats=None, siblings=siblings or (id_,), index=index)


def thread(*items: MessageItem, title: str = "Strings") -> ShownBranch:
    conversation = Conversation(id="c1", title=title, created_at=NOW, updated_at=NOW,
                                model=None, system_prompt=None, settings={}, pinned=False,
                                archived=False, active_leaf_id=items[-1].id if items else None)
    return ShownBranch(conversation, items)


def run_menu(action: object) -> list[str]:
    """Texts of the next popup menu; ``action`` opens it (the menu is closed again)."""
    seen: list[str] = []

    def grab() -> None:
        menu = QApplication.activePopupWidget()
        if isinstance(menu, QMenu):
            seen.extend(a.text() for a in menu.actions() if not a.isSeparator())
            menu.close()
        else:
            QTimer.singleShot(20, grab)

    QTimer.singleShot(0, grab)
    action()  # type: ignore[operator]
    return seen


@pytest.fixture
def pseudo_language() -> Iterator[None]:
    """Every text in «guillemets», as if another language were chosen (English again after)."""

    class Marked(gettext.NullTranslations):
        def gettext(self, message: str) -> str:
            return f"«{message}»"

        def ngettext(self, singular: str, plural: str, n: int) -> str:
            return f"«{singular if n == 1 else plural}»"

    previous = i18n._translations
    i18n._translations = Marked()
    emit(_language_hub().changed, "xx")
    yield
    i18n._translations = previous
    emit(_language_hub().changed, i18n.SOURCE_LANGUAGE)


@pytest.fixture
def dark_palette(qapp: QApplication) -> Iterator[QPalette]:
    """The application in a dark palette for this test (the previous one again after)."""
    previous = QPalette(qapp.palette())
    dark = QPalette(QColor("#202124"))
    for role, colour in ((QPalette.ColorRole.Window, "#202124"),
                         (QPalette.ColorRole.WindowText, "#e8eaed"),
                         (QPalette.ColorRole.Base, "#17181a"),
                         (QPalette.ColorRole.Text, "#e8eaed"),
                         (QPalette.ColorRole.AlternateBase, "#2a2b2e"),
                         (QPalette.ColorRole.PlaceholderText, "#9aa0a6")):
        dark.setColor(role, QColor(colour))
    qapp.setPalette(dark)
    qapp.processEvents()
    yield dark
    qapp.setPalette(previous)
    qapp.processEvents()


# --- the sidebar -------------------------------------------------------------------------------


def test_sidebar_is_operable_from_the_keyboard(window: MainWindow, qtbot: QtBot) -> None:
    store = window.store.store
    assert store is not None
    first = store.create_conversation("First")
    second = store.create_conversation("Second")
    sidebar = window.chat_page.sidebar
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    qtbot.waitUntil(lambda: len(sidebar.conversations) == 2)
    tree = sidebar.tree
    assert tree.accessibleName() == "Conversations"
    tree.setFocus()
    rows = {c.text(0): c for c in sidebar._items()}
    tree.setCurrentItem(rows["First"])

    # Enter opens the conversation under the cursor.
    with qtbot.waitSignal(sidebar.conversation_selected, timeout=2000) as opened:
        QTest.keyClick(tree, Qt.Key.Key_Return)
    assert opened.args == [first.id]

    # F2 renames it in place; Enter in the editor saves.
    QTest.keyClick(tree, Qt.Key.Key_F2)
    assert tree.state() == QAbstractItemView.State.EditingState
    editor = QApplication.focusWidget()
    assert editor is not None and editor is not tree
    QTest.keyClick(editor, Qt.Key.Key_End)
    QTest.keyClicks(editor, " renamed")
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        QTest.keyClick(editor, Qt.Key.Key_Return)
    assert store.get_conversation(first.id).title == "First renamed"
    qtbot.waitUntil(lambda: "First renamed" in [c.text(0) for c in sidebar._items()])

    # Delete hides it (with an Undo notice); Ctrl+Z brings it back.
    tree.setFocus()
    target = next(c for c in sidebar._items() if c.text(0) == "Second")
    tree.setCurrentItem(target)
    QTest.keyClick(tree, Qt.Key.Key_Delete)
    assert sidebar.is_pending_delete(second.id)
    notice = window.notifications.current
    assert notice is not None and notice.text == "Deleted “Second”."
    assert tree.currentItem() is not None  # the cursor moved on: more keys still work
    QTest.keyClick(tree, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not sidebar.is_pending_delete(second.id)
    assert {c.id for c in sidebar.conversations} == {first.id, second.id}
    notice = window.notifications.current
    assert notice is not None and notice.text == "Restored “Second”."

    # The Menu key and Shift+F10 open the context menu of the item under the cursor.
    target = next(c for c in sidebar._items() if c.text(0) == "Second")
    tree.setCurrentItem(target)
    assert run_menu(lambda: QTest.keyClick(tree, Qt.Key.Key_Menu)) == [
        "Open", "Rename", "Pin to top", "Delete"]
    assert run_menu(lambda: QTest.keyClick(tree, Qt.Key.Key_F10,
                                           Qt.KeyboardModifier.ShiftModifier))[0] == "Open"


def test_search_box_keys(window: MainWindow, qtbot: QtBot) -> None:
    store = window.store.store
    assert store is not None
    conversation = store.create_conversation("Pineapples")
    store.add_message(conversation.id, "user", "Where do pineapples grow?")
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    sidebar = window.chat_page.sidebar
    assert sidebar.search_box.accessibleName() == "Search conversations"
    sidebar.focus_search()
    with qtbot.waitSignal(sidebar.search_results, timeout=5000):
        QTest.keyClicks(sidebar.search_box, "pineapple")
    assert sidebar.results.count() >= 1
    first = sidebar.results.item(0)
    assert first.data(Qt.ItemDataRole.AccessibleTextRole).startswith("Pineapples — ")
    assert sidebar.results.accessibleDescription().endswith(("match", "matches"))
    with qtbot.waitSignal(sidebar.conversation_selected, timeout=2000) as opened:
        QTest.keyClick(sidebar.search_box, Qt.Key.Key_Return)
    assert opened.args == [conversation.id]
    QTest.keyClick(sidebar.search_box, Qt.Key.Key_Down)
    assert sidebar.results.hasFocus() and sidebar.results.currentRow() == 0
    with qtbot.waitSignal(sidebar.conversation_selected, timeout=2000):
        QTest.keyClick(sidebar.results, Qt.Key.Key_Return)


def test_relative_times() -> None:
    from datetime import timedelta

    assert relative_time(NOW, NOW) == "just now"
    assert relative_time(NOW - timedelta(minutes=1), NOW) == "1 minute ago"
    assert relative_time(NOW - timedelta(minutes=5), NOW) == "5 minutes ago"
    assert relative_time(NOW - timedelta(days=3), NOW) == "3 days ago"
    long_ago = NOW - timedelta(days=90)
    assert relative_time(long_ago, NOW) == long_ago.astimezone().date().isoformat()


# --- messages ----------------------------------------------------------------------------------


def test_message_buttons_are_in_the_tab_order_and_named(qtbot: QtBot) -> None:
    view = MessageView(item("b", "assistant", "Second try", ("a", "b", "c"), 1), "assistant")
    qtbot.addWidget(view)
    view.set_last(True)
    with qtbot.waitActive(view):
        view.show()
    assert view.prev_button.accessibleName() == "Previous branch"
    assert view.next_button.accessibleName() == "Next branch"
    assert view.branch_label.text() == "2/3"
    assert view.branch_label.accessibleName() == "Branch 2 of 3"
    assert "Alt+Left" in view.prev_button.toolTip()
    view.body.setFocus()
    order = []
    for _ in range(5):
        focused = QApplication.focusWidget()
        assert focused is not None
        QTest.keyClick(focused, Qt.Key.Key_Tab)
        order.append(QApplication.focusWidget())
    assert order == [view.prev_button, view.next_button, view.regenerate_button,
                     view.copy_button, view.body]

    # Space presses the focused button; Alt+Left / Alt+Right step through the versions.
    view.copy_button.setFocus()
    with qtbot.waitSignal(view.copied, timeout=1000) as copied:
        QTest.keyClick(view.copy_button, Qt.Key.Key_Space)
    assert copied.args == ["Message copied"]
    assert QGuiApplication.clipboard().text() == "Second try"
    view.body.setFocus()
    with qtbot.waitSignal(view.branch_requested, timeout=1000) as step:
        QTest.keyClick(view.body, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    assert step.args == ["a"]
    with qtbot.waitSignal(view.branch_requested, timeout=1000) as step:
        QTest.keyClick(view.body, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert step.args == ["c"]


def test_code_copy_link_is_reachable_by_tab(qtbot: QtBot) -> None:
    view = MessageView(item("r", "assistant", CODE_REPLY), "assistant")
    qtbot.addWidget(view)
    with qtbot.waitActive(view):
        view.show()
    view.body.setFocus()
    QTest.keyClick(view.body, Qt.Key.Key_Tab)  # to the code block's "Copy" link
    assert view.body.hasFocus() and view.body.textCursor().hasSelection()
    with qtbot.waitSignal(view.copied, timeout=1000) as copied:
        QTest.keyClick(view.body, Qt.Key.Key_Return)
    assert copied.args == ["Code copied"]
    assert QGuiApplication.clipboard().text() == "text[::-1]\n"


def test_ctrl_r_and_branch_keys_in_the_chat_view(qtbot: QtBot) -> None:
    view = ChatView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    with qtbot.waitActive(view):
        view.show()
    view.show_branch(thread(item("u", "user", "Hi"),
                            item("a1", "assistant", "Hello", ("a1", "a2"))))
    assert view.scroll_area.accessibleName() == "Messages"
    assert view.composer.accessibleName() == "Message"
    view.composer.setFocus()
    with qtbot.waitSignal(view.regenerate_requested, timeout=1000):
        QTest.keyClick(view.composer, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    view.set_busy(True)  # no second reply while one is being written
    with qtbot.assertNotEmitted(view.regenerate_requested, wait=50):
        QTest.keyClick(view.composer, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    view.set_busy(False)

    # Alt+Right on the reply asks for its other version; the focus stays on that message.
    reply = view.views[1]
    reply.next_button.setFocus()
    with qtbot.waitSignal(view.branch_requested, timeout=1000) as step:
        QTest.keyClick(reply.next_button, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    assert step.args == ["a2"]
    view.show_branch(thread(item("u", "user", "Hi"),
                            item("a2", "assistant", "Hi there", ("a1", "a2"), 1)))
    shown = view.views[1]
    assert shown is not reply and shown.item is not None and shown.item.id == "a2"
    focused = QApplication.focusWidget()
    assert focused is shown.body  # Next is disabled now (the last version): the text has it


def test_new_chat_title_and_texts_follow_a_language_switch(window: MainWindow, qtbot: QtBot,
                                                           pseudo_language: None) -> None:
    page = window.chat_page
    page.new_chat()
    assert page.view.title.text() == "«New chat»"
    assert page.view.send_button.text() == "«Send»"
    assert page.sidebar.new_button.text() == "«New chat»"
    assert window.picker.load_button.text() == "«Load»"
    assert window.status.layers_label.text() == "«No model loaded»"
    view = MessageView(item("r", "assistant", CODE_REPLY), "assistant")
    qtbot.addWidget(view)
    assert view.copy_button.text() == "«Copy»" and view.who.text() == "«Assistant»"
    assert "«Copy»" in view.body.toHtml()  # the code block's link


# --- status and notification bars --------------------------------------------------------------


def test_status_bar_network_note(qtbot: QtBot) -> None:
    bar = StatusBar()
    qtbot.addWidget(bar)
    assert bar.network_label.isHidden() and bar.network == "online"
    bar.show_network("offline")
    assert not bar.network_label.isHidden() and bar.network_label.text() == "Offline"
    assert bar.network_label.accessibleName() == "Offline mode is on"
    assert "nothing is downloaded" in bar.network_label.toolTip()
    bar.show_network("unreachable")
    assert bar.network_label.text() == "Hub unreachable"
    assert bar.network_label.accessibleDescription() == bar.network_label.toolTip()
    bar.show_network("online")
    assert bar.network_label.isHidden()
    with pytest.raises(ValueError):
        bar.show_network("sideways")


def test_dark_palette_recolours_messages_and_notices(qtbot: QtBot,
                                                     dark_palette: QPalette) -> None:
    view = MessageView(item("r", "assistant", CODE_REPLY), "assistant")
    qtbot.addWidget(view)
    html = view.body.toHtml()
    assert "#f6f8fa" not in html and "#eff1f3" not in html  # the light defaults
    assert "monospace" in html  # a generic family after any named one
    assert not view.styleSheet() and not view.body.styleSheet()  # colours from the palette
    bar = NotificationBar()
    qtbot.addWidget(bar)
    bar.show_notice(Notice("Saved.", level="info"))
    assert bar.close_button.accessibleName() == "Dismiss"
    assert bar.icon.accessibleName() == "Information"
    assert bar.palette().color(QPalette.ColorRole.Window).lightness() < 128
    light = QPalette(QColor("#efefef"))
    QApplication.setPalette(light)  # a switch while they are shown (delivered as events)
    qtbot.waitUntil(lambda: bar.palette().color(QPalette.ColorRole.Window).lightness() > 128,
                    timeout=2000)
    qtbot.waitUntil(lambda: view.body.toHtml() != html, timeout=2000)  # the light colours
