"""Timed backups of the conversation database, on a thread of their own.

A backup reads the database through its own read-only connection and one read transaction
(core/store/backups.py), so it never takes the store's lock: the store queue keeps saving the
streaming reply while it copies. A timer ticks every minute; once ``backups.interval_minutes``
have passed since the last backup (or the window opened) and the store has written since, it
backs up. A failure (a full disk) is shown once, until a backup works again. Closing the window
backs up too (StoreBridge.close, into ``backups.budget_mb``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.store.backups import Backup, take_backup

from ..errors import ErrorSink
from ..signals import emit
from .store_bridge import StoreBridge
from .tasks import TaskQueue

if TYPE_CHECKING:  # pydantic loads after the first paint
    from mixtral_desk.core.settings import BackupSettings

TICK_MS = 60_000


class BackupBridge(QObject):
    """Backs the conversations up every ``interval_minutes`` of use when something changed.

    Signals:
        backed_up(object): a backup was taken (carries the
            :class:`~mixtral_desk.core.store.backups.Backup`).
    """

    backed_up = Signal(object)

    def __init__(self, sink: ErrorSink, store: StoreBridge,
                 settings: Callable[[], BackupSettings], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink, self._store, self._settings = sink, store, settings
        self._changes_saved = 0
        self._last = time.monotonic()
        self._failing = False
        self.tasks = TaskQueue("backup", on_error=self._failed, parent=self)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        self.timer.start(TICK_MS)
        # A reopened store (after a restore or a salvage) counts its writes from 0 again.
        store.opened.connect(self._reopened)

    def _reopened(self, _store: object) -> None:
        self._changes_saved = 0

    def _tick(self) -> None:
        minutes = self._settings().interval_minutes
        if minutes > 0 and time.monotonic() - self._last >= minutes * 60:
            self.back_up_if_changed()

    def back_up_if_changed(self) -> None:
        """Take a backup in the background if the store has written since the last one."""
        changes = self._store.changes
        if changes > self._changes_saved and self._store.is_open:
            self.back_up_now(changes)

    def back_up_now(self, changes: int | None = None) -> None:
        """Take a backup in the background (:attr:`backed_up` follows)."""
        path = self._store.path
        budget = self._settings().budget_mb * 1_000_000
        marker = self._store.changes if changes is None else changes
        self._last = time.monotonic()
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
        """Stop the timer and finish a running backup (idempotent)."""
        self.timer.stop()
        self.tasks.close()
