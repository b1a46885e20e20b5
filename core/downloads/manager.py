"""The download manager: a queue of durable jobs, run on worker threads, with pause/resume/cancel.

Typical use::

    manager = DownloadManager(on_event=sink)          # sink gets DownloadEvent objects
    job = manager.add_repo("mradermacher/Mixtral-8x7B-Instruct-v0.1-GGUF",
                           ["Mixtral-8x7B-Instruct-v0.1.Q4_K_M.gguf"])
    manager.start(job.id)                             # or: path = manager.run(job.id)

A job runs in four steps: resolve (revision → commit, sizes and sha256 from the Hub, a gated repo
refused here), check free space (what remains plus a margin), transfer each part (see
:mod:`.transfer`; a part gets its final name only after its size and sha256 verified), then join
old-style pieces and record the model in the folder's manifest. Jobs live in the downloads database
(``DataPaths.downloads_database``) so they survive crashes; another process may pause or cancel a
running job through it.

Offline mode refuses at once (:class:`HubOfflineError`) to add, start or run a job; a job that
meets it while running (the user switched it on) is paused, its bytes kept.

Events (``on_event``, called on worker threads — never block in it):
    JobStateChanged: each state change, with the error (the exception) and the model path.
    JobProgress: a few times a second while running: bytes done/total per part and per job,
        speed, ETA, stalled.
    JobNotice: a retry, a stall, a restart from zero.

Why one module of about 500 lines: the manager is the one place that moves a job from state to
state (queue, transfer, verification, naming, the manifest); the transfer loop, the jobs table,
the Hub client and the disk checks live in their own modules.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import get_session

from ..catalog import CatalogEntry
from ..errors import DeskError, UserText
from ..i18n import N_
from ..network import OfflineError, is_offline, require_network
from ..paths import DataPaths, data_paths
from .errors import (
    DiskFullError,
    DownloadError,
    DownloadInterrupted,
    HubOfflineError,
    JobStateError,
    NetworkError,
    VerificationError,
)
from .events import DownloadEvent, FileProgress, JobNotice, JobProgress, JobStateChanged, Phase
from .hub import HubClient, ResolvedFiles, default_endpoint
from .jobs import ACTIVE_STATES, HEARTBEAT_S, STATE_NAMES, Job, JobFile, JobStore
from .local import record_download
from .naming import joined_name, repo_folder
from .rebuild import open_job_store
from .storage import check_free_space, discard_job_files, final_path, join_pieces, part_path
from .transfer import (
    Control,
    RetryPolicy,
    TransferNotice,
    prepare_part,
    remove_part,
    transfer_file,
)

log = logging.getLogger("mixtral_desk.downloads")

#: Free space kept beyond what a download needs: 1 GiB, or 2 % of the download if more.
MIN_SPACE_MARGIN = 1024**3
_STALL_NOTICE_S = 5.0
_SPEED_WINDOW_S = 5.0


@dataclass
class _Live:
    """A job running in this process: its control and the numbers progress events need."""

    job: Job
    control: Control = field(default_factory=Control)
    phase: Phase = "resolving"
    done: list[int] = field(default_factory=list)
    last_byte: float = field(default_factory=time.monotonic)
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    path: Path | None = None


#: What Offline mode refuses here (the subject of :func:`network.offline_message`).
DOWNLOAD_FEATURE = N_("Downloading a model")


def _require_online() -> None:
    """Raises HubOfflineError at once when Offline mode is on."""
    require_network(DOWNLOAD_FEATURE, HubOfflineError)


def _state_text(state: str) -> UserText:
    """A job state in words, translated where the message is shown."""
    return UserText(STATE_NAMES.get(state, state))


def _message(error: Exception | None) -> UserText | None:
    """What a job stores of its error: a known error's message (translated where shown), or a
    bug's text."""
    if error is None:
        return None
    if isinstance(error, DeskError):
        return error.user_message
    return UserText(str(error) or type(error).__name__)


class DownloadManager:
    """Runs download jobs (at most ``max_parallel`` at once) and reports on them.

    ``endpoint``: the Hub or a mirror (default: ``HF_ENDPOINT``, else huggingface.co); a job keeps
    the endpoint it was created with. ``token``: an explicit token; otherwise the one stored by
    ``hf auth login`` unless ``use_stored_token`` is false. ``space_margin``: bytes to keep free.
    """

    def __init__(self, *, paths: DataPaths | None = None, models_dir: Path | None = None,
                 store: JobStore | None = None, endpoint: str | None = None,
                 token: str | None = None, use_stored_token: bool = True,
                 max_parallel: int = 1, policy: RetryPolicy | None = None,
                 on_event: Callable[[DownloadEvent], None] | None = None,
                 space_margin: int = MIN_SPACE_MARGIN, progress_interval: float = 0.25) -> None:
        self.paths = paths or data_paths()
        self.models_dir = models_dir or self.paths.models_dir
        self.store = store or open_job_store(self.paths.downloads_database, self.models_dir)[0]
        self.endpoint = (endpoint or default_endpoint()).rstrip("/")
        self.max_parallel = max(1, max_parallel)
        self.policy = policy or RetryPolicy()
        self.space_margin = space_margin
        self.progress_interval = progress_interval
        self._token = token
        self._use_stored_token = use_stored_token
        self._on_event = on_event
        self._lock = threading.RLock()
        self._live: dict[str, _Live] = {}
        self._queue: list[str] = []
        self._closed = False

    # --- adding jobs ------------------------------------------------------------------------------

    def add_catalog(self, entry: CatalogEntry) -> Job:
        """A job for a catalog entry (all its files), or the unfinished one that exists."""
        return self._add(entry.id, entry.repo_id, list(entry.files), entry.revision,
                         catalog_id=entry.id)

    def add_repo(self, repo_id: str, files: Sequence[str], revision: str | None = None) -> Job:
        """A job for file(s) of any Hub repo (a part of a split model brings all its parts)."""
        return self._add(repo_folder(repo_id), repo_id, list(files), revision)

    def _add(self, model_id: str, repo_id: str, files: list[str], revision: str | None,
             catalog_id: str | None = None) -> Job:
        _require_online()
        existing = self.store.find_active(model_id, repo_id, files, revision)
        if existing is not None:
            return existing
        return self.store.create(model_id=model_id, repo_id=repo_id, revision=revision,
                                 requested=files, dest_dir=self.models_dir / model_id,
                                 endpoint=self.endpoint, catalog_id=catalog_id)

    # --- controls ---------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """Every job, in queue order (finished ones too)."""
        return self.store.list_jobs()

    def get(self, job_id: str) -> Job:
        """Raises JobNotFoundError."""
        return self.store.get(job_id)

    def start(self, job_id: str) -> Job:
        """Queue a job to run in this process (``queued``, ``paused``, ``failed`` or interrupted).

        Raises:
            JobNotFoundError: no such job.
            JobStateError: it is finished, or another living process runs it.
            HubOfflineError: Offline mode is on (nothing is queued).
        """
        job = self.store.get(job_id)
        with self._lock:
            if job.id in self._live or job.id in self._queue:
                return job
            if job.state in ("completed", "cancelled"):
                raise JobStateError(N_("Download {id} is {state}; add it again to restart."),
                                    id=job.id, state=_state_text(job.state))
            if job.is_live:
                raise JobStateError(N_("Download {id} is running in another Mixtral Desk "
                                       "process (pid {pid})."), id=job.id, pid=job.owner_pid)
            _require_online()
            self.store.update(job.id, state="queued", error=None, request=None)
            self._queue.append(job.id)
        self._emit(JobStateChanged(job.id, "queued"))
        self._schedule()
        return self.store.get(job.id)

    resume = start

    def resume_all(self) -> list[Job]:
        """Queue every unfinished job that no living process runs (after a crash or restart);
        none in Offline mode."""
        started: list[Job] = []
        if is_offline():
            return started
        for job in self.store.list_jobs(ACTIVE_STATES):
            if not job.is_live and job.id not in self._live:
                started.append(self.start(job.id))
        return started

    def pause(self, job_id: str) -> Job:
        """Pause a job: here, in another process (through the database), or one not running.

        Raises:
            JobNotFoundError, JobStateError (the job is finished).
        """
        return self._control(job_id, "paused")

    def cancel(self, job_id: str) -> Job:
        """Cancel a job and delete its partial data (and parts it verified, unless completed).

        Raises:
            JobNotFoundError, JobStateError (the job is completed or cancelled already).
        """
        return self._control(job_id, "cancelled")

    def _control(self, job_id: str, wanted: str) -> Job:
        job = self.store.get(job_id)
        if job.state in ("completed", "cancelled") or (wanted == "paused" and job.state ==
                                                        "failed"):
            raise JobStateError(
                N_("Download {id} is {state}; it cannot be paused.") if wanted == "paused"
                else N_("Download {id} is {state}; it cannot be cancelled."),
                id=job.id, state=_state_text(job.state))
        with self._lock:
            live = self._live.get(job.id)
            if job.id in self._queue:
                self._queue.remove(job.id)
        if live is not None:
            live.control.request(wanted)
            live.finished.wait()
        elif job.is_live:
            self.store.update(job.id, request="pause" if wanted == "paused" else "cancel")
            deadline = time.monotonic() + 10 * HEARTBEAT_S
            while self.store.get(job.id).is_live and time.monotonic() < deadline:
                time.sleep(0.1)
        else:
            if wanted == "cancelled":
                discard_job_files(job)
            self._set_state(job.id, wanted)
        return self.store.get(job.id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until a job queued or running here stops; return it (its error is not raised)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            with self._lock:
                live = self._live.get(job_id)
                queued = job_id in self._queue
            if live is not None:
                live.finished.wait(None if deadline is None
                                   else max(0.0, deadline - time.monotonic()))
            elif not queued:
                break
            else:
                time.sleep(0.05)
        return self.store.get(job_id)

    def run(self, job_id: str) -> Path:
        """Run one job now (ignoring ``max_parallel``) and return the model path.

        Ctrl-C (KeyboardInterrupt) pauses it — the bytes stay for the next run — and re-raises.

        Raises:
            every DownloadError the job met (hub errors, NetworkError, VerificationError,
            InsufficientSpaceError, DiskFullError); DownloadInterrupted when paused or cancelled
            from elsewhere; JobStateError when it cannot start; HubOfflineError at once in
            Offline mode.
        """
        job = self.store.get(job_id)
        if job.is_live:
            raise JobStateError(N_("Download {id} is running in another Mixtral Desk process "
                                   "(pid {pid}); pause it there first."),
                                id=job.id, pid=job.owner_pid)
        _require_online()
        with self._lock:
            live = self._live.get(job.id) or self._launch(job)
        try:
            while not live.finished.wait(0.2):
                pass
        except KeyboardInterrupt:
            live.control.request("paused")
            live.finished.wait()
            raise
        if live.error is not None:
            raise live.error
        assert live.path is not None
        return live.path

    def close(self) -> None:
        """Pause every job running here (their bytes are kept) and stop taking new ones."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            lives = list(self._live.values())
        for live in lives:
            live.control.request("paused")
        for live in lives:
            live.finished.wait()

    # --- scheduling -------------------------------------------------------------------------------

    def _schedule(self) -> None:
        with self._lock:
            while not self._closed and self._queue and len(self._live) < self.max_parallel:
                job = self.store.get(self._queue.pop(0))
                self._launch(job)

    def _launch(self, job: Job) -> _Live:
        with self._lock:
            if job.id in self._queue:
                self._queue.remove(job.id)
            live = _Live(job)
            self._live[job.id] = live
        thread = threading.Thread(target=self._work, args=(live,), name=f"download-{job.id}",
                                  daemon=True)
        thread.start()
        return live

    def _work(self, live: _Live) -> None:
        job = live.job
        ticker = threading.Thread(target=self._tick, args=(live,), daemon=True,
                                  name=f"download-{job.id}-progress")
        try:
            self.store.update(job.id, state="running", error=None, request=None,
                              owner_pid=os.getpid(), heartbeat=time.time())
            self._emit(JobStateChanged(job.id, "running"))
            ticker.start()
            try:
                live.path = self._download(live)
            finally:
                with contextlib.suppress(Exception):
                    self._save_progress(live)
            live.phase = "done"
            self._emit(self._snapshot(live, time.monotonic()))  # the last one says 100 %
            self._set_state(job.id, "completed", path=live.path)
        except DownloadInterrupted as stop:
            if stop.reason == "cancelled":
                discard_job_files(self.store.get(job.id))
            self._set_state(job.id, stop.reason)
            live.error = stop
        except (NetworkError, DiskFullError, OfflineError) as error:  # resumable: bytes stay
            live.error = error
            self._set_state(job.id, "paused", error)
        except DownloadError as error:
            live.error = error
            self._set_state(job.id, "failed", error)
        except OSError as error:  # writing failed outside the transfer (sidecar, join, manifest)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                live.error = DiskFullError(N_("The disk is full ({path}). Free some space, "
                                              "then resume."), path=error.filename)
                self._set_state(job.id, "paused", live.error)
            else:
                live.error = DownloadError(N_("Cannot write the download: {reason}"),
                                           reason=error)
                self._set_state(job.id, "failed", live.error)
        except Exception as error:  # a bug: keep the job resumable, say what happened
            log.exception("download %s failed", job.id)
            live.error = error
            self._set_state(job.id, "failed", error)
        finally:
            live.phase = "done"
            with self._lock:
                self._live.pop(job.id, None)
            live.finished.set()
            if ticker.is_alive():
                ticker.join()
            self._schedule()

    def _set_state(self, job_id: str, state: str, error: Exception | None = None,
                   path: Path | None = None) -> None:
        self.store.update(job_id, state=state, error=_message(error), owner_pid=None,
                          request=None)
        self._emit(JobStateChanged(job_id, state, error, path))

    def _emit(self, event: DownloadEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # a listener's bug must not kill a download
            log.exception("download event listener failed")

    # --- one job ----------------------------------------------------------------------------------

    def _download(self, live: _Live) -> Path:
        job = live.job
        hub = HubClient(job.endpoint or self.endpoint, self._token,
                        use_stored_token=self._use_stored_token)
        resolved = hub.resolve(job.repo_id, job.requested, job.commit or job.revision)
        self._record_resolution(live, resolved)
        remaining = sum((f.size or 0) - f.done for f in job.files if f.state != "verified")
        if joined_name(resolved.files[0].path):
            remaining += resolved.total_size  # the pieces and the joined file, for a moment
        check_free_space(job.dest_dir, remaining, max(self.space_margin, remaining // 50),
                         job.model_id)
        for index in range(len(resolved.files)):
            self._fetch(live, hub, resolved, index)
        live.phase = "joining"
        names = [Path(f.path).name for f in resolved.files]
        primary = join_pieces(job.dest_dir, names)
        record_download(job.dest_dir, primary=primary,
                        files=[primary] if joined_name(names[0]) else names,
                        repo_id=job.repo_id, commit=resolved.commit,
                        sha256=[None] if joined_name(names[0]) else
                        [f.sha256 for f in resolved.files], endpoint=hub.endpoint)
        return job.dest_dir / primary

    def _record_resolution(self, live: _Live, resolved: ResolvedFiles) -> None:
        job = live.job
        files = []
        for remote in resolved.files:
            final = final_path(job.dest_dir, remote.path)
            part = part_path(job.dest_dir, remote.path)
            if final.is_file() and final.stat().st_size == remote.size:
                files.append(JobFile(remote.path, remote.size, remote.sha256, remote.size,
                                     "verified"))
            else:
                done = part.stat().st_size if part.is_file() else 0
                files.append(JobFile(remote.path, remote.size, remote.sha256,
                                     min(done, remote.size), "pending"))
        self.store.set_files(job.id, files)
        self.store.update(job.id, commit=resolved.commit)
        job.files, job.commit = files, resolved.commit
        live.done = [f.done for f in files]

    def _fetch(self, live: _Live, hub: HubClient, resolved: ResolvedFiles, index: int) -> None:
        job, remote = live.job, resolved.files[index]
        if job.files[index].state == "verified":
            return
        final = final_path(job.dest_dir, remote.path)
        part = part_path(job.dest_dir, remote.path)
        identity = {"repo": job.repo_id, "path": remote.path, "size": remote.size,
                    "sha256": remote.sha256}
        try:
            live.phase = "checking"
            prepare_part(part, identity, remote.size)

            def on_bytes(done: int) -> None:
                if live.phase == "checking":  # bytes from disk are not speed
                    live.phase = "downloading"
                    live.samples.clear()
                live.done[index] = done
                live.last_byte = time.monotonic()

            def on_notice(notice: TransferNotice) -> None:
                self._emit(JobNotice(job.id, remote.path, notice))

            transfer_file(part=part, size=remote.size, sha256=remote.sha256,
                          locate=lambda: hub.locate(job.repo_id, resolved.commit, remote.path),
                          client=get_session(), control=live.control, policy=self.policy,
                          on_bytes=on_bytes, on_notice=on_notice)
        except VerificationError:
            remove_part(part)
            live.done[index] = 0
            self.store.set_file_progress(job.id, index, 0, "failed")
            raise
        part.replace(final)
        remove_part(part)
        job.files[index].state = "verified"
        self.store.set_file_progress(job.id, index, remote.size, "verified")

    # --- progress ---------------------------------------------------------------------------------

    def _tick(self, live: _Live) -> None:
        job = live.job
        last_save = last_poll = 0.0
        while not live.finished.wait(self.progress_interval):
            now = time.monotonic()
            if now - last_poll >= 0.5:
                last_poll = now
                wanted = self.store.take_request(job.id)
                if wanted:
                    live.control.request("paused" if wanted == "pause" else "cancelled")
            if now - last_save >= HEARTBEAT_S / 2:
                last_save = now
                self._save_progress(live)
            if live.done:
                self._emit(self._snapshot(live, now))

    def _save_progress(self, live: _Live) -> None:
        for index, file in enumerate(live.job.files):
            if index < len(live.done) and file.state != "verified":
                self.store.set_file_progress(live.job.id, index, live.done[index], "downloading"
                                             if live.done[index] else "pending")
        self.store.update(live.job.id, heartbeat=time.time())

    def _snapshot(self, live: _Live, now: float) -> JobProgress:
        files = tuple(FileProgress(f.path, live.done[i], f.size)
                      for i, f in enumerate(live.job.files))
        done = sum(live.done)
        total = live.job.total
        live.samples.append((now, done))
        while live.samples and now - live.samples[0][0] > _SPEED_WINDOW_S:
            live.samples.popleft()
        t0, d0 = live.samples[0]
        speed = (done - d0) / (now - t0) if now > t0 and live.phase == "downloading" else 0.0
        stalled = live.phase == "downloading" and now - live.last_byte > min(
            _STALL_NOTICE_S, self.policy.stall_timeout / 2)
        eta = (total - done) / speed if total is not None and speed > 0 else None
        return JobProgress(live.job.id, files, done, total, max(0.0, speed), eta, stalled,
                           live.phase)
