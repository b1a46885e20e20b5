"""desktop.signals.emit keeps ``True`` alive however often a signal is emitted."""

from __future__ import annotations

import sys
import threading

from PySide6.QtCore import QObject, Signal
from pytestqt.qtbot import QtBot

from mixtral_desk.desktop.signals import emit


class _Source(QObject):
    text = Signal(str)
    flag = Signal(bool)


def test_many_emits_from_any_thread_keep_true_alive(qtbot: QtBot) -> None:
    source = _Source()
    received = [0]

    def count(_: object) -> None:
        received[0] += 1
    source.text.connect(count)
    source.flag.connect(count)
    before = sys.getrefcount(True)

    def burst() -> None:
        for index in range(3000):
            emit(source.text, "x")
            emit(source.flag, index % 2 == 0)

    worker = threading.Thread(target=burst)
    worker.start()
    worker.join()
    burst()
    qtbot.waitUntil(lambda: received[0] == 12_000, timeout=10_000)
    # Without the fix this would be 12 000 lower (and Python would have aborted on the way).
    assert abs(sys.getrefcount(True) - before) < 50
