"""Timed backups of the conversation database, on a thread of their own.

A backup reads the database through its own read-only connection and one read transaction
(core/store/backups.py), so it never takes the store's lock: the store queue keeps saving the
streaming reply while it copies. Every ``backups.interval_minutes`` the timer backs up if the
store has written since the last backup; a failure (a full disk) is shown once, until a backup
works again. Closing the window backs up too (see StoreBridge.close).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.store.backups import Backup, take_backup

from ..errors import ErrorSink
from ..signals import emit
from .store_bridge import StoreBridge
from .tasks import TaskQueue


class BackupBridge(QObject):
    """Backs the conversations up every ``interval_minutes`` of use when something changed.

    Signals:
        backed_up(object): a backup was taken (carries the
            :class:`~mixtral_desk.core.store.backups.Backup`).
    """

    backed_up = Signal(object)

    def __init__(self, sink: ErrorSink, store: StoreBridge, *, interval_minutes: int,
                 budget_bytes: int, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink, self._store = sink, store
        self.budget_bytes = budget_bytes
        self._changes_saved = 0
        self._failing = False
        self.tasks = TaskQueue("backup", on_error=self._failed, parent=self)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.back_up_if_changed)
        self.set_interval(interval_minutes)

    def set_interval(self, minutes: int) -> None:
        """Back up every ``minutes`` of use (0: only on close)."""
        self.timer.stop()
        if minutes > 0:
            self.timer.start(minutes * 60_000)

    def back_up_if_changed(self) -> None:
        """Take a backup in the background if the store has written since the last one."""
        changes = self._store.changes
        if changes > self._changes_saved and self._store.is_open:
            self.back_up_now(changes)

    def back_up_now(self, changes: int | None = None) -> None:
        """Take a backup in the background (:attr:`backed_up` follows)."""
        path, budget = self._store.path, self.budget_bytes
        marker = self._store.changes if changes is None else changes
        self.tasks.submit(lambda: take_backup(path, budget_bytes=budget),
                          lambda backup: self._done(backup, marker))

    def _done(self, backup: Backup, changes: int) -> None:
        self._changes_saved = max(self._changes_saved, changes)
        self._failing = False
        emit(self.backed_up, backup)

    def _failed(self, error: BaseException) -> None:
        if self._failing and isinstance(error, DeskError):
            return  # said once until a backup works again
        self._failing = True
        self._sink.report(error)

    def close(self) -> None:
        """Stop the timer and finish a running backup."""
        self.timer.stop()
        self.tasks.close()
