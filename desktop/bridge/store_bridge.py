"""The conversation store behind a serial worker thread (all SQL off the GUI thread).

One :class:`~mixtral_desk.core.store.Store` is opened on the ``store`` task queue, and every call
the GUI makes goes through :meth:`StoreBridge.call`, so SQL statements run one at a time on that
thread. The engine bridge also writes replies into the same Store from its own thread while a
reply streams; the Store's lock serialises those writes with ours (its connection is opened with
``check_same_thread=False`` for exactly this).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QObject, Signal

from mixtral_desk.core.errors import StoreError
from mixtral_desk.core.store import Store

from ..errors import ErrorSink
from ..signals import emit
from .tasks import ErrorCallback, TaskQueue

T = TypeVar("T")


class StoreBridge(QObject):
    """Runs store work on the ``store`` thread.

    Signals:
        opened(object): the :class:`Store` is open (carries it); ``recovered_on_open`` says how
            many replies a crash had cut off.
        changed(): conversations were added, renamed, pinned or deleted (refresh the sidebar).
    """

    opened = Signal(object)
    changed = Signal()

    def __init__(self, sink: ErrorSink, path: Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink = sink
        self._store: Store | None = None
        self._path = path
        self.tasks = TaskQueue("store", on_error=lambda e: sink.report(e), parent=self)

    def open(self) -> None:
        """Open the database in the background (:attr:`opened` follows)."""
        path = self._path
        self.tasks.submit(lambda: self._open(path), partial(emit, self.opened))

    def _open(self, path: Path | None) -> Store:
        self._store = Store.open(path)
        return self._store

    @property
    def store(self) -> Store | None:
        """The open store (for the engine bridge's chat turns), ``None`` until it opened."""
        return self._store

    def call(self, work: Callable[[Store], T], on_done: Callable[[T], None] | None = None,
             on_error: ErrorCallback | None = None, *, changes: bool = False) -> None:
        """Run ``work(store)`` on the store thread; ``on_done(result)`` on the GUI thread.

        ``changes``: the work changes the conversation list; :attr:`changed` is emitted after.
        Errors go to ``on_error``, else to the error sink.
        """
        def task() -> T:
            if self._store is None:
                raise StoreError("The conversation store is not open.")
            return work(self._store)

        def done(result: T) -> None:
            if on_done is not None:
                on_done(result)
            if changes:
                emit(self.changed)

        self.tasks.submit(task, done, on_error)

    def close(self) -> None:
        """Finish queued work, close the database and stop the thread."""
        def shut() -> None:
            if self._store is not None:
                self._store.close()
        self.tasks.submit(shut)
        self.tasks.close()
