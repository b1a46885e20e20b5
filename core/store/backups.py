"""Automatic backups of the conversation database: taking, listing and rotating them.

Copies go to a ``backups/`` folder beside the database, named
``conversations-<UTC time>.sqlite3`` (a copy made before a schema upgrade adds
``-before-v<old version>``). They are made with SQLite's online backup API from a read-only
connection of their own that holds one read transaction for the whole copy: in WAL mode that is
a consistent snapshot even while a reply streams and the store keeps writing, and the copy runs in
steps of :data:`STEP_PAGES` pages without ever taking the store's lock, so the store queue does
not wait for it (bench/bench_store.py measures the longest stall).

Before each copy the source passes ``PRAGMA quick_check``: a damaged database never rotates the
good backups out. A copy is written under a ``.partial`` name and renamed when complete, so a
full disk leaves the earlier backups as they were.

Rotation (:func:`choose_kept`) keeps the newest :data:`KEEP_LAST`, plus the newest of each of the
last :data:`KEEP_DAILY` days, :data:`KEEP_WEEKLY` ISO weeks and :data:`KEEP_MONTHLY` months that
have one, and then drops the oldest kept copies until the total fits the size budget (never the
newest copy).
"""

from __future__ import annotations

import glob
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from ..errors import StoreError
from ..i18n import N_
from . import damage

log = logging.getLogger(__name__)

KEEP_LAST: Final = 8
KEEP_DAILY: Final = 7
KEEP_WEEKLY: Final = 4
KEEP_MONTHLY: Final = 6
STEP_PAGES: Final = 256
"""Pages copied per step (1 MiB at the default 4 KiB page size)."""
DEFAULT_BUDGET_MB: Final = 2048
DEFAULT_INTERVAL_MINUTES: Final = 30

_NAME = re.compile(r"^(?P<stem>.+)-(?P<time>\d{8}T\d{6}\d{3}Z)(?:-before-v(?P<version>\d+))?"
                   r"(?:-(?P<counter>\d+))?\.sqlite3$")
_TIME_FORMAT = "%Y%m%dT%H%M%S"


@dataclass(frozen=True)
class Backup:
    """One backup copy: its file, when it was taken (UTC), its size in bytes, and, for the copy
    made before a schema upgrade, the schema version it kept (else ``None``)."""

    path: Path
    taken_at: datetime
    size: int
    before_version: int | None = None


def backups_folder(database: Path) -> Path:
    """The folder of ``database``'s backups (beside it)."""
    return database.parent / "backups"


def _stamp(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime(_TIME_FORMAT) + f"{moment.microsecond // 1000:03d}Z"


def new_backup_path(database: Path, now: datetime | None = None,
                    before_version: int | None = None) -> Path:
    """An unused name for a backup of ``database`` taken at ``now``."""
    folder = backups_folder(database)
    base = f"{database.stem}-{_stamp(now or datetime.now(timezone.utc))}"
    if before_version is not None:
        base += f"-before-v{before_version}"
    candidate, counter = folder / f"{base}.sqlite3", 1
    while candidate.exists():
        counter += 1
        candidate = folder / f"{base}-{counter}.sqlite3"
    return candidate


def list_backups(database: Path) -> list[Backup]:
    """``database``'s backups, newest first (an unreadable folder has none)."""
    found: list[Backup] = []
    try:
        entries = list(backups_folder(database).iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or match["stem"] != database.stem:
            continue
        try:
            size = entry.stat().st_size
        except OSError:
            continue
        taken = datetime.strptime(match["time"][:15], _TIME_FORMAT).replace(
            microsecond=int(match["time"][15:18]) * 1000, tzinfo=timezone.utc)
        version = int(match["version"]) if match["version"] else None
        found.append(Backup(entry, taken, size, version))
    found.sort(key=lambda backup: (backup.taken_at, backup.path.name), reverse=True)
    return found


def choose_kept(backups: Iterable[Backup], budget_bytes: int) -> set[Path]:
    """Which backups rotation keeps (see the module's docstring); ``budget_bytes`` caps them."""
    newest_first = sorted(backups, key=lambda b: (b.taken_at, b.path.name), reverse=True)
    kept = {backup.path for backup in newest_first[:KEEP_LAST]}
    periods: list[tuple[int, Callable[[datetime], object]]] = [
        (KEEP_DAILY, lambda t: t.date()),
        (KEEP_WEEKLY, lambda t: t.isocalendar()[:2]),
        (KEEP_MONTHLY, lambda t: (t.year, t.month)),
    ]
    for count, period_of in periods:
        seen: list[object] = []
        for backup in newest_first:
            period = period_of(backup.taken_at)
            if period not in seen:
                seen.append(period)
                if len(seen) > count:
                    break
                kept.add(backup.path)
    chosen = [backup for backup in newest_first if backup.path in kept]
    total = sum(backup.size for backup in chosen)
    while len(chosen) > 1 and total > budget_bytes:
        total -= chosen.pop().size
    return {backup.path for backup in chosen}


def rotate(database: Path, budget_bytes: int) -> list[Path]:
    """Delete the backups that :func:`choose_kept` does not keep; return the deleted paths."""
    backups = list_backups(database)
    kept = choose_kept(backups, budget_bytes)
    deleted = _stale_partials(database)
    for backup in backups:
        if backup.path not in kept:
            try:
                backup.path.unlink()
            except OSError as error:
                log.warning("Could not delete the old backup %s: %s", backup.path, error)
                continue
            deleted.append(backup.path)
    return deleted


def _stale_partials(database: Path) -> list[Path]:
    """Delete the ``.partial`` copies that a process stopped mid-copy left (older than an hour,
    so never one being written now); return them."""
    deleted = []
    cutoff = time.time() - 3600
    for partial in backups_folder(database).glob("*.partial"):
        try:
            if partial.stat().st_mtime < cutoff:
                partial.unlink()
                deleted.append(partial)
        except OSError as error:
            log.warning("Could not delete the unfinished backup %s: %s", partial, error)
    return deleted


def copy_database(source: sqlite3.Connection, target: Path,
                  progress: Callable[[int, int], None] | None = None) -> None:
    """Copy the database of ``source`` to ``target`` in steps (online backup API).

    ``progress(remaining_pages, total_pages)`` is called after each step. The copy is written to
    ``target`` + ``.partial`` and renamed when complete; on failure nothing is left behind.

    Raises:
        sqlite3.Error, OSError: the copy could not be written (disk full, permissions).
    """
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy, pages=STEP_PAGES, sleep=0, progress=None if progress is None
                          else lambda _status, remaining, total: progress(remaining, total))
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def take_backup(database: Path, *, budget_bytes: int, now: datetime | None = None,
                before_version: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> Backup:
    """Check ``database``, copy it into its backups folder, rotate; return the new backup.

    Uses a read-only connection of its own (see the module's docstring), so it may run on any
    thread while the store is in use.

    Raises:
        CorruptDatabaseError: the database failed ``PRAGMA quick_check``; no backup was taken
            and none was deleted.
        StoreError: the copy could not be written (disk full, permissions); the earlier backups
            are as they were.
    """
    target = new_backup_path(database, now, before_version)
    try:
        source = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True,
                                 isolation_level=None)
    except sqlite3.Error as error:
        raise damage.open_error(database, error) from error
    try:
        problems = damage.quick_check(source)
        if problems:
            raise damage.damaged(database, problems[0])
        target.parent.mkdir(parents=True, exist_ok=True)
        source.execute("BEGIN")  # one snapshot for every step
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()
        copy_database(source, target, progress)
    except (sqlite3.Error, OSError) as error:
        raise StoreError(
            N_("Could not back up the conversation database to {target}: {error}. The earlier "
               "backups are kept."), target=str(target), error=str(error)) from error
    finally:
        source.close()
    try:  # the backup is taken; a folder that cannot be tidied now does not undo it
        rotate(database, budget_bytes)
    except OSError as error:
        log.warning("Could not rotate the backups of %s: %s", database, error)
    try:
        size = target.stat().st_size
    except OSError:
        size = 0
    return Backup(target, now or datetime.now(timezone.utc), size, before_version)


def is_due(database: Path, interval_minutes: int, now: datetime | None = None) -> bool:
    """Whether a timed backup is due: none yet, or the newest is ``interval_minutes`` old
    (with ``interval_minutes`` 0, timed backups are off and only closing backs up)."""
    if interval_minutes <= 0:
        return False
    newest = next(iter(list_backups(database)), None)
    moment = now or datetime.now(timezone.utc)
    return newest is None or (moment - newest.taken_at).total_seconds() >= interval_minutes * 60


def drop_superseded_upgrade_copies(database: Path, version: int, kept: Path) -> list[Path]:
    """Delete the other copies made before upgrading from schema ``version`` than ``kept``
    (the ``-before-v<version>`` backups, and the ``<name>.bak-v<version>-…`` files older
    versions left beside the database); return them.

    A migration that fails leaves the database as it was, so each attempt made another copy of
    the same thing: one per version is enough, the newest. A copy that cannot be deleted is left
    (and not returned).
    """
    others = [b.path for b in list_backups(database) if b.before_version == version]
    others += database.parent.glob(glob.escape(f"{database.name}.bak-v{version}-") + "*")
    dropped: list[Path] = []
    for other in others:
        if other == kept or other.name.endswith(("-wal", "-shm", "-journal")):
            continue
        try:
            other.unlink()
        except OSError:
            continue
        dropped.append(other)
    return dropped
