"""Opening the SQLite file: a look at the header that changes nothing, the connection, a backup.

The store's file is checked before SQLite is allowed to write to it: :func:`peek_user_version`
reads the 100-byte header (or, while a write-ahead log exists, opens the file read-only), so a
file that is not SQLite, or that a newer Mixtral Desk wrote, is refused without a single byte of it
changing.
"""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from pathlib import Path

from ..errors import CorruptDatabaseError, StoreError, UserText
from ..i18n import N_
from . import backups
from .damage import open_error

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
BUSY_TIMEOUT_MS = 5_000
CACHE_SIZE_KIB = 32_000


def corrupt(path: Path, detail: str | UserText) -> CorruptDatabaseError:
    """The error for a file that is not a readable conversation database (``detail``: why)."""
    return CorruptDatabaseError(
        N_("{path} is not a readable conversation database ({detail}); it was left untouched. "
           "Move it aside to start a new one, or restore a backup."),
        path=str(path), detail=detail)


def peek_user_version(path: Path) -> int | None:
    """The file's ``PRAGMA user_version`` without changing the file, or ``None`` if it is new.

    A missing or empty file is new. When no ``-wal`` file exists the header in the main file is
    current, so it is read directly (no SQLite connection, no ``-shm`` file left behind);
    otherwise the file is opened with ``mode=ro``.

    Raises:
        CorruptDatabaseError: the file is not an SQLite database.
        StoreError: the file cannot be read (permissions, a directory in the way).
    """
    try:
        if not path.exists() or path.stat().st_size == 0:
            return None
        with path.open("rb") as file:
            header = file.read(HEADER_SIZE)
    except OSError as error:
        raise StoreError(N_("Cannot read the conversation database {path}: {error}"),
                         path=str(path), error=str(error)) from error
    if len(header) < HEADER_SIZE or not header.startswith(SQLITE_MAGIC):
        raise corrupt(path, UserText(N_("not an SQLite file")))
    page_size = int.from_bytes(header[16:18], "big")
    if not (page_size == 1 or (512 <= page_size <= 32768 and page_size & (page_size - 1) == 0)) \
            or header[21:24] != b"\x40\x20\x20":
        raise corrupt(path, UserText(N_("damaged SQLite header")))
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        pages = int.from_bytes(header[28:32], "big")
        page_bytes = 65536 if page_size == 1 else page_size
        # The header's page count is valid when its change counter matches (SQLite ≥ 3.7).
        if header[24:28] == header[92:96] and path.stat().st_size < pages * page_bytes:
            raise corrupt(path, UserText(N_("the file is shorter than its header says: "
                                            "it was cut off")))
        return int.from_bytes(header[60:64], "big", signed=True)
    try:
        readonly = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            readonly.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            row = readonly.execute("PRAGMA user_version").fetchone()
        finally:
            readonly.close()
    except sqlite3.DatabaseError as error:
        raise corrupt(path, str(error)) from error
    return int(row[0])


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` read-write in autocommit mode with the store's per-connection pragmas.

    ``journal_mode`` is left alone here (setting WAL writes to the file); see :func:`enable_wal`.
    The connection may be used from several threads; the caller serialises access.

    Raises:
        CorruptDatabaseError: the file is damaged (the pragmas read its first page).
        StoreError: SQLite cannot open the file (permissions, missing folder).
    """
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_SIZE_KIB}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.Error as error:
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()
        raise open_error(path, error) from error
    return conn


def enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to write-ahead logging with ``synchronous=NORMAL`` (safe against crashes).

    Raises:
        sqlite3.Error: the file cannot be written.
    """
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


def backup(conn: sqlite3.Connection, path: Path, version: int) -> Path:
    """Copy the open database into its backups folder (one of the rotated backups, named
    ``-before-v<version>``) with SQLite's online backup API; return the copy's path.

    Raises:
        StoreError: the copy cannot be written (disk full, permissions); nothing was migrated.
    """
    target = backups.new_backup_path(path, before_version=version)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        backups.copy_database(conn, target)
    except (sqlite3.Error, OSError) as error:
        raise StoreError(
            N_("Cannot back up {path} to {target} before upgrading it: {error}. "
               "Nothing was changed."),
            path=str(path), target=str(target), error=str(error)) from error
    return target
