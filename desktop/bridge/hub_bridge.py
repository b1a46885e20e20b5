"""Hub browsing off the GUI thread: search, a repository's quants, and fit verdicts.

Searches and repository listings run in order on the ``hub`` task queue; fit verdicts run on the
``hub-fit`` queue (each batch reads up to :data:`~mixtral_desk.core.hub.fit.MAX_PARALLEL`
headers at a time) and arrive one by one. A newer search or repository replaces an older one: the
older answer is dropped when it arrives, and verdicts of a repository no longer shown stop being
read (:meth:`HubBridge.cancel`). The header cache lives as long as the bridge, so coming back to
a repository costs no request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, SignalInstance

from ..errors import ErrorSink
from ..signals import emit
from .tasks import TaskQueue

if TYPE_CHECKING:
    from mixtral_desk.core.hub.browse import HubBrowser, Sort
    from mixtral_desk.core.hub.fit import FitChecker, HeaderCache
    from mixtral_desk.core.hub.quants import QuantFile
    from mixtral_desk.core.planner import Machine


class HubBridge(QObject):
    """The Hub browser's worker.

    ``machine``: the machine to plan for (None: this one, detected on the worker the first time).

    Signals:
        searched(object): a :class:`~mixtral_desk.core.hub.browse.SearchPage`.
        repo_loaded(object): a :class:`~mixtral_desk.core.hub.browse.RepoFiles`.
        verdict(str, str, object): the commit, an entry's name and its
            :class:`~mixtral_desk.core.hub.fit.FitVerdict`.
        failed(object): the typed error of the latest search or repository (to report).
        busy_changed(bool): whether a search, listing or verdict batch is under way.
    """

    searched = Signal(object)
    repo_loaded = Signal(object)
    verdict = Signal(str, str, object)
    failed = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, sink: ErrorSink, machine: Machine | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.machine = machine
        self._endpoint: str | None = None
        self._token: str | None = None
        self._generation = 0  # the latest search/listing; older answers are dropped
        self._cancel = threading.Event()
        self._cache: HeaderCache | None = None
        self._busy = {"hub": False, "fit": False}
        self.tasks = TaskQueue("hub", on_error=self._failed, parent=self)
        self.fit_tasks = TaskQueue("hub-fit", on_error=lambda e: sink.report(e), parent=self)
        self.tasks.busy_changed.connect(lambda busy: self._set_busy("hub", busy))
        self.fit_tasks.busy_changed.connect(lambda busy: self._set_busy("fit", busy))

    @property
    def busy(self) -> bool:
        return any(self._busy.values())

    def _set_busy(self, which: str, busy: bool) -> None:
        before = self.busy
        self._busy[which] = busy
        if self.busy != before:
            emit(self.busy_changed, self.busy)

    def configure(self, endpoint: str | None, token: str | None) -> None:
        """Use this endpoint (mirror) and token from now on (the saved Hub settings)."""
        self._endpoint, self._token = endpoint or None, token or None

    def _browser(self) -> HubBrowser:
        from mixtral_desk.core.hub.browse import HubBrowser

        return HubBrowser(self._endpoint, self._token)

    def _next(self) -> int:
        self._generation += 1
        self._cancel.set()  # verdicts of what was shown stop
        self._cancel = threading.Event()
        return self._generation

    def _deliver(self, generation: int, signal: SignalInstance) -> Callable[[object], None]:
        def done(result: object) -> None:
            if generation == self._generation:
                emit(signal, result)
        return done

    def _failed(self, error: BaseException) -> None:
        emit(self.failed, error)

    def search(self, query: str, sort: Sort, page: int = 0) -> None:
        """Search (:attr:`searched` or :attr:`failed` follows, unless replaced meanwhile)."""
        generation = self._next()
        self.tasks.submit(lambda: self._browser().search(query, sort, page),
                          self._deliver(generation, self.searched),
                          self._drop_stale(generation))

    def open_repo(self, repo_id: str, revision: str | None = None) -> None:
        """List a repository's quants (:attr:`repo_loaded` or :attr:`failed` follows)."""
        generation = self._next()
        self.tasks.submit(lambda: self._browser().repo_files(repo_id, revision),
                          self._deliver(generation, self.repo_loaded),
                          self._drop_stale(generation))

    def _drop_stale(self, generation: int) -> Callable[[BaseException], None]:
        def on_error(error: BaseException) -> None:
            if generation == self._generation:
                self._failed(error)
        return on_error

    def cancel(self) -> None:
        """Drop the answer of the search or listing under way and stop reading headers."""
        self._next()

    def check(self, repo_id: str, commit: str, entries: list[QuantFile]) -> None:
        """Read the headers of ``entries`` (the rows on screen) and plan them; one
        :attr:`verdict` per entry follows, unless :meth:`cancel` or a newer view stops it."""
        cancelled = self._cancel

        def work() -> None:
            checker = self._checker()
            checker.verdicts(repo_id, commit, entries, cancelled=cancelled,
                             on_verdict=lambda e, v: None if cancelled.is_set()
                             else emit(self.verdict, commit, e.name, v))
        self.fit_tasks.submit(work)

    def _checker(self) -> FitChecker:  # on the hub-fit queue
        from mixtral_desk.core.hub.fit import FitChecker, HeaderCache
        from mixtral_desk.core.plan_inputs import machine_here

        if self.machine is None:
            self.machine = machine_here()
        if self._cache is None:
            self._cache = HeaderCache()
        return FitChecker(self._browser().hub, self.machine, cache=self._cache)

    @property
    def cache(self) -> HeaderCache | None:
        """The header cache (None before the first verdict)."""
        return self._cache

    def close(self) -> None:
        """Stop reading headers and stop both threads."""
        self._cancel.set()
        self.tasks.close()
        self.fit_tasks.close(timeout=30)
