"""Damaged conversation databases (real SQLite files, damaged the way disks and sync tools do):
typed errors at open, never a write before a check, salvage with the newest backup, restore."""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_desk.core.errors import CorruptDatabaseError, StoreError
from mixtral_desk.core.store import Store
from mixtral_desk.core.store import backups as store_backups
from mixtral_desk.core.store.recovery import open_or_recover, restore

PAGE = 4096
MARKER = re.compile(r"Q\d{5}Z")  # upper case: only the table's rows hold it (FTS lowercases)
DAMAGE_LOG = pytest.mark.allow_log("mixtral_desk.core.store", "")


def make_database(path: Path, conversations: int = 20, per_conversation: int = 25) -> set[str]:
    """A closed (checkpointed) database with marked messages; returns the markers."""
    markers = set()
    with Store.open(path) as store:
        number = 0
        for index in range(conversations):
            conversation = store.create_conversation(f"Conversation {index}")
            for turn in range(per_conversation):
                number += 1
                marker = f"Q{number:05d}Z"
                markers.add(marker)
                store.add_message(conversation.id, "user" if turn % 2 == 0 else "assistant",
                                  f"{marker} " + "words of a long message " * 12)
    return markers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recovered_markers(store: Store) -> set[str]:
    found = set()
    for conversation in store.list_conversations(limit=10_000, include_archived=True):
        for message in store.list_messages(conversation.id):
            found.update(MARKER.findall(message.content))
    return found


def surviving_markers(path: Path, markers: set[str]) -> set[str]:
    """The markers still whole in the damaged file: their messages are on undamaged pages."""
    data = path.read_bytes()
    return {marker for marker in markers if marker.encode() in data}


def truncate(path: Path, size: int) -> None:
    with path.open("r+b") as file:
        file.truncate(size)


def overwrite_page(path: Path, page: int, seed: int = 7) -> None:
    with path.open("r+b") as file:
        file.seek(page * PAGE)
        file.write(random.Random(seed).randbytes(PAGE))


def page_holding(path: Path, marker: str) -> int:
    return path.read_bytes().index(marker.encode()) // PAGE


def assert_works(store: Store) -> None:
    conversation = store.create_conversation("after the damage")
    store.add_message(conversation.id, "user", "still works")
    assert [m.content for m in store.active_branch(conversation.id)] == ["still works"]


@DAMAGE_LOG
@pytest.mark.parametrize("where", ["8 KB", "half", "last page"])
def test_truncated_file_is_salvaged_and_kept_aside(tmp_path: Path, where: str) -> None:
    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path)
    size = path.stat().st_size
    cut = {"8 KB": 8192, "half": size // 2 // PAGE * PAGE, "last page": size - PAGE}[where]
    truncate(path, cut)
    damaged_hash, expected = sha256(path), surviving_markers(path, markers)

    store, report = open_or_recover(path)
    with store:
        assert report is not None
        assert sha256(report.kept_at) == damaged_hash
        assert report.kept_at.name.startswith("conversations.sqlite3.damaged-")
        found = recovered_markers(store)
        assert expected <= found
        assert report.messages == len(found)
        assert str(report.kept_at) in str(report.message())
        assert_works(store)


@DAMAGE_LOG
def test_truncated_file_gives_a_typed_error_to_plain_open(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    make_database(path)
    truncate(path, 8192)
    before = sha256(path)
    with pytest.raises(CorruptDatabaseError):
        Store.open(path)
    assert sha256(path) == before


@DAMAGE_LOG
def test_a_garbage_page_is_salvaged_with_the_backup_filling_in(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path)
    store_backups.take_backup(path, budget_bytes=10**9)
    overwrite_page(path, page_holding(path, "Q00250Z"))
    expected = surviving_markers(path, markers)
    assert len(expected) < len(markers)  # the page held messages

    store, report = open_or_recover(path)
    with store:
        assert report is not None and report.backup is not None
        assert expected <= recovered_markers(store)
        assert recovered_markers(store) == markers  # the backup had the rest
        assert report.messages + report.backup_messages == len(markers)
        assert report.backup_messages == len(markers) - report.messages > 0
        assert_works(store)


@DAMAGE_LOG
def test_an_interrupted_salvage_never_leaves_an_empty_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The salvaged database is built beside the real one: killed half-way, the next open finds
    no database that looks sound and empty, and salvages the kept file again."""
    from mixtral_desk.core.store import recovery

    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path)
    overwrite_page(path, page_holding(path, "Q00250Z"))
    expected = surviving_markers(path, markers)

    def killed(_conn: sqlite3.Connection) -> None:
        raise KeyboardInterrupt  # the process stopped here

    with monkeypatch.context() as patch:
        patch.setattr(recovery, "_repair_links", killed)
        with pytest.raises(KeyboardInterrupt):
            open_or_recover(path)
    assert not path.exists()  # nothing empty in its place
    store, report = open_or_recover(path)
    with store:
        assert report is not None
        assert expected <= recovered_markers(store)
        assert_works(store)
    kept = [p for p in tmp_path.iterdir() if ".damaged-" in p.name
            and not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1  # set aside once, salvaged twice
    assert not (tmp_path / "conversations.sqlite3.salvaging").exists()


def test_a_locked_database_is_not_taken_for_damage(tmp_path: Path) -> None:
    """A check that cannot run (another process holds the lock) is a known error, never a
    finding: a sound database is not set aside and salvaged for being busy."""
    from mixtral_desk.core.store import damage

    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path, conversations=2, per_conversation=2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        checker = sqlite3.connect(path, timeout=0.1)
        try:
            with pytest.raises(StoreError, match="Cannot check the conversation database"):
                damage.quick_check(checker)
        finally:
            checker.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(p.name for p in tmp_path.glob("conversations.sqlite3*")) == [
        "conversations.sqlite3"]  # nothing set aside
    with Store.open(path) as store:
        assert recovered_markers(store) == markers


@DAMAGE_LOG
def test_damage_deep_in_the_file_is_never_written_to(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    make_database(path)
    middle = page_holding(path, "Q00250Z")
    for page in range(middle - 3, middle + 3):
        overwrite_page(path, page, seed=page)
    before = sha256(path)
    store = Store.open(path)  # the header and the schema are fine: open does not notice
    try:
        with pytest.raises(CorruptDatabaseError):
            store.create_conversation("must not land in the damaged file")
    finally:
        store.close()
    assert sha256(path) == before


@DAMAGE_LOG
def test_zeroed_header_is_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path)
    with path.open("r+b") as file:
        file.write(bytes(100))
    damaged_hash = sha256(path)

    store, report = open_or_recover(path)
    with store:
        assert report is not None and sha256(report.kept_at) == damaged_hash
        assert recovered_markers(store) == markers
        assert_works(store)


@DAMAGE_LOG
def test_zero_byte_file_with_a_backup_is_restored_from_it(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path, conversations=2, per_conversation=3)
    store_backups.take_backup(path, budget_bytes=10**9)
    truncate(path, 0)

    store, report = open_or_recover(path)
    with store:
        assert report is not None and report.kept_at.stat().st_size == 0
        assert report.backup_messages == len(markers) == report.messages + 6
        assert recovered_markers(store) == markers


@DAMAGE_LOG
def test_a_folder_in_its_place_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    with pytest.raises(StoreError):
        Store.open(path)
    store, report = open_or_recover(path)
    with store:
        assert report is not None and (report.kept_at / "keep.txt").read_text() == "mine"
        assert_works(store)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that bind (not root)")
def test_read_only_folder_is_a_known_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "conversations.sqlite3"
    make_database(path, conversations=1, per_conversation=1)
    folder.chmod(0o555)
    path.chmod(0o444)
    try:
        with pytest.raises(StoreError) as caught:
            Store.open(path)
        assert "read-only" in str(caught.value) or "readonly" in str(caught.value)
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)


@DAMAGE_LOG
def test_rows_only_outside_edits_make_are_read_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    with Store.open(path) as store:
        conversation = store.create_conversation("edited by hand")
        first = store.add_message(conversation.id, "user", "one")
        second = store.add_message(conversation.id, "assistant", "two")
        other = store.create_conversation("dangling")
        store.add_message(other.id, "user", "kept")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    conn.execute("UPDATE messages SET parent_id = ? WHERE id = ?", (second.id, first.id))
    conn.execute("UPDATE messages SET stats = '{not json', created_at = ?, role = 'robot', "
                 "status = 'exploded' WHERE id = ?", (2**62, second.id))
    conn.execute("UPDATE conversations SET settings = '[broken', active_leaf_id = 'gone' "
                 "WHERE id = ?", (other.id,))
    conn.close()

    with Store.open(path) as store:  # reading works; writing waits for a sound file
        assert sorted(m.content for m in store.active_branch(conversation.id)) == ["one", "two"]
        with pytest.raises(CorruptDatabaseError):  # quick_check sees the broken CHECKs
            store.create_conversation("not into a file that failed its check")

    store, report = open_or_recover(path)
    with store:
        assert report is not None and report.messages == 3
        branch = store.active_branch(conversation.id)  # a loop: must end
        assert sorted(m.content for m in branch) == ["one", "two"]
        reply = store.get_message(second.id)
        assert (reply.stats, reply.role, reply.status) == (None, "user", "interrupted")
        assert reply.created_at.year == 1970  # out of range: read as the epoch
        assert store.get_conversation(other.id).settings == {}
        assert [m.content for m in store.active_branch(other.id)] == ["kept"]
        store.add_message(other.id, "assistant", "answer")  # the dangling leaf is not a parent
        assert [m.content for m in store.active_branch(other.id)] == ["kept", "answer"]
        store.select_branch(first.id)
        assert store.export_conversations()["conversations"]


def test_rotation_keeps_the_promised_set() -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 6, 30, 12, tzinfo=timezone.utc)
    every_hour = [store_backups.Backup(Path(f"b{hours}"), now - timedelta(hours=hours), 10)
                  for hours in range(0, 24 * 400, 6)]
    kept = store_backups.choose_kept(every_hour, budget_bytes=10**9)
    by_path = {b.path: b for b in every_hour}
    times = sorted((by_path[p].taken_at for p in kept), reverse=True)
    assert [b.path for b in every_hour[:8]] == [p for p in (b.path for b in every_hour)
                                                if p in kept][:8]
    assert len({t.date() for t in times}) >= 7
    assert len({(t.year, t.month) for t in times}) == 6
    assert len(kept) <= 8 + 7 + 4 + 6
    assert min(times) > now - timedelta(days=190)
    small = store_backups.choose_kept(every_hour, budget_bytes=35)
    assert small == {b.path for b in every_hour[:3]}
    assert store_backups.choose_kept(every_hour, budget_bytes=1) == {every_hour[0].path}


def test_backups_are_consistent_while_writing_and_rotate(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timedelta, timezone

    path = tmp_path / "conversations.sqlite3"
    with Store.open(path) as store:
        conversation = store.create_conversation("streaming")
        reply = store.add_message(conversation.id, "assistant", "", status="streaming")
        steps = []

        def write_between_steps(remaining: int, total: int) -> None:
            steps.append(remaining)
            store.update_message(reply.id, content=f"text {len(steps)}")

        store.update_message(reply.id, content="saved before the backup")
        for index in range(400):  # enough pages for several steps
            store.add_message(conversation.id, "user", f"filler {index} " * 60)
        monkeypatch.setattr(store_backups, "STEP_PAGES", 8)
        taken = store_backups.take_backup(path, budget_bytes=10**9,
                                          progress=write_between_steps)
        assert len(steps) > 1
        copy = sqlite3.connect(taken.path)
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT content FROM messages WHERE id = ?",
                            (reply.id,)).fetchone()[0] == "saved before the backup"
        copy.close()
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for hours in range(0, 24 * 60, 12):
        store_backups.take_backup(path, budget_bytes=10**9, now=start + timedelta(hours=hours))
    kept = store_backups.list_backups(path)
    assert kept == sorted(kept, key=lambda b: b.taken_at, reverse=True)
    assert {b.path for b in kept} == store_backups.choose_kept(kept, 10**9)
    assert len(kept) < 120


@DAMAGE_LOG
def test_a_damaged_database_never_rotates_the_good_backups_out(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    make_database(path, conversations=4)
    good = store_backups.take_backup(path, budget_bytes=10**9)
    overwrite_page(path, page_holding(path, "Q00050Z"))
    with pytest.raises(CorruptDatabaseError):
        store_backups.take_backup(path, budget_bytes=1)
    assert [b.path for b in store_backups.list_backups(path)] == [good.path]


def test_restore_round_trips_and_keeps_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    markers = make_database(path, conversations=2, per_conversation=2)
    backup = store_backups.take_backup(path, budget_bytes=10**9)
    with Store.open(path) as store:
        store.create_conversation("after the backup")
    current = sha256(path)
    kept = restore(path, backup.path)
    assert kept is not None and sha256(kept) == current
    with Store.open(path) as store:
        assert recovered_markers(store) == markers
        assert store.count_conversations() == 2


FULL_DISK_CHILD = """
import resource, signal, sys
from pathlib import Path
from mixtral_desk.core.errors import StoreError
from mixtral_desk.core.store import backups

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
database = Path(sys.argv[1])
limit = database.stat().st_size // 2
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    backups.take_backup(database, budget_bytes=10**9)
except StoreError as error:
    print(error)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_during_a_backup_keeps_the_earlier_backups(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    make_database(path, conversations=10)
    earlier = store_backups.take_backup(path, budget_bytes=10**9)
    earlier_hash = sha256(earlier.path)
    child = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    assert "Traceback" not in child.stderr
    assert "Could not back up" in child.stdout and "earlier backups are kept" in child.stdout
    assert len(child.stdout.strip().splitlines()) == 1  # said once
    assert [b.path for b in store_backups.list_backups(path)] == [earlier.path]
    assert sha256(earlier.path) == earlier_hash
    assert not list(earlier.path.parent.glob("*.partial"))


WAL_CHILD = """
import os, signal, sys
from mixtral_desk.core.store import Store

store = Store.open(sys.argv[1])
conversation = store.create_conversation("checkpointed")
for number in range(20):
    store.add_message(conversation.id, "user", f"Q{number + 1:05d}Z saved")
store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
reply = store.add_message(conversation.id, "assistant", "", status="streaming")
for words in range(50):
    store.update_message(reply.id, content="streaming " * words)
print(conversation.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_the_wal_deleted_after_a_killed_writer_loses_only_the_unsaved_tail(
        tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    child = subprocess.run([sys.executable, "-c", WAL_CHILD, str(path)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    conversation_id = child.stdout.strip()
    for side in ("-wal", "-shm"):
        path.with_name(path.name + side).unlink()
    store, report = open_or_recover(path)
    with store:
        assert report is None  # the file itself is sound: the log only held the tail
        assert recovered_markers(store) == {f"Q{n:05d}Z" for n in range(1, 21)}
        assert len(store.active_branch(conversation_id)) == 20
        assert_works(store)
