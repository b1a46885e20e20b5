"""Start-up: the QApplication, logging, the error sink and the window; ``main()`` runs them.

Only what the first paint needs is imported before the window shows; the store opens, the
settings are read and models are listed in worker threads right after. llama.cpp is never
imported here: it runs in the engine process.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

EXIT_AFTER_PAINT = "--exit-after-paint"
OFFLINE = "--offline"


class _FirstPaint(QObject):
    """Prints the seconds since ``started`` at the window's first paint, then quits (bench).

    Signals: none.
    """

    def __init__(self, started: float, app: QApplication) -> None:
        super().__init__(app)
        self._started, self._app, self._done = started, app, False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if not self._done and event.type() == QEvent.Type.Paint:
            self._done = True
            print(f"first-paint {time.perf_counter() - self._started:.3f}", flush=True)
            QTimer.singleShot(0, self._app.quit)
        return False


def _quit_on_signals(app: QApplication) -> None:
    """Ctrl-C in the terminal (SIGINT) and SIGTERM close the window properly (the engine stops).

    Python only runs signal handlers between bytecodes, so a timer wakes it up now and then.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: app.quit())
    waker = QTimer(app)
    waker.timeout.connect(lambda: None)
    waker.start(250)


def main(argv: list[str] | None = None) -> int:
    """Open the window and run until it closes; returns the exit code.

    ``--offline`` turns Offline mode on whatever the settings say. ``--exit-after-paint`` prints
    ``first-paint <seconds>`` when the window first paints and quits (for the start-up benchmark).
    """
    started = time.perf_counter()
    multiprocessing.freeze_support()
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "gui"]
    exit_after_paint = EXIT_AFTER_PAINT in args
    offline = OFFLINE in args
    app = QApplication.instance() or QApplication(
        [sys.argv[0], *[a for a in args if a not in (EXIT_AFTER_PAINT, OFFLINE)]])
    assert isinstance(app, QApplication)
    app.setApplicationName("Mixtral Desk")
    app.setOrganizationName("mixtral-desk")

    from mixtral_desk.core.paths import data_paths

    from .errors import ErrorSink, install_excepthooks, setup_logging

    paths = data_paths()
    try:
        paths.ensure()
    except OSError as error:
        print(f"mixtral-desk: cannot create the data folders: {error}", file=sys.stderr)
        return 1
    # The language before anything is said, the theme before the first paint (the rest of the
    # settings is read and validated in a worker afterwards).
    from mixtral_desk.core.early_settings import read_early_settings

    from .i18n import apply_language

    early = read_early_settings(paths.settings_file)
    apply_language(early.language)
    from .single_instance import SingleInstance, bring_to_front

    instance = SingleInstance(paths.data_dir, app)
    if not instance.claim():
        return 0  # the app already running on this data folder was brought to the front
    setup_logging(paths.app_log)
    if offline:
        from mixtral_desk.core import network

        network.force_offline()
    from .theme import apply_theme

    apply_theme(early.theme)
    sink = ErrorSink()
    restore = install_excepthooks(sink)

    from .main_window import MainWindow

    window = MainWindow(paths, sink)
    if exit_after_paint:
        window.installEventFilter(_FirstPaint(started, app))
    window.show()
    instance.activated.connect(lambda: bring_to_front(window))
    _quit_on_signals(app)
    try:
        return int(app.exec())
    finally:
        window.shutdown()
        restore()
        instance.release()
