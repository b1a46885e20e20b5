"""Chatting through the window with the real engine on the tiny generated model."""

from __future__ import annotations

import gc
import sys
import time

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.desktop.chat.chat_view import RENDER_INTERVAL_MS
from mixtral_desk.desktop.main_window import MainWindow
from tests.desktop.desktop_helpers import REPLY_TIMEOUT_MS, send, shoot, use_sampling


def test_send_streams_renders_and_persists(chat_window: MainWindow, qtbot: QtBot) -> None:
    gc.collect()  # garbage of earlier tests, freed during this one, would move the count of True
    true_refs = sys.getrefcount(True)
    tokens: list[str] = []
    stamps: list[float] = []
    chat_window.session.token.connect(tokens.append)
    chat_window.session.token.connect(lambda _: stamps.append(time.perf_counter()))
    send(qtbot, chat_window, "Hello there")
    streamed_ms = (time.perf_counter() - stamps[0]) * 1000

    view = chat_window.chat_page.view
    assert [v.role for v in view.views] == ["user", "assistant"]
    assert view.kept == 2  # the streamed views stay: nothing was rendered again at the end
    reply = view.views[-1]
    assert reply.item is not None and reply.item.status == "complete"
    assert reply.text == "".join(tokens) and len(reply.text) >= 40  # 48 tokens, in batches
    assert reply.item.stats is not None and reply.item.stats["completion_tokens"] == 48
    assert reply.body.toPlainText().strip()  # rendered
    # Coalesced: at most one render per interval (plus the last), not one per token.
    assert 0 < view.renders <= streamed_ms / RENDER_INTERVAL_MS + 2

    store = chat_window.store.store
    assert store is not None
    conversation_id = chat_window.chat_page.current
    assert conversation_id is not None
    branch = store.active_branch(conversation_id)
    assert [(m.role, m.status) for m in branch] == [("user", "complete"),
                                                    ("assistant", "complete")]
    assert branch[0].content == "Hello there" and branch[1].content == reply.text
    qtbot.waitUntil(lambda: any(c.id == conversation_id
                                for c in chat_window.chat_page.sidebar.conversations))
    assert chat_window.status.speed_label.text().startswith("Last reply:")
    assert chat_window.status.backend_label.text() == "Backend: CPU"
    assert chat_window.status.layers_label.text().endswith("0/3 layers on GPU")
    qtbot.waitUntil(lambda: chat_window.status.memory_label.text().startswith("Memory: "),
                    timeout=10_000)
    assert "llama_cpp" not in sys.modules  # llama.cpp lives in the engine process only
    # PySide 6.12 loses a reference to True per emit; desktop.signals.emit gives it back.
    gc.collect()
    assert sys.getrefcount(True) >= true_refs - 20


def test_stop_mid_reply_keeps_it_interrupted(chat_window: MainWindow, qtbot: QtBot) -> None:
    use_sampling(chat_window, max_tokens=100_000)
    page = chat_window.chat_page
    with qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS):
        page.view.composer.setPlainText("Tell me a long story")
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: len(page.view.streaming_text) > 40, timeout=REPLY_TIMEOUT_MS)
        assert not page.view.stop_button.isHidden()
        QTest.keyClick(chat_window, Qt.Key.Key_Escape)
    last = page.view.views[-1]
    assert last.item is not None and last.item.status == "interrupted"
    shoot(chat_window, "interrupted-reply")
    assert "interrupted" in last.state.text()
    assert not last.continue_button.isHidden()
    assert page.view.stop_button.isHidden()

    # Continue appends to the same message.
    use_sampling(chat_window, max_tokens=8)
    before = last.text
    with qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS):
        QTest.mouseClick(last.continue_button, Qt.MouseButton.LeftButton)
    again = page.view.views[-1]
    assert again.item is not None and again.item.id == last.item.id
    assert again.text.startswith(before) and len(again.text) > len(before)
    assert again.item.status == "complete"


def test_regenerate_creates_branches(chat_window: MainWindow, qtbot: QtBot) -> None:
    send(qtbot, chat_window, "Pick a word")
    page = chat_window.chat_page
    first = page.view.views[-1]
    assert first.item is not None and first.prev_button.isHidden()
    use_sampling(chat_window, temperature=1.5, seed=7)
    with qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS):
        QTest.mouseClick(first.regenerate_button, Qt.MouseButton.LeftButton)
    second = page.view.views[-1]
    assert second.item is not None and second.item.id != first.item.id
    assert not second.branch_label.isHidden() and second.branch_label.text() == "2/2"
    assert len(page.view.views) == 2

    with qtbot.waitSignal(page.branch_shown, timeout=5000):
        QTest.mouseClick(second.prev_button, Qt.MouseButton.LeftButton)
    shown = page.view.views[-1]
    assert shown.item is not None and shown.item.id == first.item.id
    assert shown.branch_label.text() == "1/2" and shown.text == first.text

    # Edit-and-resend makes a second version of the user message.
    user = page.view.views[0]
    QTest.mouseClick(user.edit_button, Qt.MouseButton.LeftButton)
    assert not page.view.edit_banner.isHidden()
    assert page.view.composer.toPlainText() == "Pick a word"
    with qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS):
        page.view.composer.setPlainText("Pick another word")
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
    edited = page.view.views[0]
    assert edited.text == "Pick another word" and edited.branch_label.text() == "2/2"


def test_search_finds_a_message(chat_window: MainWindow, qtbot: QtBot) -> None:
    send(qtbot, chat_window, "Where do pineapples grow?")
    sidebar = chat_window.chat_page.sidebar
    QTest.keyClick(chat_window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert sidebar.search_box.hasFocus()
    with qtbot.waitSignal(sidebar.search_results, timeout=5000) as blocker:
        QTest.keyClicks(sidebar.search_box, "pineapple")
    assert blocker.args[0] >= 1  # the message (and the title made from it)
    assert sidebar.stack.currentWidget() is sidebar.results
    texts = [sidebar.results.itemWidget(sidebar.results.item(i)).text()  # type: ignore[attr-defined]
             for i in range(sidebar.results.count())]
    assert any("<b>pineapples</b>" in text.lower() for text in texts)

    # Clicking a hit opens its conversation.
    chat_window.chat_page.new_chat()
    with qtbot.waitSignal(chat_window.chat_page.branch_shown, timeout=5000):
        item = sidebar.results.item(0)
        rect = sidebar.results.visualItemRect(item)
        QTest.mouseClick(sidebar.results.viewport(), Qt.MouseButton.LeftButton,
                         pos=rect.center())
    assert chat_window.chat_page.view.views[0].text == "Where do pineapples grow?"


def test_opening_a_conversation_warms_it_in_the_engine(chat_window: MainWindow,
                                                       qtbot: QtBot) -> None:
    window = chat_window
    use_sampling(window, temperature=0.0, max_tokens=4, ignore_eos=True, seed=1)
    page = window.chat_page
    send(qtbot, window, "Describe the old harbour and its boats. " * 12)
    first = page.current
    assert first is not None
    page.new_chat()
    send(qtbot, window, "Something else entirely, about mountains. " * 12)
    log = window.paths.engine_log
    before = log.read_text().count("warm-up:")
    with qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS):
        page.sidebar.conversation_selected.emit(first)
    qtbot.waitUntil(lambda: log.read_text().count("warm-up:") > before, timeout=10_000)
    finished: list[object] = []
    window.session.reply_finished.connect(finished.append)
    send(qtbot, window, "And the lighthouse?")
    (result,) = finished
    stats = result.stats  # type: ignore[attr-defined]
    assert stats.cached_tokens > 0.8 * stats.prompt_tokens
