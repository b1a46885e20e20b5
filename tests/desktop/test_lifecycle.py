"""The window across restarts and engine crashes, the empty first run, and the error path."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.desktop.errors import ErrorSink, install_excepthooks
from mixtral_desk.desktop.main_window import MainWindow
from tests.desktop.conftest import WindowFactory
from tests.desktop.desktop_helpers import REPLY_TIMEOUT_MS, load_model, send, shoot, use_sampling


def test_first_run_shows_the_welcome_screen(window: MainWindow, qtbot: QtBot) -> None:
    assert window.pages.currentWidget() is window.welcome
    QTest.mouseClick(window.welcome.browse_button, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.models_page
    assert window.models_action.isChecked()


def test_conversations_and_settings_survive_a_restart(
        make_window: WindowFactory, qtbot: QtBot, tiny_model: Path) -> None:
    first = make_window()
    use_sampling(first, temperature=0.0, max_tokens=12, ignore_eos=True)
    load_model(qtbot, first, tiny_model)
    send(qtbot, first, "Remember this")
    conversation_id = first.chat_page.current
    settings = first.settings_page.settings()
    changed = settings.model_copy(update={"load": settings.load.model_copy(update={"n_ctx": 2048}),
                                          "sampling": settings.sampling.model_copy(
                                              update={"temperature": 0.25})})
    with qtbot.waitSignal(first.settings_saved, timeout=5000):
        first.save_settings(changed)
    first.close()

    second = make_window()
    assert second.settings.load.n_ctx == 2048
    assert second.settings.sampling.temperature == 0.25
    assert second.settings.last_model == str(tiny_model)
    assert second.pages.currentWidget() is second.chat_page
    assert second.picker.selected() == tiny_model
    qtbot.waitUntil(lambda: [c.id for c in second.chat_page.sidebar.conversations]
                    == [conversation_id])
    with qtbot.waitSignal(second.chat_page.branch_shown, timeout=5000):
        second.chat_page.open(conversation_id or "")
    assert second.chat_page.view.views[0].text == "Remember this"
    assert second.settings_page.n_ctx.value() == 2048


@pytest.mark.allow_log("mixtral_desk.desktop", "The engine process was killed")
def test_engine_killed_mid_reply_shows_error_and_recovers(
        chat_window: MainWindow, qtbot: QtBot, tiny_model: Path) -> None:
    use_sampling(chat_window, max_tokens=100_000)
    page = chat_window.chat_page
    pid = chat_window.session.pid
    assert pid is not None
    with qtbot.waitSignal(chat_window.session.engine_crashed, timeout=REPLY_TIMEOUT_MS), \
            qtbot.waitSignal(page.branch_shown, timeout=REPLY_TIMEOUT_MS):
        page.view.composer.setPlainText("Keep talking")
        QTest.keyClick(page.view.composer, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: len(page.view.streaming_text) > 20, timeout=REPLY_TIMEOUT_MS)
        os.kill(pid, signal.SIGKILL)
    bar = chat_window.notifications
    assert bar.current is not None and bar.current.level == "error"
    assert "SIGKILL" in bar.current.text
    assert [a.label for a in bar.current.actions] == ["Reload model"]
    last = page.view.views[-1]
    assert last.item is not None and last.item.status == "interrupted" and last.text
    assert chat_window.picker.state == "empty" and page.view.stop_button.isHidden()
    shoot(chat_window, "engine-crashed")
    log_text = chat_window.paths.app_log.read_text(encoding="utf-8")
    assert "SIGKILL" in log_text

    # The notice's button reloads the model; then chatting works again.
    with qtbot.waitSignal(chat_window.session.model_loaded, timeout=60_000):
        bar._buttons[0].click()
    assert chat_window.session.pid not in (None, pid)
    use_sampling(chat_window, max_tokens=8)
    send(qtbot, chat_window, "Are you back?")
    assert page.view.views[-1].item is not None
    assert page.view.views[-1].item.status == "complete"


@pytest.mark.allow_log("mixtral_desk.desktop", "Unexpected error")
def test_unexpected_errors_on_any_thread_reach_the_sink(qtbot: QtBot,
                                                        data_home: DataPaths) -> None:
    sink = ErrorSink()
    restore = install_excepthooks(sink)
    try:
        with qtbot.waitSignal(sink.notice, timeout=5000) as blocker:
            worker = threading.Thread(target=lambda: 1 / 0, name="doomed")
            worker.start()
            worker.join()
    finally:
        restore()
    notice = blocker.args[0]
    assert "ZeroDivisionError" in notice.text and "doomed" in notice.text
    assert notice.details and "Traceback" in notice.details
