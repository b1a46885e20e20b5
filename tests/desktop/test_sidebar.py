"""The conversation list: grouping, pin, rename, delete with undo (and the deleted chat's prompt
cache states with it); shortcuts; per-chat settings."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.engine import SamplingOptions, prompt_cache
from mixtral_desk.core.engine.prompt_cache import conversation_tag
from mixtral_desk.core.session import cache_folder, sampling_for
from mixtral_desk.core.session.loading import prompt_cache_dir
from mixtral_desk.core.store import Store
from mixtral_desk.desktop.chat.sidebar import date_group, snippet_html
from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.signals import emit
from tests.cache_files import cached_tags
from tests.desktop.desktop_helpers import fill_prompt_cache


def groups(window: MainWindow) -> dict[str, list[str]]:
    tree = window.chat_page.sidebar.tree
    found: dict[str, list[str]] = {}
    for i in range(tree.topLevelItemCount()):
        group = tree.topLevelItem(i)
        assert group is not None
        found[group.text(0)] = [c.text(0) for j in range(group.childCount())
                                if (c := group.child(j)) is not None]
    return found


def store_of(window: MainWindow) -> Store:
    store = window.store.store
    assert store is not None
    return store


def test_pin_rename_and_delete_with_undo(window: MainWindow, qtbot: QtBot) -> None:
    store = store_of(window)
    first = store.create_conversation("First")
    second = store.create_conversation("Second")
    sidebar = window.chat_page.sidebar
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    qtbot.waitUntil(lambda: groups(window) == {"Today": ["Second", "First"]})

    with qtbot.waitSignal(window.store.changed, timeout=5000):
        sidebar.set_pinned(first.id, True)
    qtbot.waitUntil(lambda: groups(window) == {"Pinned": ["First"], "Today": ["Second"]})

    with qtbot.waitSignal(window.store.changed, timeout=5000):
        sidebar.rename(second.id, "Renamed")
    qtbot.waitUntil(lambda: groups(window).get("Today") == ["Renamed"])

    sidebar.delete(second.id)
    assert groups(window) == {"Pinned": ["First"]}
    notice = window.notifications.current
    assert notice is not None and [a.label for a in notice.actions] == ["Undo"]
    window.notifications._buttons[0].click()  # Undo
    assert groups(window) == {"Pinned": ["First"], "Today": ["Renamed"]}

    with qtbot.waitSignal(window.store.changed, timeout=5000):
        sidebar.delete(second.id)
        sidebar.commit_delete(second.id)  # what the undo timer does
    assert [c.id for c in store.list_conversations()] == [first.id]


def test_shortcuts(window: MainWindow, qtbot: QtBot) -> None:
    window.show_settings()
    QTest.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert window.pages.currentWidget() is window.welcome  # nothing to chat with yet
    store_of(window).create_conversation("Something")
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    qtbot.waitUntil(lambda: bool(window.chat_page.sidebar.conversations))
    QTest.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.pages.currentWidget() is window.chat_page
    assert window.chat_page.current is None and window.chat_page.view.title.text() == "New chat"
    QTest.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert window.chat_page.view.composer.hasFocus()
    QTest.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert window.chat_page.sidebar.search_box.hasFocus()


def test_helpers() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc).astimezone()
    assert date_group(now, now) == "Today"
    assert date_group(now - timedelta(days=1), now) == "Yesterday"
    assert date_group(now - timedelta(days=3), now) == "Previous 7 days"
    assert date_group(now - timedelta(days=20), now) == "Previous 30 days"
    assert date_group(now - timedelta(days=90), now) == "August 2026"
    assert snippet_html("a «b» <c>") == "a <b>b</b> &lt;c&gt;"
    defaults = SamplingOptions(temperature=0.7)
    assert sampling_for(defaults, {}) is defaults
    merged = sampling_for(defaults, {"sampling": {"temperature": 0.1, "max_tokens": 5}})
    assert (merged.temperature, merged.max_tokens, merged.top_p) == (0.1, 5, defaults.top_p)
    assert sampling_for(defaults, {"sampling": {"temperature": -3}}) is defaults


def test_conversation_system_prompt_reaches_the_store(chat_window: MainWindow,
                                                      qtbot: QtBot) -> None:
    from tests.desktop.desktop_helpers import send

    send(qtbot, chat_window, "Hi")
    page = chat_window.chat_page
    conversation_id = page.current
    assert conversation_id is not None
    store = store_of(chat_window)
    with qtbot.waitSignal(chat_window.store.changed, timeout=5000):
        chat_window.store.call(lambda s: s.update_conversation(
            conversation_id, system_prompt="Answer briefly.",
            settings={"sampling": {"max_tokens": 3}}), changes=True)
    with qtbot.waitSignal(page.branch_shown, timeout=5000):
        page.reload()
    with qtbot.waitSignal(page.branch_shown, timeout=30_000):
        page.view.composer.setPlainText("Again")
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
    last = store.active_branch(conversation_id)[-1]
    assert last.stats is not None and last.stats["completion_tokens"] == 3  # the override won
    assert store.get_conversation(conversation_id).system_prompt == "Answer briefly."


def test_settings_change_that_needs_a_reload_says_so(chat_window: MainWindow,
                                                     qtbot: QtBot) -> None:
    chat_window.show_settings()
    page = chat_window.settings_page
    assert page.reload_note.isHidden()
    assert page.gpu_slider.maximum() == 3  # the tiny model's 2 layers, plus "all"
    page.n_ctx.setValue(2048)
    with qtbot.waitSignal(chat_window.settings_saved, timeout=5000):
        QTest.mouseClick(page.save_button, Qt.MouseButton.LeftButton)
    assert not page.reload_note.isHidden()
    with qtbot.waitSignal(chat_window.session.model_loaded, timeout=60_000):
        QTest.mouseClick(page.reload_button, Qt.MouseButton.LeftButton)
    assert page.reload_note.isHidden()
    info = chat_window.session.model_info
    assert info is not None and info.n_ctx == 2048


@pytest.mark.allow_log("mixtral_desk.desktop", "No model is loaded yet")
def test_composer_enter_sends_and_shift_enter_adds_a_line(window: MainWindow,
                                                          qtbot: QtBot) -> None:
    composer = window.chat_page.view.composer
    sent: list[str] = []
    composer.submitted.connect(sent.append)
    QTest.keyClicks(composer, "first")
    QTest.keyClick(composer, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    QTest.keyClicks(composer, "second")
    assert composer.toPlainText() == "first\nsecond" and not sent
    QTest.keyClick(composer, Qt.Key.Key_Return)
    assert sent == ["first\nsecond"]
    # No model is loaded: the text stays in the input (nothing typed is lost).
    assert composer.toPlainText() == "first\nsecond"
    composer.clear()
    QTest.keyClick(composer, Qt.Key.Key_Return)  # blank text is not sent
    assert sent == ["first\nsecond"]


def test_conversation_settings_dialog_values(qtbot: QtBot) -> None:
    from mixtral_desk.desktop.chat.conversation_settings import ConversationSettingsDialog

    dialog = ConversationSettingsDialog("Be brief.", {}, SamplingOptions(temperature=0.7))
    qtbot.addWidget(dialog)
    assert dialog.values() == ("Be brief.", {})  # no overrides until asked for
    dialog.custom.setChecked(True)
    dialog.temperature.setValue(0.2)
    dialog.max_tokens.setValue(77)
    dialog.system_prompt.setPlainText("  ")
    prompt, settings = dialog.values()
    assert prompt is None
    assert settings == {"sampling": {"temperature": 0.2, "top_p": 0.95, "max_tokens": 77}}


def test_unload_frees_the_model(chat_window: MainWindow, qtbot: QtBot) -> None:
    with qtbot.waitSignal(chat_window.session.model_unloaded, timeout=10_000):
        QTest.mouseClick(chat_window.picker.load_button, Qt.MouseButton.LeftButton)
    assert chat_window.picker.state == "empty" and chat_window.picker.load_button.text() == "Load"
    assert chat_window.session.model_info is None
    assert chat_window.status.layers_label.text() == "No model loaded"
    # Sending now loads the chosen model again, then sends what was typed.
    page = chat_window.chat_page
    page.view.composer.setPlainText("Anyone there?")
    with qtbot.waitSignal(chat_window.session.model_loaded, timeout=60_000), \
            qtbot.waitSignal(page.turn_finished, timeout=60_000):
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
        notice = chat_window.notifications.current
        assert notice is not None and "your message is sent when it is ready" in notice.text
        assert page.view.composer.toPlainText() == "Anyone there?"
    assert page.view.composer.toPlainText() == ""


def test_deleting_a_conversation_deletes_its_cached_states(window: MainWindow, qtbot: QtBot,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_of(window)
    doomed = store.create_conversation("Doomed")
    kept = store.create_conversation("Kept")
    fill_prompt_cache([doomed.id, kept.id, doomed.id])
    folder = prompt_cache_dir()
    assert cached_tags(folder) == sorted([conversation_tag(doomed.id)] * 2
                                         + [conversation_tag(kept.id)])
    threads: list[str] = []

    def forget_and_note_the_thread(root: Path, tag: str) -> int:
        threads.append(threading.current_thread().name)
        return prompt_cache.forget_tag(root, tag)

    monkeypatch.setattr(cache_folder, "forget_tag", forget_and_note_the_thread)
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        emit(window.store.changed)
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 2)

    sidebar = window.chat_page.sidebar
    sidebar.delete(doomed.id)
    assert len(cached_tags(folder)) == 3  # nothing goes while Undo is possible
    with qtbot.waitSignal(window.store.changed, timeout=5000):
        sidebar.commit_delete(doomed.id)  # what the undo timer does
    assert cached_tags(folder) == [conversation_tag(kept.id)]
    assert threads == ["mixtral-desk-store"]  # the file work ran on the store thread
    assert [c.id for c in store.list_conversations()] == [kept.id]


def test_deleting_a_chat_makes_the_engine_forget_it(chat_window: MainWindow,
                                                    qtbot: QtBot) -> None:
    from tests.desktop.desktop_helpers import send

    page = chat_window.chat_page
    send(qtbot, chat_window, "Tell me about zeppelins")
    doomed = page.current
    assert doomed is not None
    assert "from cache" not in page.view.views[-1].state.text()
    send(qtbot, chat_window, "And airships?")
    # The second reply's prompt started from the first one's state: its figures say so.
    stats = store_of(chat_window).active_branch(doomed)[-1].stats
    assert stats is not None and stats["cached_tokens"] > 0
    assert page.view.views[-1].state.text().endswith(
        f"prompt {stats['prompt_tokens']} tokens, {stats['cached_tokens']} from cache")
    page.new_chat()
    send(qtbot, chat_window, "What is a kettle?")
    kept = page.current
    assert kept is not None and kept != doomed
    folder = prompt_cache_dir()
    qtbot.waitUntil(lambda: {conversation_tag(doomed), conversation_tag(kept)}
                    <= set(cached_tags(folder)), timeout=10_000)

    with qtbot.waitSignal(chat_window.store.changed, timeout=5000):
        page.sidebar.delete(doomed)
        page.sidebar.commit_delete(doomed)
    assert conversation_tag(doomed) not in cached_tags(folder)
    assert conversation_tag(kept) in cached_tags(folder)
    # The engine dropped its copies in RAM too (and any file it was still writing).
    log = chat_window.paths.engine_log
    qtbot.waitUntil(lambda: f"forgot {conversation_tag(doomed)}" in log.read_text(),
                    timeout=10_000)
    assert conversation_tag(doomed) not in cached_tags(folder)
