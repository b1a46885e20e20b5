"""Fixtures for the desktop tests: offscreen Qt, Qt warnings fail, no thread outlives its test.

``QT_QPA_PLATFORM=offscreen`` is set before anything imports Qt. Every test here gets the ``gui``
marker automatically (``-m "not gui"`` skips them).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.desktop.errors import ErrorSink, setup_logging
from mixtral_desk.desktop.main_window import MainWindow
from tests.desktop.desktop_helpers import load_model, use_sampling

WindowFactory = Callable[[], MainWindow]

# Harmless lines the offscreen platform prints.
IGNORED_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",
                       "This plugin does not support raise()",
                       "This plugin does not support grabbing the keyboard")
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def no_dangling_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (each gets 5 s to finish)."""
    before = set(threading.enumerate())
    yield
    left = []
    for thread in set(threading.enumerate()) - before:
        thread.join(5)
        if thread.is_alive():
            left.append(thread.name)
    assert not left, f"threads left running: {left}"


@pytest.fixture(autouse=True)
def qt_warnings_fail(qtlog: object) -> Iterator[None]:
    """Fail a test during which Qt logged a warning (or worse)."""
    from PySide6.QtCore import QtMsgType

    yield
    records = getattr(qtlog, "records", [])
    bad = [r.message for r in records
           if r.type in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg)
           and not any(r.message.startswith(text) for text in IGNORED_QT_MESSAGES)]
    assert not bad, f"Qt warnings: {bad}"


@pytest.fixture
def make_window(qtbot: QtBot, data_home: DataPaths) -> Iterator[WindowFactory]:
    """A factory for shown, ready main windows on the test's data folder; all closed at the end."""
    handler = setup_logging(data_home.app_log)  # as app.main() does
    windows: list[MainWindow] = []

    def make() -> MainWindow:
        window = MainWindow(data_home, ErrorSink())
        windows.append(window)
        with qtbot.waitSignal(window.ready, timeout=15_000):
            window.show()
        return window

    yield make
    for window in windows:
        window.close()
        window.shutdown()
        window.deleteLater()
    if handler is not None:
        logging.getLogger("mixtral_desk").removeHandler(handler)
        handler.close()


@pytest.fixture
def window(make_window: WindowFactory) -> MainWindow:
    """One ready main window."""
    return make_window()


@pytest.fixture
def chat_window(window: MainWindow, qtbot: QtBot, tiny_model: Path) -> MainWindow:
    """A window with the tiny model loaded and short, deterministic replies."""
    use_sampling(window, temperature=0.0, max_tokens=48, ignore_eos=True, seed=1)
    progress: list[float] = []
    window.session.load_progress.connect(progress.append)
    load_model(qtbot, window, tiny_model)
    assert progress and progress[-1] == 1.0  # the picker showed load progress
    assert window.picker.state == "loaded" and window.picker.load_button.text() == "Unload"
    assert window.picker.selected() == tiny_model
    return window
