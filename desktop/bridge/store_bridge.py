"""The conversation store behind a serial worker thread (all SQL off the GUI thread).

One :class:`~mixtral_desk.core.store.Store` is opened on the ``store`` task queue and only that
thread runs SQL (like Anki's single collection executor): every call the GUI makes goes through
:meth:`StoreBridge.call`, and a chat turn on the engine thread writes through :class:`QueuedStore`,
whose calls run on the store thread while the engine thread waits for their result. So the
streaming reply is saved by the store queue, in order with everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QObject, Signal

from mixtral_desk.core.errors import StoreError
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.paths import data_paths
from mixtral_desk.core.store import ACTIVE_LEAF, UNSET, Conversation, Message, Store
from mixtral_desk.core.store.backups import take_backup
from mixtral_desk.core.store.damage import check_file
from mixtral_desk.core.store.recovery import open_or_recover, recover, restore

from ..errors import ErrorSink
from ..signals import emit
from .tasks import ErrorCallback, TaskQueue

if TYPE_CHECKING:
    from mixtral_desk.core.store.models import ActiveLeaf, Unset

T = TypeVar("T")
log = logging.getLogger(__name__)


class StoreBridge(QObject):
    """Runs store work on the ``store`` thread.

    Damage seen at open is salvaged on the store thread (core/store/recovery.py) before
    :attr:`opened`; ``PRAGMA quick_check`` then runs on a thread of its own (see :meth:`open`).
    Closing backs up when something changed and :attr:`backup_budget_bytes` is set.

    Signals:
        opened(object): the :class:`Store` is open (carries it); ``recovered_on_open`` says how
            many replies a crash had cut off.
        recovered(object): the database was damaged and salvaged (carries the
            :class:`~mixtral_desk.core.store.recovery.RecoveryReport`); before :attr:`opened`.
        changed(): conversations were added, renamed, pinned or deleted (refresh the sidebar).
        closing(): :meth:`close` was called (emitted directly, on the caller's thread).
    """

    opened = Signal(object)
    closing = Signal()
    recovered = Signal(object)
    changed = Signal()

    def __init__(self, sink: ErrorSink, path: Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink = sink
        self._store: Store | None = None
        self._path = path
        #: Closing backs up into this budget when something changed (None: no backup on close).
        self.backup_budget_bytes: int | None = None
        self.tasks = TaskQueue("store", on_error=lambda e: sink.report(e), parent=self)
        self.checks = TaskQueue("store-check", on_error=lambda e: sink.report(e), parent=self)

    def open(self) -> None:
        """Open the database in the background (:attr:`opened` follows), then check it with
        ``PRAGMA quick_check`` on a thread of its own; a damaged one is salvaged on the store
        thread (:attr:`recovered`, :attr:`opened` and :attr:`changed` follow)."""
        path = self._path

        def opened(store: Store) -> None:
            emit(self.opened, store)
            checked = self.path
            self.checks.submit(lambda: check_file(checked), self._checked)
        self.tasks.submit(lambda: self._open(path), opened)

    def _open(self, path: Path | None) -> Store:
        # The quick check takes seconds on a big history: it runs after the sidebar is filled.
        self._store, report = open_or_recover(path or data_paths().database, check=False)
        if report is not None:
            emit(self.recovered, report)
        return self._store

    def _checked(self, problems: list[str]) -> None:
        if not problems:
            self.call(lambda store: store.passed_check())
            return

        def salvage() -> Store:
            if self._store is not None:
                self._store.close()
                self._store = None
            try:
                report = recover(self.path)
            finally:  # whatever happened, the window keeps a store to work with
                self._store = Store.open(self.path)
            emit(self.recovered, report)
            return self._store

        def done(store: Store) -> None:
            emit(self.opened, store)
            emit(self.changed)
        self.tasks.submit(salvage, done)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path or data_paths().database

    @property
    def changes(self) -> int:
        """How many writes the open store has made (0 while closed); any thread may read it."""
        store = self._store
        return 0 if store is None else store.changes

    def restore(self, backup: Path, on_done: Callable[[Path | None], None]) -> None:
        """Close the store, put ``backup`` in its place and open it again (on the store thread).

        ``on_done`` gets where the replaced file was kept; :attr:`opened` and :attr:`changed`
        follow. Errors go to the error sink (the store stays closed only if reopening fails).
        """
        path = self.path

        def work() -> tuple[Path | None, Store]:
            if self._store is not None:
                self._store.close()
                self._store = None
            try:
                kept = restore(path, backup)  # a bad choice changes nothing and raises
            finally:  # reopened either way: the restored file, or the one that was there
                self._store = Store.open(path)
            return kept, self._store

        def done(result: tuple[Path | None, Store]) -> None:
            emit(self.opened, result[1])
            emit(self.changed)
            on_done(result[0])
        self.tasks.submit(work, done)

    @property
    def is_open(self) -> bool:
        """Whether the store has been opened."""
        return self._store is not None

    @property
    def store(self) -> Store | None:
        """The open store, for tests that prepare or check data while the app is idle; the app
        itself never uses it (its SQL runs on the store thread only)."""
        return self._store

    def _task(self, work: Callable[[Store], T]) -> Callable[[], T]:
        def task() -> T:
            if self._store is None:
                raise StoreError(N_("The conversation store is not open."))
            return work(self._store)
        return task

    def call_and_wait(self, work: Callable[[Store], T]) -> T:
        """Run ``work(store)`` on the store thread and return its result; for worker threads
        only (the GUI thread must use :meth:`call`).

        Raises:
            whatever ``work`` raised; StoreError: the store is not open.
        """
        future: Future[T] = Future()
        task = self._task(work)

        def run() -> None:
            try:
                future.set_result(task())
            except BaseException as error:  # handed to the waiting thread
                future.set_exception(error)
        self.tasks.submit(run)
        return future.result()

    def call(self, work: Callable[[Store], T], on_done: Callable[[T], None] | None = None,
             on_error: ErrorCallback | None = None, *, changes: bool = False) -> None:
        """Run ``work(store)`` on the store thread; ``on_done(result)`` on the GUI thread.

        ``changes``: the work changes the conversation list; :attr:`changed` is emitted after.
        Errors go to ``on_error``, else to the error sink.
        """
        def done(result: T) -> None:
            if on_done is not None:
                on_done(result)
            if changes:
                emit(self.changed)

        self.tasks.submit(self._task(work), done, on_error)

    def close(self) -> None:
        """Finish queued work, close the database and stop the thread."""
        self.closing.emit()
        def shut() -> None:
            if self._store is not None:
                changed = self._store.changes > 0 and self._store.checked
                self._store.close()
                if changed and self.backup_budget_bytes is not None:
                    try:
                        take_backup(self._store.path, budget_bytes=self.backup_budget_bytes)
                    except StoreError as error:
                        log.warning("No backup on close: %s", error.english)
        self.checks.close()
        self.tasks.submit(shut)
        self.tasks.close()


class QueuedStore:
    """The store as a chat turn on the engine thread sees it (a
    :class:`~mixtral_desk.core.chat.ChatStore`): each call runs on the store thread.

    Signals: none.
    """

    def __init__(self, bridge: StoreBridge) -> None:
        self._run = bridge.call_and_wait

    def get_conversation(self, conversation_id: str) -> Conversation:
        return self._run(lambda s: s.get_conversation(conversation_id))

    def create_conversation(self, title: str | None = None, *, model: str | None = None,
                            system_prompt: str | None = None,
                            settings: dict[str, Any] | None = None) -> Conversation:
        return self._run(lambda s: s.create_conversation(
            title, model=model, system_prompt=system_prompt, settings=settings))

    def update_conversation(self, conversation_id: str, *,
                            title: str | Unset | None = UNSET) -> Conversation:
        return self._run(lambda s: s.update_conversation(conversation_id, title=title))

    def add_message(self, conversation_id: str, role: str, content: str, *,
                    parent_id: str | ActiveLeaf | None = ACTIVE_LEAF, status: str = "complete",
                    model: str | None = None,
                    stats: dict[str, Any] | None = None) -> Message:
        return self._run(lambda s: s.add_message(conversation_id, role, content,
                                                 parent_id=parent_id, status=status,
                                                 model=model, stats=stats))

    def update_message(self, message_id: str, *, content: str | None = None,
                       status: str | None = None, stats: dict[str, Any] | None = None) -> None:
        self._run(lambda s: s.update_message(message_id, content=content, status=status,
                                             stats=stats))

    def get_message(self, message_id: str) -> Message:
        return self._run(lambda s: s.get_message(message_id))

    def active_branch(self, conversation_id: str) -> list[Message]:
        return self._run(lambda s: s.active_branch(conversation_id))

    def siblings(self, message_id: str) -> list[Message]:
        return self._run(lambda s: s.siblings(message_id))
