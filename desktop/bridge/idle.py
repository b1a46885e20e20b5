"""Giving memory back: the timer that asks the session to unload a model nobody uses.

The rule — what counts as use (loading, a reply, the API server being on) and when the model may
go — is the session's (:meth:`~mixtral_desk.core.session.Session.idle_deadline`); this is only
its clock on the GUI thread.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer, Signal

from ..signals import emit
from .session_bridge import SessionBridge


class IdleUnloader(QObject):
    """Unloads the session's model once its idle time is up (Settings → idle unload minutes).

    Signals:
        unloaded(str): the model was unloaded for being idle; carries its name.
    """

    unloaded = Signal(str)

    def __init__(self, session: SessionBridge, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._session = session
        self._idle_seconds: float | None = None  # None: the setting
        self._stopped = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._expired)
        session.model_loaded.connect(lambda _: self.restart())
        session.model_unloaded.connect(self._timer.stop)
        session.busy_changed.connect(lambda _: self.restart())

    @property
    def active(self) -> bool:
        """Whether a countdown is running."""
        return self._timer.isActive()

    def set_interval_ms(self, interval_ms: int) -> None:
        """Replace the setting's idle time (tests, benchmarks); restarts the countdown."""
        self._idle_seconds = max(0, interval_ms) / 1000
        self.restart()

    def restart(self) -> None:
        """Count again from the session's deadline (none: the model is in use, or gone)."""
        deadline = None
        if not self._stopped and self._session.model_info is not None:
            deadline = self._session.idle_deadline(self._idle_seconds)
        if deadline is None or self._session.busy:
            self._timer.stop()
        else:
            self._timer.start(max(0, int((deadline - time.monotonic()) * 1000)))

    def stop(self) -> None:
        """Stop counting for good (the window closes)."""
        self._stopped = True
        self._timer.stop()

    def _expired(self) -> None:
        idle_seconds = self._idle_seconds

        def done(name: str | None) -> None:
            if name is not None:
                emit(self.unloaded, name)
            else:
                self.restart()

        def failed(error: BaseException) -> None:
            self._session.report(error)
            self.restart()
        self._session.run(lambda s: s.unload_if_idle(idle_seconds), done, failed)
