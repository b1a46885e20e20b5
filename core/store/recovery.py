"""Carrying on after damage: set the damaged file aside, salvage into a fresh database, restore.

:func:`open_or_recover` is how the front ends open the conversation database: a file that is
damaged (at open, or by ``PRAGMA quick_check``), a zero-byte file where backups exist, or a folder
in its place is moved aside as ``conversations.sqlite3.damaged-<UTC time>`` with its ``-wal`` and
``-shm`` (never deleted), every readable conversation and message is salvaged into a fresh
database (core/store/salvage.py), the newest good backup fills in what could not be read, and
the :class:`RecoveryReport` says exactly what happened. :func:`restore` puts a backup in place,
keeping the current file aside first. Conversations are never cleaned up quietly.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CorruptDatabaseError, StoreError, UserText
from ..i18n import N_
from . import backups, damage, database, salvage
from .backups import Backup
from .damage import set_aside
from .search import cjk_index_text
from .store import Store

log = logging.getLogger(__name__)

_INSERT_CONVERSATION = (
    f"INSERT OR IGNORE INTO conversations ({', '.join(salvage.CONVERSATION_FIELDS)}, title_cjk) "
    f"VALUES ({', '.join('?' * (len(salvage.CONVERSATION_FIELDS) + 1))})")
_INSERT_MESSAGE = (
    f"INSERT OR IGNORE INTO messages ({', '.join(salvage.MESSAGE_FIELDS)}, search_cjk) "
    f"VALUES ({', '.join('?' * (len(salvage.MESSAGE_FIELDS) + 1))})")


@dataclass(frozen=True)
class RecoveryReport:
    """What :func:`recover` did.

    Attributes:
        kept_at: where the damaged file (or folder) now is, untouched.
        conversations, messages: how many were salvaged from the damaged file.
        backup: the backup that filled in, if one did; backup_conversations, backup_messages:
            how many came from it.
        unreadable: rows of the damaged file that could not be read.
    """

    kept_at: Path
    conversations: int
    messages: int
    backup: Backup | None
    backup_conversations: int
    backup_messages: int
    unreadable: int

    def message(self) -> UserText:
        """The sentence to show the user."""
        if self.backup is None:
            return UserText(
                N_("The conversation database was damaged. Recovered {messages} messages in "
                   "{conversations} conversations from the damaged file ({unreadable} unreadable "
                   "rows skipped; there was no backup to fill in from). The damaged file is "
                   "kept at {path}."),
                messages=self.messages, conversations=self.conversations,
                unreadable=self.unreadable, path=str(self.kept_at))
        return UserText(
            N_("The conversation database was damaged. Recovered {messages} messages in "
               "{conversations} conversations from the damaged file ({unreadable} unreadable rows "
               "skipped) and {backup_messages} messages from the backup of {time}. The damaged "
               "file is kept at {path}."),
            messages=self.messages, conversations=self.conversations,
            unreadable=self.unreadable, backup_messages=self.backup_messages,
            time=self.backup.taken_at.astimezone().strftime("%Y-%m-%d %H:%M"),
            path=str(self.kept_at))


def newest_good_backup(path: Path) -> Backup | None:
    """The newest backup of ``path`` that passes ``PRAGMA quick_check``."""
    for candidate in backups.list_backups(path):
        try:
            conn = sqlite3.connect(candidate.path.resolve().as_uri() + "?mode=ro", uri=True)
        except sqlite3.Error:
            continue
        try:
            if not damage.quick_check(conn):
                return candidate
        finally:
            conn.close()
    return None


def _copy_rows(source: sqlite3.Connection, target: sqlite3.Connection, origin: Path,
               tally: salvage.Tally) -> tuple[int, int]:
    """Insert ``source``'s readable rows that ``target`` lacks; return (conversations, messages)."""
    return _insert_rows(
        target,
        salvage.readable_rows(source, "conversations", salvage.CONVERSATION_FIELDS, origin,
                              tally),
        salvage.readable_rows(source, "messages", salvage.MESSAGE_FIELDS, origin, tally))


def _insert_rows(target: sqlite3.Connection, conversation_rows: Iterable[tuple[Any, ...]],
                 message_rows: Iterable[tuple[Any, ...]]) -> tuple[int, int]:
    """Insert the rows ``target`` lacks (by id); return how many (conversations, messages)."""
    conversations = messages = 0
    for row in conversation_rows:
        cleaned = salvage.clean_conversation(row)
        if cleaned is not None:
            conversations += target.execute(_INSERT_CONVERSATION,
                                            (*cleaned, cjk_index_text(cleaned[1]))).rowcount
    for row in message_rows:
        cleaned = salvage.clean_message(row)
        if cleaned is not None:
            messages += target.execute(_INSERT_MESSAGE,
                                       (*cleaned, cjk_index_text(cleaned[4]))).rowcount
    return conversations, messages


def _repair_links(conn: sqlite3.Connection) -> None:
    """Make the salvaged rows a valid tree: a conversation for orphaned messages, no dangling
    parents (such a message becomes a root), a live active leaf."""
    conn.execute("""INSERT INTO conversations (id, created_at, updated_at)
        SELECT conversation_id, min(created_at), max(updated_at) FROM messages
        WHERE conversation_id NOT IN (SELECT id FROM conversations) GROUP BY conversation_id""")
    conn.execute("""UPDATE messages SET parent_id = NULL WHERE parent_id IS NOT NULL AND NOT EXISTS
        (SELECT 1 FROM messages AS p WHERE p.id = messages.parent_id
         AND p.conversation_id = messages.conversation_id)""")
    conn.execute("""UPDATE conversations SET active_leaf_id = (SELECT id FROM messages AS m
        WHERE m.conversation_id = conversations.id ORDER BY id DESC LIMIT 1)
        WHERE active_leaf_id IS NULL OR NOT EXISTS (SELECT 1 FROM messages AS m
            WHERE m.id = conversations.active_leaf_id
            AND m.conversation_id = conversations.id)""")


_INDEX_TRIGGERS = ("messages_fts_insert", "conversations_fts_insert")


def _suspend_index_triggers(conn: sqlite3.Connection) -> list[str]:
    """Drop the full-text index's insert triggers (inside the open transaction) and return
    their SQL: one index rebuild at the end is much faster than a million trigger runs."""
    rows = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
        f"({', '.join('?' * len(_INDEX_TRIGGERS))})", _INDEX_TRIGGERS).fetchall()
    for name, _sql in rows:
        conn.execute(f"DROP TRIGGER {name}")
    return [sql for _name, sql in rows]


def _rebuild_indexes(conn: sqlite3.Connection, triggers: list[str]) -> None:
    """Put the triggers back and index every salvaged row once."""
    for sql in triggers:
        conn.execute(sql)
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    conn.execute("INSERT INTO conversations_fts (conversations_fts) VALUES ('rebuild')")


def recover(path: Path) -> RecoveryReport:
    """Set the damaged ``path`` aside, salvage it and the newest good backup into a fresh one.

    Raises:
        StoreError: the file cannot be moved aside or the new database cannot be written.
    """
    backup = newest_good_backup(path)
    building = _salvaging(path)
    if not path.exists() and building.exists() and (earlier := _newest_set_aside(path)):
        kept = earlier  # a salvage that was interrupted: start it again from the kept file
    else:
        kept = set_aside(path)
    log.warning("The conversation database %s was damaged; it was moved to %s", path, kept)
    tally = salvage.Tally()
    _remove_database(building)
    # The fresh database is built beside the real one and put in place only when complete, so
    # an interrupted salvage never leaves an empty database that looks sound.
    Store.open(building).close()  # through the real migrations
    target = database.connect(building)
    try:
        target.execute("PRAGMA foreign_keys = OFF")
        target.execute("BEGIN IMMEDIATE")
        index_triggers = _suspend_index_triggers(target)
        conversations = messages = 0
        with tempfile.TemporaryDirectory(prefix="salvage-", dir=path.parent) as work:
            for source in salvage.sources(kept, Path(work)):
                try:
                    found = _copy_rows(source, target, kept, tally)
                finally:
                    source.close()
                conversations, messages = conversations + found[0], messages + found[1]
                if not tally.failed:
                    break  # everything was read; the other sources add nothing
            else:  # rows SQLite cannot reach may still lie on their pages
                found = _insert_rows(target, *salvage.scanned_rows(kept))
                conversations, messages = conversations + found[0], messages + found[1]
        from_backup = (0, 0)
        if backup is not None:
            source = sqlite3.connect(backup.path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                from_backup = _copy_rows(source, target, backup.path, salvage.Tally())
            finally:
                source.close()
        _repair_links(target)
        _rebuild_indexes(target, index_triggers)
        target.execute("COMMIT")
        target.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file that moves
    except (sqlite3.Error, OSError) as error:
        target.close()
        _remove_database(building)
        raise StoreError(N_("Cannot write the salvaged conversation database {path}: {error}"),
                         path=str(path), error=str(error)) from error
    except BaseException:  # interrupted: the next open starts again from the kept file
        target.close()
        raise
    target.close()
    _put_in_place(building, path)
    expected = tally.expected.get("messages")
    unreadable = (max(0, expected - messages) if expected is not None
                  else tally.skipped.get("messages", 0))
    return RecoveryReport(kept, conversations, messages, backup if any(from_backup) else None,
                          from_backup[0], from_backup[1], unreadable)


def _salvaging(path: Path) -> Path:
    """Where a salvage builds the new database before it replaces ``path``."""
    return path.with_name(path.name + ".salvaging")


def _newest_set_aside(path: Path) -> Path | None:
    """The newest ``<name>.damaged-<time>`` file kept beside ``path``, if any."""
    kept = [p for p in path.parent.glob(path.name + ".damaged-*")
            if not p.name.endswith(("-wal", "-shm", "-journal"))]
    return max(kept, key=lambda p: p.name) if kept else None


def _remove_database(path: Path) -> None:
    """Delete a database we built ourselves (and its side files), if it is there."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _put_in_place(built: Path, path: Path) -> None:
    """Move the complete database ``built`` (checkpointed, no side files) onto ``path``.

    Raises:
        StoreError: it cannot be moved.
    """
    try:
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        built.replace(path)
    except OSError as error:
        raise StoreError(N_("Cannot write the salvaged conversation database {path}: {error}"),
                         path=str(path), error=str(error)) from error


def _needs_recovery(path: Path) -> bool:
    """A folder in the database's place, an empty file where backups exist, or a salvage that
    was interrupted (no database, the one being built still there)."""
    try:
        return path.is_dir() or (path.is_file() and path.stat().st_size == 0
                                 and bool(backups.list_backups(path))) or (
            not path.exists() and _salvaging(path).exists()
            and _newest_set_aside(path) is not None)
    except OSError:
        return False


def open_or_recover(path: Path, *, check: bool = True) -> tuple[Store, RecoveryReport | None]:
    """Open the conversation database, recovering it first when it is damaged.

    ``check``: run ``PRAGMA quick_check`` now (else the first write runs it).

    Raises:
        NewerSchemaError, StoreError: as :meth:`Store.open` (a read-only folder, say).
    """
    report = None
    if _needs_recovery(path):
        report = recover(path)
    try:
        store = Store.open(path)
    except CorruptDatabaseError as error:
        if report is not None:
            raise
        log.warning("%s", error.english)
        report = recover(path)
        return Store.open(path), report
    if check and report is None and store.check():
        store.close()
        report = recover(path)
        store = Store.open(path)
    return store, report


def restore(path: Path, backup: Path) -> Path | None:
    """Put ``backup`` in place of the (closed) database ``path``; return where the current file
    was kept (``<name>.before-restore-<time>``; ``None`` if there was none).

    Raises:
        CorruptDatabaseError: ``backup`` is not a sound conversation database; nothing changed.
        StoreError: the files cannot be moved or written.
    """
    try:
        source = sqlite3.connect(backup.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise damage.open_error(backup, error) from error
    try:
        problems = damage.quick_check(source)
        if problems or not source.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'messages'").fetchone():
            raise damage.damaged(backup, problems[0] if problems else "no conversations table")
        # Copy first, beside the database: a copy that fails (a full disk) changes nothing.
        restoring = path.with_name(path.name + ".restoring")
        _remove_database(restoring)
        copy = sqlite3.connect(restoring)
        try:
            source.backup(copy)
            copy.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            copy.close()
        kept = set_aside(path, "before-restore") if path.exists() else None
        _put_in_place(restoring, path)
    except (sqlite3.Error, OSError) as error:
        _remove_database(path.with_name(path.name + ".restoring"))
        raise StoreError(N_("Cannot restore {backup} to {path}: {error}"),
                         backup=str(backup), path=str(path), error=str(error)) from error
    finally:
        source.close()
    Store.open(path).close()  # upgrades an older backup's schema, with its own backup first
    return kept
