"""One way to run background work: a serial task queue on its own thread (like Anki's taskman).

Each :class:`TaskQueue` owns one Python thread that runs submitted callables in order; their
results (or exceptions) come back to the GUI thread through a queued Qt signal, so callbacks may
touch widgets. Serial execution is the point: the store's SQL runs on one queue, the engine's
requests on another, and neither ever blocks the event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal, Slot

from ..signals import emit

T = TypeVar("T")
log = logging.getLogger(__name__)

ErrorCallback = Callable[[BaseException], object]
_STOP = object()


class TaskQueue(QObject):
    """Runs callables one after another on a private thread; reports back on the GUI thread.

    ``on_error`` is the default error handler (the app's error sink); a task's own ``on_error``
    replaces it for that task.

    Signals:
        delivered(object): internal — a zero-argument callable to run on the GUI thread.
        busy_changed(bool): whether a task is running or waiting.
    """

    delivered = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, name: str, on_error: ErrorCallback | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.setObjectName(name)
        self._on_error = on_error
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False
        self.delivered.connect(self._run_on_gui)
        self._thread = threading.Thread(target=self._loop, name=f"mixtral-desk-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a task is running or queued."""
        with self._lock:
            return self._pending > 0

    def submit(self, task: Callable[[], T], on_done: Callable[[T], object] | None = None,
               on_error: ErrorCallback | None = None) -> None:
        """Queue ``task``; ``on_done(result)`` or ``on_error(exc)`` runs later on the GUI thread.

        Raises:
            RuntimeError: the queue was closed.
        """
        if self._closed:
            raise RuntimeError(f"The {self.name} task queue is closed.")
        with self._lock:
            self._pending += 1
            first = self._pending == 1
        if first:
            emit(self.busy_changed, True)
        self._queue.put((task, on_done, on_error))

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued tasks, then stop the thread (idempotent; waits up to ``timeout``)."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            task, on_done, on_error = item
            try:
                result = task()
            except BaseException as error:  # reported on the GUI thread
                handler = on_error or self._on_error
                if handler is None:
                    log.exception("Task failed on the %s queue", self.name)
                else:
                    emit(self.delivered, lambda h=handler, e=error: h(e))
            else:
                if on_done is not None:
                    emit(self.delivered, lambda d=on_done, r=result: d(r))
            finally:
                with self._lock:
                    self._pending -= 1
                    idle = self._pending == 0
                if idle:
                    emit(self.busy_changed, False)

    @Slot(object)
    def _run_on_gui(self, callback: Callable[[], None]) -> None:
        if not self._closed:  # after close() the widgets the callbacks touch may be gone
            callback()
