"""Opening databases: creation, migration from the previous schema, refusals that touch nothing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from mixtral_desk.core.errors import CorruptDatabaseError, NewerSchemaError, StoreError
from mixtral_desk.core.store import SCHEMA_VERSION, Store
from mixtral_desk.core.store.backups import list_backups
from mixtral_desk.core.store.ids import new_id
from mixtral_desk.core.store.migrations import MIGRATIONS, migrate


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p != path]


def test_new_database_gets_every_migration(tmp_path: Path) -> None:
    path = tmp_path / "new" / "conversations.sqlite3"
    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS) >= 2
        assert store.backup_path is None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [name for name, _ in MIGRATIONS]
    assert all(row[0] for row in conn.execute("SELECT applied_at FROM _migrations"))
    conn.close()
    assert not (path.parent / "backups").exists()


def test_empty_file_is_treated_as_new(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    path.touch()
    with Store.open(path) as store:
        assert store.backup_path is None
        store.create_conversation("ok")


def test_reopening_current_database_changes_nothing_and_makes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    with Store.open(path) as store:
        conversation = store.create_conversation("kept")
    with Store.open(path) as store:
        assert store.backup_path is None
        assert store.get_conversation(conversation.id).title == "kept"


def make_v1_database(path: Path) -> dict[str, str]:
    """A database at schema version 1 (only m001), with data, as the previous release left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, stop_after="m001_initial")
    ids = {"conversation": new_id(), "question": new_id(), "answer": new_id()}
    conn.execute(
        "INSERT INTO conversations (id, title, created_at, updated_at, model, system_prompt, "
        "settings, active_leaf_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (ids["conversation"], "Old chat about 周树人", 1_700_000_000_000, 1_700_000_000_500,
         "mixtral", "Be kind.", '{"temperature": 0.5}', ids["answer"]),
    )
    conn.executemany(
        "INSERT INTO messages (id, conversation_id, parent_id, role, content, status, created_at, "
        "updated_at, model, stats) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (ids["question"], ids["conversation"], None, "user", "Who was 鲁迅?", "complete",
             1_700_000_000_100, 1_700_000_000_100, None, None),
            (ids["answer"], ids["conversation"], ids["question"], "assistant",
             "A writer; the pen name of Zhou Shuren.", "streaming", 1_700_000_000_200,
             1_700_000_000_400, "mixtral", '{"completion_tokens": 9}'),
        ],
    )
    conn.close()
    return ids


def test_migrates_previous_schema_with_data_and_backs_it_up(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    ids = make_v1_database(path)

    with Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        conversation = store.get_conversation(ids["conversation"])
        assert conversation.title == "Old chat about 周树人"
        assert conversation.settings == {"temperature": 0.5}
        assert conversation.system_prompt == "Be kind." and conversation.model == "mixtral"
        assert not conversation.pinned and not conversation.archived
        branch = store.active_branch(conversation.id)
        assert [m.id for m in branch] == [ids["question"], ids["answer"]]
        assert branch[1].stats == {"completion_tokens": 9}
        assert branch[1].status == "interrupted"  # left streaming by the old version's crash
        assert store.recovered_on_open == 1
        # Old rows are in the new search index, CJK included.
        assert [hit.message_id for hit in store.search("Shuren")] == [ids["answer"]]
        assert [hit.message_id for hit in store.search("鲁迅")] == [ids["question"]]
        assert [hit.message_id for hit in store.search("周树人")] == [None]
        backup = store.backup_path

    assert backup is not None and backup.parent == path.parent / "backups"
    assert backup.name.startswith("conversations-") and backup.name.endswith("-before-v1.sqlite3")
    assert [b.path for b in list_backups(path)] == [backup]
    assert list_backups(path)[0].before_version == 1
    old = sqlite3.connect(backup)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT count(*) FROM messages").fetchone()[0] == 2
    assert old.execute("SELECT status FROM messages WHERE id = ?",
                       (ids["answer"],)).fetchone()[0] == "streaming"
    old.close()


def future_database(path: Path, *, bump_version: bool) -> None:
    with Store.open(path) as store:
        store.create_conversation("from the future")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', 'later')")
    if bump_version:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


@pytest.mark.parametrize("bump_version", [True, False], ids=["user_version", "migration-name"])
def test_newer_schema_is_refused_and_left_byte_identical(tmp_path: Path,
                                                         bump_version: bool) -> None:
    path = tmp_path / "db" / "conversations.sqlite3"
    path.parent.mkdir()
    future_database(path, bump_version=bump_version)
    assert not side_files(path)
    before = sha256(path)

    with pytest.raises(NewerSchemaError) as caught:
        Store.open(path)

    message = str(caught.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"knows up to {SCHEMA_VERSION}" in message
    assert sha256(path) == before
    assert not (path.parent / "backups").exists()
    if bump_version:  # decided from the header alone: not even a -shm file appears
        assert not side_files(path)


def test_newer_schema_with_a_live_wal_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    future_database(path, bump_version=True)
    holder = sqlite3.connect(path)  # another process has it open: a -wal file exists
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m998', 'later')")
    holder.commit()
    before = sha256(path)
    with pytest.raises(NewerSchemaError):
        Store.open(path)
    assert sha256(path) == before
    holder.close()


@pytest.mark.parametrize("content", [
    b"this is a text file, not a database\n" * 50,
    b"SQLite format 3\x00" + bytes(range(256)) * 20,
    b"short",
], ids=["text", "bad-header", "short"])
def test_corrupt_file_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "conversations.sqlite3"
    path.write_bytes(content)
    with pytest.raises(CorruptDatabaseError, match="left untouched") as caught:
        Store.open(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert isinstance(caught.value, StoreError)


def test_database_of_another_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = sha256(path)
    with pytest.raises(StoreError, match="another program"):
        Store.open(path)
    assert sha256(path) == before


def test_folder_in_the_way_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="folder"):
        Store.open(tmp_path)
