"""Giving memory back: unload a model that nobody has used for a while.

A laptop that keeps a 26 GB model in memory all afternoon because a chat was left open is the
complaint this answers. The model counts as used while it loads, while a reply streams and while
the API server is on; the countdown restarts after each of those.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from ..signals import emit
from .engine_bridge import EngineBridge

MS_PER_MINUTE = 60_000


class IdleUnloader(QObject):
    """Unloads ``engine``'s model after it has been idle for the set time (0 minutes: never).

    ``in_use_elsewhere`` says whether another user of the engine (the API server) keeps it;
    then the countdown starts again.

    Signals:
        unloaded(str): the model was unloaded for being idle; carries its file name.
    """

    unloaded = Signal(str)

    def __init__(self, engine: EngineBridge, in_use_elsewhere: Callable[[], bool],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine = engine
        self._in_use_elsewhere = in_use_elsewhere
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._expired)
        self._interval_ms = 0
        engine.model_loaded.connect(lambda _: self.restart())
        engine.model_unloaded.connect(self._timer.stop)
        engine.busy_changed.connect(self._busy_changed)

    @property
    def active(self) -> bool:
        """Whether a countdown is running."""
        return self._timer.isActive()

    def set_minutes(self, minutes: int) -> None:
        """Unload after ``minutes`` without use (0: never)."""
        self.set_interval_ms(minutes * MS_PER_MINUTE)

    def set_interval_ms(self, interval_ms: int) -> None:
        """The idle time in milliseconds (0: never); restarts a running countdown."""
        self._interval_ms = max(0, interval_ms)
        self.restart()

    def restart(self) -> None:
        """Start counting from now (when a model is loaded and unloading is on)."""
        if self._interval_ms and self._engine.model_info is not None and not self._engine.busy:
            self._timer.start(self._interval_ms)
        else:
            self._timer.stop()

    def stop(self) -> None:
        """Stop counting for good (the window closes); :meth:`restart` starts again."""
        self._interval_ms = 0
        self._timer.stop()

    def _busy_changed(self, busy: bool) -> None:
        if busy:
            self._timer.stop()
        else:
            self.restart()

    def _expired(self) -> None:
        name = self._engine.model_name()
        if name is None or self._engine.busy or self._engine.tasks.busy:
            return
        if self._in_use_elsewhere():
            self.restart()
            return
        self._engine.unload()
        emit(self.unloaded, name)
