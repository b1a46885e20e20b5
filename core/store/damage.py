"""Telling a damaged conversation database from a bug: errors at open, and SQLite's quick check.

Disks, sync tools and outside edits damage files in a few typical ways: the file is cut short,
a page is overwritten, the header is zeroed, the file is replaced by a folder, or the folder
becomes read-only. Each of them must reach the user as a typed, known error
(:class:`~mixtral_desk.core.errors.CorruptDatabaseError` or
:class:`~mixtral_desk.core.errors.StoreError`), never as "a bug". :func:`open_error` words an
``sqlite3`` error met while opening; :func:`quick_check` runs ``PRAGMA quick_check`` and returns
what it found, so that nothing is written into a file that has not passed it since it was opened.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from ..errors import CorruptDatabaseError, StoreError, UserText
from ..i18n import N_

log = logging.getLogger(__name__)

#: Words in SQLite's messages that mean the file itself is damaged (not the environment).
DAMAGE_WORDS = ("malformed", "not a database", "file is not a database", "corrupt",
                "database disk image", "wrong # of entries", "unable to open database file")
#: How many of ``quick_check``'s findings are kept (it can list thousands for a wiped page).
MAX_PROBLEMS = 20


def means_damage(error: BaseException) -> bool:
    """Whether an ``sqlite3`` error says the file is damaged (rather than busy or read-only)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.DatabaseError) and any(
        word in text for word in DAMAGE_WORDS[:-1])


def damaged(path: Path, detail: str | UserText) -> CorruptDatabaseError:
    """The error for a conversation database that is damaged (``detail``: SQLite's words)."""
    return CorruptDatabaseError(
        N_("The conversation database {path} is damaged ({detail}). It was left untouched; "
           "it can be salvaged or a backup restored."),
        path=str(path), detail=detail)


def open_error(path: Path, error: sqlite3.Error) -> StoreError:
    """The typed error for an ``sqlite3`` error met while opening ``path``.

    Damage gives :class:`CorruptDatabaseError`; a read-only file or folder and other
    environment problems give :class:`StoreError` with SQLite's words.
    """
    if means_damage(error):
        return damaged(path, str(error))
    text = str(error)
    if "readonly" in text.replace(" ", "").replace("-", "") or "read only" in text:
        return StoreError(
            N_("Cannot write the conversation database {path}: the file or its folder is "
               "read-only ({error}). Make them writable, or start Mixtral Desk with another "
               "data folder."), path=str(path), error=text)
    return StoreError(N_("Cannot open the conversation database {path}: {error}"),
                      path=str(path), error=text)


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """Run ``PRAGMA quick_check``; return its findings (empty when the file is sound).

    A file so damaged that the check itself cannot run gives SQLite's error as the one finding.
    At most :data:`MAX_PROBLEMS` findings are returned.

    Raises:
        StoreError: the check could not run for another reason (locked, an I/O error), which
            says nothing about damage.
    """
    try:
        rows = conn.execute(f"PRAGMA quick_check({MAX_PROBLEMS})").fetchall()
    except sqlite3.DatabaseError as error:
        if not means_damage(error):  # busy, locked, an I/O error: not a finding about the file
            raise StoreError(N_("Cannot check the conversation database: {error}"),
                             error=str(error)) from error
        return [str(error)]
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    if problems:
        log.warning("The conversation database failed its quick check: %s", "; ".join(problems))
    return problems


def set_aside(path: Path, label: str = "damaged", now: datetime | None = None) -> Path:
    """Rename ``path`` (file or folder) and its ``-wal``/``-shm`` to ``<name>.<label>-<time>``.

    The side files keep SQLite's naming, so the set-aside file still opens with its log.

    Raises:
        StoreError: it cannot be renamed (permissions).
    """
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target, counter = path.with_name(f"{path.name}.{label}-{stamp}"), 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.{label}-{stamp}-{counter}")
    try:
        path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
    except OSError as error:
        raise StoreError(N_("Cannot move the damaged database {path} aside: {error}"),
                         path=str(path), error=str(error)) from error
    return target


def check_file(path: Path) -> list[str]:
    """``PRAGMA quick_check`` of ``path`` on a read-only connection of its own (so it may run
    on any thread while the store is in use); its findings, empty when the file is sound."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as error:
        return [str(error)]
    try:
        return quick_check(conn)
    finally:
        conn.close()
