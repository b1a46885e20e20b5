"""The CLI on a damaged conversation database: no traceback, salvage, backups by hand."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.store import Store
from mixtral_desk.core.store import backups as store_backups
from tests.core.test_cli import cli, cli_json
from tests.core.test_store_damage import make_database, overwrite_page, page_holding, truncate

pytestmark = pytest.mark.slow  # a few CLI processes each


@pytest.mark.parametrize("damage", ["truncated", "garbage page"])
def test_list_after_damage_salvages_and_says_so(data_home: DataPaths, damage: str) -> None:
    path = data_home.database
    markers = make_database(path, conversations=6, per_conversation=20)
    assert cli("conversations", "backup").returncode == 0
    if damage == "truncated":
        truncate(path, 8192)
    else:
        overwrite_page(path, page_holding(path, "Q00060Z"))
    damaged = hashlib.sha256(path.read_bytes()).hexdigest()

    # The cut-off file is seen at open by any command; damage inside the file by the quick
    # check that writing commands (and check) run first.
    command = ["list", "--limit", "100"] if damage == "truncated" else ["check"]
    result = cli("conversations", *command)
    assert result.returncode == (0 if damage == "truncated" else 1), result.stderr
    assert "Traceback" not in result.stderr
    assert "was damaged" in result.stderr and "from the backup of" in result.stderr
    listed = cli("conversations", "list", "--limit", "100")
    assert len(listed.stdout.splitlines()) == 6 + 1  # header + every conversation
    kept = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".damaged-")
            and not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and hashlib.sha256(kept[0].read_bytes()).hexdigest() == damaged
    with Store.open(path) as store:
        assert store.count_messages() == len(markers)

    checked = cli("conversations", "check")
    assert checked.returncode == 0 and "120 messages" in checked.stdout


def test_backups_backup_restore_and_check(data_home: DataPaths) -> None:
    path = data_home.database
    assert "no conversation database" in cli("conversations", "backup").stderr.lower()
    make_database(path, conversations=2, per_conversation=2)
    assert cli("conversations", "backup").returncode == 0
    listed = cli_json("conversations", "backups")
    assert len(listed) == 1 and listed[0]["size"] > 0
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM conversations")
    conn.commit()
    conn.close()
    restored = cli("conversations", "restore", listed[0]["path"].rsplit("/", 1)[-1])
    assert restored.returncode == 0, restored.stderr
    assert "kept at" in restored.stderr
    with Store.open(path) as store:
        assert store.count_conversations() == 2
    missing = cli("conversations", "restore", "nope.sqlite3")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_a_command_that_writes_backs_up_when_one_is_due(data_home: DataPaths,
                                                        tmp_path: Path) -> None:
    path = data_home.database
    make_database(path, conversations=1, per_conversation=2)
    assert cli("conversations", "list").returncode == 0  # reads only: no backup
    assert store_backups.list_backups(path) == []
    export = tmp_path / "export.json"
    assert cli("conversations", "export", "--all", "-o", export).returncode == 0
    assert cli("conversations", "import", export).returncode == 0  # writes, none yet: due
    assert len(store_backups.list_backups(path)) == 1
    assert cli("conversations", "import", export).returncode == 0  # the last is fresh
    assert len(store_backups.list_backups(path)) == 1


def test_is_due_follows_the_interval(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    path = tmp_path / "conversations.sqlite3"
    make_database(path, conversations=1, per_conversation=1)
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    assert store_backups.is_due(path, 30, now)
    store_backups.take_backup(path, budget_bytes=10**9, now=now)
    assert not store_backups.is_due(path, 30, now + timedelta(minutes=29))
    assert store_backups.is_due(path, 30, now + timedelta(minutes=30))
    assert not store_backups.is_due(path, 0, now + timedelta(days=9))


@pytest.mark.allow_log("mixtral_desk.core.store", "")
def test_a_read_that_meets_damage_salvages_and_asks_to_run_again(data_home: DataPaths) -> None:
    """A command that only reads skips the up-front check; damage it meets while reading is
    salvaged at once, and the command says to run it again (no traceback, nothing lost)."""
    path = data_home.database
    markers = make_database(path, conversations=6, per_conversation=20)
    assert cli("conversations", "backup").returncode == 0
    overwrite_page(path, page_holding(path, "Q00060Z"))
    first = cli("conversations", "search", "Q00060Z")
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "was damaged" in first.stderr
    assert first.stderr.strip().endswith("The salvaged database is in place: run the command "
                                         "again.")
    again = cli("conversations", "list", "--limit", "100")
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 6 + 1
    with Store.open(path) as store:
        assert store.count_messages() == len(markers)


def test_restore_refuses_while_the_window_holds_the_data_folder(data_home: DataPaths) -> None:
    path = data_home.database
    make_database(path, conversations=2, per_conversation=2)
    assert cli("conversations", "backup").returncode == 0
    backup = cli_json("conversations", "backups")[0]["path"]
    window = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a live process named in the lock, as Qt's QLockFile writes it
        data_home.instance_lock.write_text(f"{window.pid}\nmixtral-desk\nhost\n")
        refused = cli("conversations", "restore", backup)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert f"window (process {window.pid}) has the conversations open" in refused.stderr
        not_here = cli("conversations", "check")
        assert not_here.returncode == 1 and "checks them itself" in not_here.stderr
    finally:
        window.kill()
        window.wait()
    assert cli("conversations", "restore", backup).returncode == 0  # the holder is gone
