"""Durable download jobs: ``downloads.sqlite3`` in the data folder (WAL, safe across processes).

A job survives crashes, ``kill -9``, reboots and updates: it is listed again and resumes from the
bytes on disk. A job whose owning process died while ``running`` is shown as ``interrupted``
(see :attr:`Job.display_state`) and any process may resume it. Another process asks a running job
to pause or cancel through the ``request`` column, which the owner polls.

The schema is versioned with ``PRAGMA user_version`` and ordered migration functions.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from ..errors import UserText
from ..i18n import N_, tr
from ..store.damage import quick_check
from .errors import DownloadError, JobNotFoundError

JobState = Literal["queued", "running", "paused", "completed", "failed", "cancelled"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running", "paused"})
#: Each display state in words (translated where shown, with :func:`state_name`).
STATE_NAMES: dict[str, str] = {
    "queued": N_("queued"), "running": N_("running"), "paused": N_("paused"),
    "completed": N_("completed"), "failed": N_("failed"), "cancelled": N_("cancelled"),
    "interrupted": N_("interrupted"),
}
FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
HEARTBEAT_S = 2.0


@dataclass
class JobFile:
    """One remote file of a job. ``size``/``sha256`` are None until resolved."""

    path: str
    size: int | None = None
    sha256: str | None = None
    done: int = 0
    state: Literal["pending", "downloading", "verified", "failed"] = "pending"


@dataclass
class Job:
    """One download: a catalog entry or a repository's file(s), with all parts of a split model.

    ``error``: why a ``failed`` job failed, or why a ``paused`` one stopped by itself (network
    gone, disk full); translated where it is shown (``str(job.error)``).
    """

    id: str
    model_id: str
    repo_id: str
    revision: str | None
    requested: list[str]
    dest_dir: Path
    endpoint: str | None = None
    catalog_id: str | None = None
    commit: str | None = None
    state: JobState = "queued"
    error: UserText | None = None
    request: str | None = None
    owner_pid: int | None = None
    heartbeat: float | None = None
    created: float = 0.0
    updated: float = 0.0
    files: list[JobFile] = field(default_factory=list)

    @property
    def total(self) -> int | None:
        """Bytes of all files, once resolved."""
        sizes = [f.size for f in self.files]
        return None if not sizes or None in sizes else sum(s or 0 for s in sizes)

    @property
    def done(self) -> int:
        return sum(f.done for f in self.files)

    @property
    def is_live(self) -> bool:
        """Whether a living process runs this job now (its heartbeat is fresh)."""
        if self.state != "running" or self.owner_pid is None or self.heartbeat is None:
            return False
        if time.time() - self.heartbeat > 5 * HEARTBEAT_S:
            return False
        return _pid_alive(self.owner_pid)

    @property
    def display_state(self) -> str:
        """``state``, except a ``running`` job whose process died shows ``interrupted``."""
        return "interrupted" if self.state == "running" and not self.is_live else self.state

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model_id, "repo": self.repo_id,
            "revision": self.revision, "commit": self.commit, "catalog_id": self.catalog_id,
            "state": self.display_state,
            "error": self.error.english() if self.error is not None else None,
            "done_bytes": self.done,
            "total_bytes": self.total, "dest_dir": str(self.dest_dir),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "done_bytes": f.done,
                       "state": f.state} for f in self.files],
            "created": self.created, "updated": self.updated,
        }


def state_name(state: str) -> str:
    """A job state (``display_state``) in the interface language."""
    return tr(STATE_NAMES[state]) if state in STATE_NAMES else state


def dump_error(message: UserText | None) -> str | None:
    """A job's error as the ``error`` column stores it (JSON, so that it can be translated into
    whatever language it is shown in later)."""
    return None if message is None else json.dumps(message.to_data(), ensure_ascii=False)


def load_error(stored: str | None) -> UserText | None:
    """The message :func:`dump_error` stored; a plain text (written by an older version) is
    kept as it is."""
    if stored is None:
        return None
    try:
        data = json.loads(stored)
        if isinstance(data, dict):
            return UserText.from_data(data)
    except ValueError:
        pass
    return UserText(stored)


def _pid_alive(pid: int) -> bool:
    # psutil, not os.kill(pid, 0): on Windows that would send Ctrl-C to the process.
    return bool(psutil.pid_exists(pid))


def _v1(db: sqlite3.Connection) -> None:
    _script(db, """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY, seq INTEGER NOT NULL, model_id TEXT NOT NULL,
            repo_id TEXT NOT NULL, revision TEXT, requested TEXT NOT NULL, dest_dir TEXT NOT NULL,
            endpoint TEXT, catalog_id TEXT, commit_sha TEXT, state TEXT NOT NULL, error TEXT,
            request TEXT, owner_pid INTEGER, heartbeat REAL,
            created REAL NOT NULL, updated REAL NOT NULL);
        CREATE TABLE job_files (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
            path TEXT NOT NULL, size INTEGER, sha256 TEXT, done INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'pending', PRIMARY KEY (job_id, idx));
        CREATE INDEX jobs_state ON jobs(state, seq);
    """)


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run statements inside the open transaction (``executescript`` would commit it)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1]
_JOB_COLUMNS = {"state", "error", "request", "owner_pid", "heartbeat", "commit", "revision",
                "endpoint"}


class JobStore:
    """The job table. Thread-safe; several processes may open the same file.

    Raises (every method):
        DownloadError: the database is unreadable or from a newer version.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=10, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # No fsync per commit: on ext4 (data=ordered) it would also flush the gigabytes of
            # model data being written, once a second. WAL + NORMAL never corrupts; a power cut
            # may lose the last progress rows, and the bytes on disk are the truth anyway.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise DownloadError(N_("Cannot open the download list {path}: {reason}"),
                                path=path, reason=error) from error

    def _migrate(self) -> None:
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise DownloadError(N_("The download list {path} was written by a newer "
                                       "Mixtral Desk; update the app."), path=self.path)
            for number in range(version, len(MIGRATIONS)):
                MIGRATIONS[number](db)
                db.execute(f"PRAGMA user_version={number + 1}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check(self) -> list[str]:
        """``PRAGMA quick_check``'s findings (empty: the list is sound)."""
        with self._lock:
            return quick_check(self._db)

    # --- reading --------------------------------------------------------------------------------

    def _row_to_job(self, row: sqlite3.Row | tuple[Any, ...]) -> Job:
        (job_id, _seq, model_id, repo_id, revision, requested, dest_dir, endpoint, catalog_id,
         commit, state, error, request, owner_pid, heartbeat, created, updated) = row
        files = [JobFile(path, size, sha, done, fstate) for path, size, sha, done, fstate in
                 self._db.execute("SELECT path, size, sha256, done, state FROM job_files "
                                  "WHERE job_id=? ORDER BY idx", (job_id,))]
        return Job(job_id, model_id, repo_id, revision, json.loads(requested), Path(dest_dir),
                   endpoint, catalog_id, commit, state, load_error(error), request, owner_pid,
                   heartbeat,
                   created, updated, files)

    def get(self, job_id: str) -> Job:
        """The job with this id (or a unique prefix of it).

        Raises:
            JobNotFoundError: no job, or the prefix is ambiguous.
        """
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE id LIKE ? || '%' ORDER BY seq",
                                    (job_id,)).fetchall()
            exact = [r for r in rows if r[0] == job_id]
            if len(exact) == 1 or len(rows) == 1:
                return self._row_to_job((exact or rows)[0])
        if rows:
            raise JobNotFoundError(N_("Download id {id!r} is ambiguous; type more of it."),
                                   id=job_id)
        raise JobNotFoundError(N_("No download with id {id!r} (see `downloads list`)."),
                               id=job_id)

    def list_jobs(self, states: frozenset[str] | None = None) -> list[Job]:
        """Jobs in queue order, optionally only those in ``states``."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
            jobs = [self._row_to_job(r) for r in rows]
        return [j for j in jobs if states is None or j.state in states]

    def find_active(self, model_id: str, repo_id: str, requested: list[str],
                    revision: str | None) -> Job | None:
        """An unfinished job for the same thing (running ``download`` again continues it)."""
        for job in self.list_jobs(ACTIVE_STATES):
            if (job.model_id, job.repo_id, job.requested, job.revision) == (
                    model_id, repo_id, requested, revision):
                return job
        return None

    # --- writing --------------------------------------------------------------------------------

    def create(self, *, model_id: str, repo_id: str, revision: str | None,
               requested: list[str], dest_dir: Path, endpoint: str | None,
               catalog_id: str | None = None) -> Job:
        """Add a queued job and return it."""
        now = time.time()
        job_id = secrets.token_hex(4)
        with self._tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute("INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,NULL,'queued',NULL,NULL,NULL,"
                       "NULL,?,?)", (job_id, seq, model_id, repo_id, revision,
                                     json.dumps(requested), str(dest_dir), endpoint, catalog_id,
                                     now, now))
        return self.get(job_id)

    def update(self, job_id: str, **values: Any) -> None:
        """Set job columns (``state``, ``error`` (a :class:`UserText` or None), ``request``,
        ``owner_pid``, ``heartbeat``, ``commit``, ``revision``, ``endpoint``)."""
        unknown = set(values) - _JOB_COLUMNS
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        if "error" in values:
            values["error"] = dump_error(values["error"])
        columns = {("commit_sha" if k == "commit" else k): v for k, v in values.items()}
        columns["updated"] = time.time()
        sets = ", ".join(f"{k}=?" for k in columns)
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*columns.values(), job_id))

    def set_files(self, job_id: str, files: list[JobFile]) -> None:
        """Replace the job's file list (after resolving), keeping nothing of the old one."""
        with self._tx() as db:
            db.execute("DELETE FROM job_files WHERE job_id=?", (job_id,))
            db.executemany("INSERT INTO job_files VALUES (?,?,?,?,?,?,?)",
                           [(job_id, i, f.path, f.size, f.sha256, f.done, f.state)
                            for i, f in enumerate(files)])

    def set_file_progress(self, job_id: str, index: int, done: int, state: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE job_files SET done=?, state=? WHERE job_id=? AND idx=?",
                       (done, state, job_id, index))
            db.execute("UPDATE jobs SET heartbeat=? WHERE id=?", (time.time(), job_id))

    def take_request(self, job_id: str) -> str | None:
        """The pause/cancel request another process left for this job (cleared on read)."""
        with self._tx() as db:
            row = db.execute("SELECT request FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row and row[0]:
                db.execute("UPDATE jobs SET request=NULL WHERE id=?", (job_id,))
                return str(row[0])
        return None

    def delete(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
