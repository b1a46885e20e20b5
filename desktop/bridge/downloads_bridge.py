"""The download manager behind a worker thread; its events re-emitted as Qt signals.

:class:`~mixtral_desk.core.downloads.manager.DownloadManager` runs each job on its own thread and
calls back on those threads; :class:`DownloadsBridge` turns the callbacks into queued signals.
Its blocking calls (pause and cancel wait for the job to stop; the job list is SQL) run on the
``downloads`` task queue.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from ..errors import ErrorSink
from ..signals import emit
from .tasks import TaskQueue

if TYPE_CHECKING:
    from mixtral_desk.core.catalog import CatalogEntry
    from mixtral_desk.core.downloads.manager import DownloadManager
    from mixtral_desk.core.paths import DataPaths


class DownloadsBridge(QObject):
    """Adds, starts, pauses, resumes, cancels and lists download jobs off the GUI thread.

    Signals:
        jobs_listed(object): the list of every :class:`Job` (after :meth:`refresh` or a change).
        progress(object): a :class:`JobProgress` (a few per second per running job).
        state_changed(object): a :class:`JobStateChanged` (with the exception that failed or
            paused a job, a typed error to report through the :class:`ErrorSink`, and the model
            path for a completed one).
        notice(object): a :class:`JobNotice` (a retry, a stall, a restart).
    """

    jobs_listed = Signal(object)
    progress = Signal(object)
    state_changed = Signal(object)
    notice = Signal(object)

    def __init__(self, paths: DataPaths, sink: ErrorSink, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._paths = paths
        self._manager: DownloadManager | None = None
        self.tasks = TaskQueue("downloads", on_error=lambda e: sink.report(e), parent=self)
        self.state_changed.connect(lambda _: self.refresh())

    def configure(self, endpoint: str | None, token: str | None) -> None:
        """(Re)create the manager for this Hub endpoint and token (running jobs are paused)."""
        def make() -> None:
            from mixtral_desk.core.downloads.manager import DownloadManager

            if self._manager is not None:
                self._manager.close()
            self._manager = DownloadManager(paths=self._paths, endpoint=endpoint or None,
                                            token=token or None, on_event=self._on_event)
        self.tasks.submit(make, lambda _: self.refresh())

    def _on_event(self, event: object) -> None:  # on a download thread
        from mixtral_desk.core.downloads.events import JobNotice, JobProgress

        if isinstance(event, JobProgress):
            emit(self.progress, event)
        elif isinstance(event, JobNotice):
            emit(self.notice, event)
        else:
            emit(self.state_changed, event)

    def _with(self, work: Callable[[DownloadManager], Any],
              on_done: Callable[[Any], None] | None = None) -> None:
        def task() -> Any:
            if self._manager is None:
                raise RuntimeError("The download manager is not ready.")
            return work(self._manager)
        self.tasks.submit(task, on_done)

    def refresh(self) -> None:
        """List the jobs again (:attr:`jobs_listed`)."""
        self._with(lambda m: m.jobs(), partial(emit, self.jobs_listed))

    def download(self, entry: CatalogEntry) -> None:
        """Add (or find) the job for a catalog entry and start it."""
        self._with(lambda m: m.start(m.add_catalog(entry).id), lambda _: self.refresh())

    def download_repo(self, repo_id: str, files: tuple[str, ...], revision: str | None) -> None:
        """Add (or find) the job for Hub files (one entry of the Hub browser) and start it."""
        self._with(lambda m: m.start(m.add_repo(repo_id, list(files), revision).id),
                   lambda _: self.refresh())

    def resume(self, job_id: str) -> None:
        """Resume a paused job, or retry a failed one."""
        self._with(lambda m: m.start(job_id), lambda _: self.refresh())

    def pause(self, job_id: str) -> None:
        """Pause a job (its bytes are kept)."""
        self._with(lambda m: m.pause(job_id), lambda _: self.refresh())

    def pause_running(self) -> None:
        """Pause every queued or running job (Offline mode was turned on); bytes are kept."""
        def pause_all() -> None:
            manager = self._manager
            if manager is None:  # not opened yet: nothing runs
                return
            for job in manager.jobs():
                if job.state in ("queued", "running"):
                    manager.pause(job.id)
        self.tasks.submit(pause_all, lambda _: self.refresh())

    def cancel(self, job_id: str) -> None:
        """Cancel a job and delete its partial data."""
        self._with(lambda m: m.cancel(job_id), lambda _: self.refresh())

    def close(self) -> None:
        """Pause running jobs (resumable next time) and stop the thread."""
        def shut() -> None:
            if self._manager is not None:
                self._manager.close()
                self._manager.store.close()
        self.tasks.submit(shut)
        self.tasks.close(timeout=30)
