"""One app per data folder: the first launch owns it, a second one wakes the first and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtNetwork import QLocalServer
from PySide6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.desktop.single_instance import (
    LOCK_NAME,
    SingleInstance,
    bring_to_front,
    server_name,
)

SECOND_LAUNCH = textwrap.dedent("""
    import sys
    from pathlib import Path
    from PySide6.QtCore import QCoreApplication
    from mixtral_desk.desktop.single_instance import SingleInstance

    app = QCoreApplication(sys.argv[:1])
    claimed = SingleInstance(Path(sys.argv[1])).claim(timeout_s=10)
    print("claimed" if claimed else "activated-other", flush=True)
    sys.exit(3 if claimed else 0)
""")


@pytest.fixture
def guards() -> Iterator[list[SingleInstance]]:
    """SingleInstance objects made by a test, all released at its end."""
    made: list[SingleInstance] = []
    yield made
    for guard in made:
        guard.release()


def make(guards: list[SingleInstance], data_dir: Path) -> SingleInstance:
    guard = SingleInstance(data_dir)
    guards.append(guard)
    return guard


def test_first_owns_second_activates_it(qtbot: QtBot, data_home: DataPaths,
                                        guards: list[SingleInstance]) -> None:
    first = make(guards, data_home.data_dir)
    assert first.claim()
    assert first.primary and (data_home.data_dir / LOCK_NAME).exists()
    # The CLI reads the holder's process id from the lock's first line (core.paths.window_process).
    lock_text = data_home.instance_lock.read_text(encoding="ascii", errors="replace")
    assert lock_text.split("\n", 1)[0] == str(os.getpid())
    second = make(guards, data_home.data_dir)
    # The first instance's server answers from the event loop, so the second claims in a thread
    # of the test's event loop: run it while waiting for the signal.
    results: list[bool] = []
    with qtbot.waitSignal(first.activated, timeout=10_000):
        from PySide6.QtCore import QThread

        class Second(QThread):
            def run(self) -> None:
                results.append(second.claim(timeout_s=8))

        thread = Second()
        thread.start()
    qtbot.waitUntil(lambda: bool(results), timeout=10_000)  # the event loop sends the answer
    assert thread.wait(5_000)
    assert results == [False] and not second.primary


def test_second_process_sends_activate_and_exits_0(qtbot: QtBot, data_home: DataPaths,
                                                    guards: list[SingleInstance]) -> None:
    first = make(guards, data_home.data_dir)
    assert first.claim()
    with qtbot.waitSignal(first.activated, timeout=20_000):
        process = subprocess.Popen(
            [sys.executable, "-c", SECOND_LAUNCH, str(data_home.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert out.strip() == "activated-other"


def test_folders_are_independent(data_home: DataPaths, tmp_path: Path,
                                 guards: list[SingleInstance]) -> None:
    assert make(guards, data_home.data_dir).claim()
    assert make(guards, tmp_path / "other-home" / "data").claim()
    assert server_name(data_home.data_dir) != server_name(tmp_path / "other-home" / "data")


def test_name_is_stable_and_short(tmp_path: Path) -> None:
    spelled = tmp_path / "a" / ".." / "a"
    (tmp_path / "a").mkdir()
    assert server_name(spelled) == server_name(tmp_path / "a")
    assert len(server_name(tmp_path / ("x" * 200))) < 50


def test_released_folder_can_be_claimed_again(data_home: DataPaths,
                                              guards: list[SingleInstance]) -> None:
    first = make(guards, data_home.data_dir)
    assert first.claim()
    first.release()
    assert make(guards, data_home.data_dir).claim()


def test_crashed_instance_is_taken_over(data_home: DataPaths, guards: list[SingleInstance]) -> None:
    """A lock whose process is gone and a socket left behind do not block the next launch."""
    crashed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import os, sys
            from pathlib import Path
            from PySide6.QtCore import QCoreApplication
            from mixtral_desk.desktop.single_instance import SingleInstance
            app = QCoreApplication(sys.argv[:1])
            guard = SingleInstance(Path(sys.argv[1]))
            assert guard.claim()
            os._exit(0)  # no clean-up, like a crash
        """), str(data_home.data_dir)],
        capture_output=True, text=True, timeout=30, env={**os.environ,
                                                         "QT_QPA_PLATFORM": "offscreen"})
    assert crashed.returncode == 0, crashed.stderr
    assert (data_home.data_dir / LOCK_NAME).exists()
    guard = make(guards, data_home.data_dir)
    assert guard.claim(timeout_s=5)
    assert guard.primary


def test_stale_socket_without_lock_is_replaced(data_home: DataPaths,
                                               guards: list[SingleInstance]) -> None:
    stale = QLocalServer()
    assert stale.listen(server_name(data_home.data_dir))
    try:
        guard = make(guards, data_home.data_dir)
        assert guard.claim()  # we hold the lock, so the socket is taken over
    finally:
        stale.close()


def test_bring_to_front_unminimises(qtbot: QtBot) -> None:
    window = QWidget()
    qtbot.addWidget(window)
    window.showMinimized()
    bring_to_front(window)
    assert window.isVisible() and not window.isMinimized()
