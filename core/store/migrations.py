"""The schema, as an ordered list of named migrations.

Each migration is a function that takes the connection and changes the schema. They run in list
order, each in its own transaction that also records it in ``_migrations`` (name, applied_at)
and sets ``PRAGMA user_version`` to the number of migrations applied, which is the schema
version. Never edit or reorder a shipped migration: add a new one at the end.

Schema notes: every table has an ``INTEGER PRIMARY KEY`` (``seq``) besides its public text id,
because the FTS5 indexes use external content keyed by rowid and an implicit rowid may change on
VACUUM. Times are integer milliseconds since the Unix epoch (UTC). JSON is stored as text.
"""

from __future__ import annotations

import glob
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from .search import cjk_index_text

Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[tuple[str, Migration]] = []


def migration(function: Migration) -> Migration:
    """Register ``function`` as the next migration, under its own name."""
    MIGRATIONS.append((function.__name__, function))
    return function


def _run(conn: sqlite3.Connection, statements: str) -> None:
    # executescript() would COMMIT the migration's transaction; run statement by statement.
    buffer = ""
    for line in statements.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            conn.execute(buffer)
            buffer = ""
    if buffer.strip():
        conn.execute(buffer)


@migration
def m001_initial(conn: sqlite3.Connection) -> None:
    """Conversations and their message trees."""
    _run(conn, """
        CREATE TABLE conversations (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            title TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            model TEXT,
            system_prompt TEXT,
            settings TEXT NOT NULL DEFAULT '{}',
            active_leaf_id TEXT
        );
        CREATE INDEX conversations_by_update ON conversations (updated_at, id);
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            parent_id TEXT REFERENCES messages (id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'streaming', 'interrupted', 'error')),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            model TEXT,
            stats TEXT
        );
        CREATE INDEX messages_by_conversation ON messages (conversation_id, parent_id, id);
        CREATE INDEX messages_by_parent ON messages (parent_id, id);
    """)


@migration
def m002_pins_archive_fts(conn: sqlite3.Connection) -> None:
    """Pinned/archived conversations, a quick 'still streaming' index, full-text search."""
    _run(conn, """
        ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE conversations ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE conversations ADD COLUMN title_cjk TEXT;
        ALTER TABLE messages ADD COLUMN search_cjk TEXT;
        DROP INDEX conversations_by_update;
        CREATE INDEX conversations_listing ON conversations (archived, pinned, updated_at, id);
        CREATE INDEX conversations_listing_all ON conversations (pinned, updated_at, id);
        CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
    """)
    # Fill the derived CJK columns before the FTS triggers exist (an update trigger would try
    # to remove never-indexed rows from the index); 'rebuild' below indexes every row once.
    conn.create_function("mixtral_desk_cjk", 1, cjk_index_text, deterministic=True)
    conn.execute("UPDATE messages SET search_cjk = mixtral_desk_cjk(content)")
    conn.execute("UPDATE conversations SET title_cjk = mixtral_desk_cjk(title)")
    _run(conn, """

        CREATE VIRTUAL TABLE messages_fts USING fts5 (
            content, search_cjk,
            content = 'messages', content_rowid = 'seq',
            tokenize = 'unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content, search_cjk)
            VALUES (new.seq, new.content, new.search_cjk);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content, search_cjk)
            VALUES ('delete', old.seq, old.content, old.search_cjk);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, search_cjk ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content, search_cjk)
            VALUES ('delete', old.seq, old.content, old.search_cjk);
            INSERT INTO messages_fts (rowid, content, search_cjk)
            VALUES (new.seq, new.content, new.search_cjk);
        END;

        CREATE VIRTUAL TABLE conversations_fts USING fts5 (
            title, title_cjk,
            content = 'conversations', content_rowid = 'seq',
            tokenize = 'unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
            INSERT INTO conversations_fts (rowid, title, title_cjk)
            VALUES (new.seq, new.title, new.title_cjk);
        END;
        CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
            INSERT INTO conversations_fts (conversations_fts, rowid, title, title_cjk)
            VALUES ('delete', old.seq, old.title, old.title_cjk);
        END;
        CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title, title_cjk ON conversations
        BEGIN
            INSERT INTO conversations_fts (conversations_fts, rowid, title, title_cjk)
            VALUES ('delete', old.seq, old.title, old.title_cjk);
            INSERT INTO conversations_fts (rowid, title, title_cjk)
            VALUES (new.seq, new.title, new.title_cjk);
        END;
    """)
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    conn.execute("INSERT INTO conversations_fts (conversations_fts) VALUES ('rebuild')")


@migration
def m003_stream_writer(conn: sqlite3.Connection) -> None:
    """Remember which process writes a streaming reply, so that only a dead writer's reply is
    marked interrupted when another process opens the database."""
    conn.execute("ALTER TABLE messages ADD COLUMN writer TEXT")


SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this code writes: the number of migrations it knows."""

KNOWN_NAMES: Final = frozenset(name for name, _ in MIGRATIONS)


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names recorded in ``_migrations``, oldest first (empty if the table does not exist).

    Raises:
        sqlite3.DatabaseError: the file is not a readable database.
    """
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def pending_migrations(conn: sqlite3.Connection) -> list[tuple[str, Migration]]:
    """The known migrations that ``conn``'s database has not had yet, in order.

    Raises:
        sqlite3.DatabaseError: the file is not a readable database.
    """
    done = set(applied_migrations(conn))
    return [(name, function) for name, function in MIGRATIONS if name not in done]


def migrate(conn: sqlite3.Connection, *, stop_after: str | None = None) -> list[str]:
    """Apply the pending migrations (up to and including ``stop_after``); return their names.

    Each runs in its own ``BEGIN IMMEDIATE`` transaction: a failure rolls back that migration
    only and leaves the database at the previous version. Tests use ``stop_after`` to build an
    old-schema database.

    Raises:
        sqlite3.Error: a migration failed (the caller words it).
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    applied: list[str] = []
    for name, function in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")  # already there (maybe another process just did it)
            else:
                function(conn)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (name, datetime.now(timezone.utc).isoformat(timespec="milliseconds")),
                )
                version = conn.execute("SELECT count(*) FROM _migrations").fetchone()[0]
                conn.execute(f"PRAGMA user_version = {int(version)}")
                conn.execute("COMMIT")
                applied.append(name)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if name == stop_after:
            break
    return applied


# --- backups: one per schema version ------------------------------------------------------------

def drop_superseded_backups(path: Path, version: int, kept: Path) -> list[Path]:
    """Delete the other copies of the database at ``path`` made before migrating from schema
    ``version`` (``NAME.bak-vN-STAMP``, see :func:`~mixtral_desk.core.store.database.backup_path`)
    than ``kept``; return them.

    A migration that fails leaves the database as it was, so each attempt made another copy of
    the same thing: one per version is enough, the newest. Copies of other versions stay; a copy
    that cannot be deleted is left (and not returned).
    """
    prefix = f"{path.name}.bak-v{version}-"
    dropped: list[Path] = []
    for other in path.parent.glob(glob.escape(prefix) + "*"):
        if other == kept or other.name.endswith(("-wal", "-shm", "-journal")):
            continue
        try:
            other.unlink()
        except OSError:
            continue
        dropped.append(other)
    return dropped
