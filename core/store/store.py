"""The conversation store: conversations, branching message trees, search, export and import.

One :class:`Store` wraps one SQLite connection. Every public method takes a lock, so a store may
be shared between threads (for example a GUI worker and the API server); SQLite's WAL mode lets
other processes read while it writes. Writes are short transactions; while a reply streams, the
chat layer calls :meth:`Store.update_message` every half second, which is a single ``UPDATE``.

Branching: a message's ``parent_id`` is the message it answers or follows. Regenerating a reply
or editing a user message adds a *sibling* (a new message with the same parent) instead of
overwriting, and the conversation remembers which leaf is shown (``active_leaf_id``). The shown
branch is the path from the root to that leaf.

Why one module of about 700 lines: :class:`Store` is the store's whole public API, and every
method is a short transaction on the one connection and lock it owns; migrations, search,
export and the row mapping already live in their own modules.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from ..errors import (
    CorruptDatabaseError,
    NewerSchemaError,
    NotFoundError,
    StoreError,
)
from ..i18n import N_
from ..paths import data_paths
from . import backups, damage, database, export, migrations
from .ids import new_id
from .models import (
    ACTIVE_LEAF,
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    ROLES,
    STATUSES,
    UNSET,
    ActiveLeaf,
    Conversation,
    Message,
    Role,
    SearchHit,
    Status,
    Unset,
    conversation_from_row,
    dump_json,
    message_from_row,
)
from .search import cjk_index_text, run_search
from .writers import writer_is_alive, writer_token

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"Unknown message role {role!r}; expected one of {', '.join(ROLES)}")
    return cast(Role, role)


def _check_status(status: str) -> Status:
    if status not in STATUSES:
        raise ValueError(f"Unknown message status {status!r}; expected one of "
                         f"{', '.join(STATUSES)}")
    return cast(Status, status)


def _no_conversation(conversation_id: str) -> NotFoundError:
    return NotFoundError(N_("No conversation with id {id}"), id=conversation_id)


def _no_message(message_id: str) -> NotFoundError:
    return NotFoundError(N_("No message with id {id}"), id=message_id)


def _newer(path: Path, found: int) -> NewerSchemaError:
    return NewerSchemaError(
        N_("{path} was written by a newer version of Mixtral Desk (database schema version "
           "{found}; this version knows up to {known}). Update Mixtral Desk to open it; the file "
           "was left untouched."),
        path=str(path), found=found, known=migrations.SCHEMA_VERSION)


class Store:
    """The conversation database. Make one with :meth:`open`; close it (or use ``with``).

    Attributes:
        path: the database file.
        schema_version: the schema version of the open database (always the current one).
        backup_path: the copy made before :meth:`open` migrated an older database, else None.
        recovered_on_open: how many replies :meth:`open` found cut off by a crash.
        checked: whether the file has passed ``PRAGMA quick_check`` since it was opened;
            nothing is written before it has (the first write runs the check).
        changes: how many writes this store has made (the backup timer's "something changed").
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, schema_version: int,
                 backup_path: Path | None = None) -> None:
        """Wrap an open, migrated connection; use :meth:`open` instead."""
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.path = path
        self.schema_version = schema_version
        self.backup_path = backup_path
        self.recovered_on_open = 0
        self.checked = False
        self.changes = 0

    # --- opening and closing -----------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str | None = None) -> Store:
        """Open (creating or upgrading) the database at ``path``, by default the app's own.

        Before an existing database is upgraded a copy is made in the ``backups/`` folder beside
        it (``<stem>-<UTC time>-before-v<old version>.sqlite3``, one of the rotated backups).
        Replies left 'streaming' by a crash are marked 'interrupted' (their count is in
        :attr:`recovered_on_open`).

        Raises:
            NewerSchemaError: a newer Mixtral Desk wrote the file; it is left byte-for-byte as is.
            CorruptDatabaseError: the file is not an SQLite database; it is left as is.
            StoreError: the file cannot be opened, written or backed up, or it is an SQLite
                database of another program.
        """
        target = Path(path).expanduser() if path is not None else data_paths().database
        if target.is_dir():
            raise StoreError(N_("Cannot open the conversation database {path}: it is a folder."),
                             path=str(target))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(N_("Cannot create the folder for {path}: {error}"),
                             path=str(target), error=str(error)) from error
        version = database.peek_user_version(target)
        if version is not None and version > migrations.SCHEMA_VERSION:
            raise _newer(target, version)
        conn = database.connect(target)
        try:
            return cls._prepare(conn, target, version or 0)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def _prepare(cls, conn: sqlite3.Connection, path: Path, version: int) -> Store:
        try:
            applied = migrations.applied_migrations(conn)
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise damage.open_error(path, error) from error
        if any(name not in migrations.KNOWN_NAMES for name in applied):
            raise _newer(path, max(version, len(applied)))
        if not applied and tables:
            raise StoreError(N_("{path} is an SQLite database of another program, not a "
                                "Mixtral Desk conversation database; it was left untouched."),
                             path=str(path))
        backup_path = None
        checked = False
        try:
            database.enable_wal(conn)
            if migrations.pending_migrations(conn) and applied:
                problems = damage.quick_check(conn)
                if problems:
                    raise damage.damaged(path, problems[0])
                checked = True
                backup_path = database.backup(conn, path, len(applied))
                backups.drop_superseded_upgrade_copies(path, len(applied), backup_path)
            migrations.migrate(conn)
        except sqlite3.Error as error:
            if damage.means_damage(error) or "readonly" in str(error):
                raise damage.open_error(path, error) from error
            if backup_path:
                raise StoreError(N_("Cannot prepare the conversation database {path}: {error}. "
                                    "A copy of the database from before is at {backup}."),
                                 path=str(path), error=str(error),
                                 backup=str(backup_path)) from error
            raise StoreError(N_("Cannot prepare the conversation database {path}: {error}."),
                             path=str(path), error=str(error)) from error
        store = cls(conn, path, migrations.SCHEMA_VERSION, backup_path)
        store.checked = checked or not applied  # a new file has nothing to check
        store.recovered_on_open = store.recover_interrupted()
        return store

    def close(self) -> None:
        """Close the database (idempotent). Later calls raise :class:`StoreError`."""
        with self._lock:
            if self._conn is None:
                return
            if self.checked:  # it writes: never into a file that failed or skipped the check
                with suppress(sqlite3.Error):  # only a hint for the query planner
                    self._conn.execute("PRAGMA optimize")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def check(self) -> list[str]:
        """Run ``PRAGMA quick_check`` now; return its findings (empty: sound, writes allowed).

        The window runs it on the store queue right after opening; :meth:`_use` runs it before
        the first write when nobody has yet.

        Raises:
            StoreError: the store is closed.
        """
        with self._lock:
            if self._conn is None:
                raise StoreError(N_("The conversation store is closed."))
            problems = damage.quick_check(self._conn)
            self.checked = not problems
            return problems

    def passed_check(self) -> None:
        """Record that the file passed ``PRAGMA quick_check`` on another connection since this
        one opened (the window checks on a thread of its own); writes need no check of their
        own then."""
        with self._lock:
            self.checked = True

    @contextmanager
    def _use(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite's environment errors become StoreErrors.

        ``write``: the caller writes; a file that has not passed :meth:`check` since it was
        opened is checked first, and a damaged one raises :class:`CorruptDatabaseError`.
        """
        with self._lock:
            if self._conn is None:
                raise StoreError(N_("The conversation store is closed."))
            if write and not self.checked:
                problems = self.check()
                if problems:
                    raise damage.damaged(self.path, problems[0])
            if write:
                self.changes += 1
            try:
                yield self._conn
            except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
                raise  # a bug, not the environment
            except sqlite3.DatabaseError as error:
                text = str(error)
                if "malformed" in text or "not a database" in text:
                    raise CorruptDatabaseError(
                        N_("The conversation database {path} is damaged ({error}). Restore a "
                           "backup or move it aside to start a new one."),
                        path=str(self.path), error=text) from error
                raise StoreError(N_("The conversation database {path} could not be used: "
                                    "{error}."), path=str(self.path), error=text) from error

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success, else rolled back."""
        with self._use(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # --- conversations -------------------------------------------------------------------------

    def create_conversation(self, title: str | None = None, *, model: str | None = None,
                            system_prompt: str | None = None,
                            settings: dict[str, Any] | None = None) -> Conversation:
        """Create an empty conversation.

        Raises:
            TypeError: ``settings`` is not JSON-serialisable.
            StoreError: the database cannot be written.
        """
        now = _now_ms()
        conversation_id = new_id()
        settings_json = dump_json(settings or {})
        with self._use(write=True) as conn:
            conn.execute(
                "INSERT INTO conversations (id, title, title_cjk, created_at, updated_at, model, "
                "system_prompt, settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, title, cjk_index_text(title), now, now, model, system_prompt,
                 settings_json),
            )
        return conversation_from_row((conversation_id, title, now, now, model, system_prompt,
                              settings_json, 0, 0, None))

    def get_conversation(self, conversation_id: str) -> Conversation:
        """The conversation with this id.

        Raises:
            NotFoundError: no conversation has this id.
        """
        with self._use() as conn:
            row = conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
        if row is None:
            raise _no_conversation(conversation_id)
        return conversation_from_row(row)

    def list_conversations(self, *, limit: int = 50, offset: int = 0,
                           include_archived: bool = False) -> list[Conversation]:
        """Conversations for the sidebar: pinned first, then most recently updated first."""
        where = "" if include_archived else "WHERE archived = 0"
        with self._use() as conn:
            rows = conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations {where} "
                "ORDER BY pinned DESC, updated_at DESC, id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [conversation_from_row(row) for row in rows]

    def count_messages(self) -> int:
        """How many messages the database holds, all conversations and branches."""
        with self._use() as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    def count_conversations(self, *, include_archived: bool = False) -> int:
        """How many conversations :meth:`list_conversations` can page through."""
        where = "" if include_archived else "WHERE archived = 0"
        with self._use() as conn:
            return int(conn.execute(f"SELECT count(*) FROM conversations {where}").fetchone()[0])

    def update_conversation(
        self, conversation_id: str, *,
        title: str | Unset | None = UNSET,
        model: str | Unset | None = UNSET,
        system_prompt: str | Unset | None = UNSET,
        settings: dict[str, Any] | Unset = UNSET,
        pinned: bool | Unset = UNSET,
        archived: bool | Unset = UNSET,
    ) -> Conversation:
        """Change the given fields (``None`` clears a text field); return the result.

        Changing the title, model, system prompt or settings moves ``updated_at``; pinning and
        archiving do not.

        Raises:
            NotFoundError: no conversation has this id.
            TypeError: ``settings`` is not JSON-serialisable.
        """
        changes: dict[str, object] = {}
        if not isinstance(title, Unset):
            changes["title"] = title
            changes["title_cjk"] = cjk_index_text(title)
        if not isinstance(model, Unset):
            changes["model"] = model
        if not isinstance(system_prompt, Unset):
            changes["system_prompt"] = system_prompt
        if not isinstance(settings, Unset):
            changes["settings"] = dump_json(settings)
        if changes:
            changes["updated_at"] = _now_ms()
        if not isinstance(pinned, Unset):
            changes["pinned"] = int(pinned)
        if not isinstance(archived, Unset):
            changes["archived"] = int(archived)
        with self._use(write=bool(changes)) as conn:
            if changes:
                assignments = ", ".join(f"{column} = ?" for column in changes)
                cursor = conn.execute(f"UPDATE conversations SET {assignments} WHERE id = ?",
                                      (*changes.values(), conversation_id))
                if cursor.rowcount == 0:
                    raise _no_conversation(conversation_id)
            return self.get_conversation(conversation_id)

    def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation with all its messages (they leave the search index too).

        Raises:
            NotFoundError: no conversation has this id.
        """
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            if cursor.rowcount == 0:
                raise _no_conversation(conversation_id)

    # --- messages ----------------------------------------------------------------------------

    def add_message(
        self, conversation_id: str, role: str, content: str, *,
        parent_id: str | ActiveLeaf | None = ACTIVE_LEAF,
        status: str = "complete",
        model: str | None = None,
        stats: dict[str, Any] | None = None,
    ) -> Message:
        """Add a message; it becomes the conversation's active leaf and touches ``updated_at``.

        ``parent_id`` defaults to the active leaf (continue the shown branch). Give the parent of
        an existing message to add a sibling: a regenerated reply (parent = the user message) or
        an edited user message (parent = the edited message's parent, ``None`` for a root).

        Raises:
            NotFoundError: the conversation or the parent message does not exist.
            ValueError: unknown role or status, or the parent is in another conversation.
            TypeError: ``stats`` is not JSON-serialisable.
        """
        message_role, message_status = _check_role(role), _check_status(status)
        now = _now_ms()
        message_id = new_id()
        stats_json = dump_json(stats)
        with self._write() as conn:
            row = conn.execute("SELECT active_leaf_id FROM conversations WHERE id = ?",
                               (conversation_id,)).fetchone()
            if row is None:
                raise _no_conversation(conversation_id)
            parent = (self._live_leaf(conn, conversation_id, row[0])
                      if isinstance(parent_id, ActiveLeaf) else parent_id)
            if parent is not None and not isinstance(parent_id, ActiveLeaf):
                owner = conn.execute("SELECT conversation_id FROM messages WHERE id = ?",
                                     (parent,)).fetchone()
                if owner is None:
                    raise _no_message(parent)
                if owner[0] != conversation_id:
                    raise ValueError(f"Message {parent} belongs to another conversation")
            conn.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}, search_cjk, writer) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (message_id, conversation_id, parent, message_role, content, message_status,
                 now, now, model, stats_json, cjk_index_text(content),
                 writer_token() if message_status == "streaming" else None),
            )
            conn.execute("UPDATE conversations SET active_leaf_id = ?, updated_at = ? "
                         "WHERE id = ?", (message_id, now, conversation_id))
        return message_from_row((message_id, conversation_id, parent, message_role, content,
                         message_status, now, now, model, stats_json))

    def update_message(self, message_id: str, *, content: str | None = None,
                       status: str | None = None, stats: dict[str, Any] | None = None) -> None:
        """Replace the given fields of a message in one ``UPDATE`` (cheap enough to stream).

        Raises:
            NotFoundError: no message has this id.
            ValueError: unknown status.
            TypeError: ``stats`` is not JSON-serialisable.
        """
        changes: dict[str, object] = {"updated_at": _now_ms()}
        if content is not None:
            changes["content"] = content
            changes["search_cjk"] = cjk_index_text(content)
        if status is not None:
            changes["status"] = _check_status(status)
            changes["writer"] = writer_token() if status == "streaming" else None
        if stats is not None:
            changes["stats"] = dump_json(stats)
        assignments = ", ".join(f"{column} = ?" for column in changes)
        with self._use(write=True) as conn:
            cursor = conn.execute(f"UPDATE messages SET {assignments} WHERE id = ?",
                                  (*changes.values(), message_id))
        if cursor.rowcount == 0:
            raise _no_message(message_id)

    def get_message(self, message_id: str) -> Message:
        """The message with this id.

        Raises:
            NotFoundError: no message has this id.
        """
        with self._use() as conn:
            row = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
        if row is None:
            raise _no_message(message_id)
        return message_from_row(row)

    def list_messages(self, conversation_id: str) -> list[Message]:
        """Every message of a conversation, all branches, in creation order.

        Raises:
            NotFoundError: no conversation has this id.
        """
        with self._use() as conn:
            self._require_conversation(conn, conversation_id)
            rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages "
                                "WHERE conversation_id = ? ORDER BY id",
                                (conversation_id,)).fetchall()
        return [message_from_row(row) for row in rows]

    def _require_conversation(self, conn: sqlite3.Connection, conversation_id: str) -> str | None:
        """The conversation's active leaf id. Raises NotFoundError if it does not exist."""
        row = conn.execute("SELECT active_leaf_id FROM conversations WHERE id = ?",
                           (conversation_id,)).fetchone()
        if row is None:
            raise _no_conversation(conversation_id)
        return cast("str | None", row[0])

    def _live_leaf(self, conn: sqlite3.Connection, conversation_id: str,
                   leaf_id: str | None) -> str | None:
        """``leaf_id`` if that message exists; else (damage) the conversation's newest message."""
        if leaf_id is None or conn.execute(
                "SELECT 1 FROM messages WHERE id = ? AND conversation_id = ?",
                (leaf_id, conversation_id)).fetchone():
            return leaf_id
        log.warning("Conversation %s points at a missing message %s; showing its newest one",
                    conversation_id, leaf_id)
        newest = conn.execute("SELECT id FROM messages WHERE conversation_id = ? "
                              "ORDER BY id DESC LIMIT 1", (conversation_id,)).fetchone()
        return None if newest is None else cast(str, newest[0])

    def _path_to(self, conn: sqlite3.Connection, leaf_id: str) -> list[Message]:
        # A scalar subquery, not a join: SQLite would build a Bloom filter over the whole
        # messages table on every recursive step (40 ms instead of 0.6 ms for 100 messages).
        # The depth limit stops a parent-pointer cycle (only an outside edit makes one): no
        # path is longer than the conversation's message count.
        rows = conn.execute(
            f"""WITH RECURSIVE chain (id, depth) AS (
                    SELECT ?, 0
                    UNION ALL
                    SELECT (SELECT parent_id FROM messages WHERE id = chain.id), chain.depth + 1
                    FROM chain WHERE chain.id IS NOT NULL AND chain.depth <= (
                        SELECT count(*) FROM messages WHERE conversation_id = (
                            SELECT conversation_id FROM messages WHERE id = ?)))
                SELECT {", ".join("m." + c.strip() for c in MESSAGE_COLUMNS.split(","))}
                FROM chain JOIN messages AS m ON m.id = chain.id ORDER BY chain.depth DESC""",
            (leaf_id, leaf_id),
        ).fetchall()
        seen: set[str] = set()
        path: list[Message] = []
        for row in reversed(rows):  # from the leaf up: cut the path where it meets itself
            if row[0] in seen:
                log.warning("The messages above %s form a loop (a damaged row); the branch is "
                            "shown up to the loop", leaf_id)
                break
            seen.add(row[0])
            path.append(message_from_row(row))
        return path[::-1]

    def active_branch(self, conversation_id: str) -> list[Message]:
        """The shown branch: messages from the root to the active leaf (empty if none yet).

        Raises:
            NotFoundError: no conversation has this id.
        """
        with self._use() as conn:
            leaf = self._live_leaf(conn, conversation_id,
                                   self._require_conversation(conn, conversation_id))
            return [] if leaf is None else self._path_to(conn, leaf)

    def siblings(self, message_id: str) -> list[Message]:
        """The message and its alternatives (same parent), in creation order — for "◀ 2/3 ▶".

        Raises:
            NotFoundError: no message has this id.
        """
        with self._use() as conn:
            message = self.get_message(message_id)
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages "
                "WHERE conversation_id = ? AND parent_id IS ? ORDER BY id",
                (message.conversation_id, message.parent_id),
            ).fetchall()
        return [message_from_row(row) for row in rows]

    def select_branch(self, message_id: str) -> list[Message]:
        """Show the branch through this message: it and, below it, always the newest child.

        Returns the new active branch (root → leaf). Does not move ``updated_at``.

        Raises:
            NotFoundError: no message has this id.
        """
        with self._write() as conn:
            row = conn.execute("SELECT conversation_id FROM messages WHERE id = ?",
                               (message_id,)).fetchone()
            if row is None:
                raise _no_message(message_id)
            leaf, seen = message_id, {message_id}
            while True:
                child = conn.execute("SELECT id FROM messages WHERE parent_id = ? "
                                     "ORDER BY id DESC LIMIT 1", (leaf,)).fetchone()
                if child is None or child[0] in seen:  # a loop only a damaged row makes
                    break
                leaf = child[0]
                seen.add(leaf)
            conn.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?",
                         (leaf, row[0]))
            return self._path_to(conn, leaf)

    def recover_interrupted(self) -> int:
        """Mark replies left 'streaming' by a writer that is gone as 'interrupted'; return how many.

        :meth:`open` calls this. A reply another running process is still streaming (the GUI
        while the CLI opens the same database, say) is left alone: each streaming reply records
        its writer process, and only a reply whose writer no longer runs was cut off.
        """
        with self._use() as conn:
            rows = conn.execute(
                "SELECT id, writer FROM messages WHERE status = 'streaming'").fetchall()
        orphans = [(message_id,) for message_id, writer in rows if not writer_is_alive(writer)]
        if orphans:
            with self._write() as conn:
                conn.executemany("UPDATE messages SET status = 'interrupted', writer = NULL "
                                 "WHERE id = ? AND status = 'streaming'", orphans)
        return len(orphans)

    # --- search ------------------------------------------------------------------------------

    def search(self, query: str, *, limit: int = 20, raw: bool = False,
               as_you_type: bool = False) -> list[SearchHit]:
        """Full-text search over message contents and conversation titles, best match first.

        By default ``query`` is plain text (see :mod:`mixtral_desk.core.store.search`): any
        input is safe, ``word*`` is a prefix, ``"a phrase"`` a phrase, ``OR`` an alternative,
        and Chinese/Japanese/Korean words are found inside longer runs. With ``raw=True`` it is
        FTS5 query syntax, for experts. ``as_you_type`` makes every plain word a prefix (a search
        box that searches while the user types).

        Hits are ranked by bm25 (a title match weighs double). A query that matches more than
        :data:`~mixtral_desk.core.store.search.SEARCH_CANDIDATES` messages ranks only the newest
        that many, so a very common word stays fast in a long history.

        Raises:
            SearchQueryError: ``raw`` is true and ``query`` is not valid FTS5 syntax.
        """
        with self._use() as conn:
            return run_search(conn, query, limit=limit, raw=raw, as_you_type=as_you_type)

    # --- export and import -------------------------------------------------------------------

    def export_conversations(self, conversation_ids: list[str] | None = None) -> dict[str, Any]:
        """A lossless, JSON-serialisable copy of these conversations (``None``: all of them).

        Every branch is included. See :mod:`mixtral_desk.core.store.export` for the format and
        :func:`~mixtral_desk.core.store.export.write_export` to save it.

        Raises:
            NotFoundError: one of ``conversation_ids`` does not exist.
        """
        with self._use() as conn:
            if conversation_ids is None:
                conversation_ids = [row[0] for row in conn.execute(
                    "SELECT id FROM conversations ORDER BY created_at, id")]
            items = [(self.get_conversation(cid), self.list_messages(cid))
                     for cid in conversation_ids]
        return export.build_export(items)

    def import_conversations(self, data: dict[str, Any]) -> list[str]:
        """Add the conversations of an export; return their ids here, in the file's order.

        A conversation keeps its ids unless its id or one of its message ids is already in this
        database (or is not an id this app makes): then it is added as a copy with fresh ids
        for the conversation and all its messages, its tree and active branch unchanged. So
        importing the same file twice gives two copies; nothing is ever overwritten or merged.
        All or nothing: on error, nothing is imported.

        Raises:
            ImportFormatError: ``data`` is not a valid Mixtral Desk export (nothing imported).
        """
        items = export.parse_export(data)
        imported: list[str] = []
        with self._write() as conn:
            for conversation, messages in items:
                imported.append(export.insert_conversation(conn, conversation, messages))
        return imported

    def export_markdown(self, conversation_id: str) -> str:
        """The conversation's active branch as a readable Markdown document.

        Raises:
            NotFoundError: no conversation has this id.
        """
        with self._use():
            return export.to_markdown(self.get_conversation(conversation_id),
                                      self.active_branch(conversation_id))
