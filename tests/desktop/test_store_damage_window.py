"""The window on a damaged conversation database: a notice with its actions, a working app,
restore from a backup, and a backup taken on close."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from mixtral_desk.core.paths import DataPaths
from mixtral_desk.core.store import Store
from mixtral_desk.core.store import backups as store_backups
from tests.core.test_store_damage import make_database, overwrite_page, page_holding, truncate
from tests.desktop.conftest import WindowFactory


@pytest.mark.allow_log("mixtral_desk", "damaged")
@pytest.mark.parametrize("damage", ["truncated", "garbage page"])
def test_damaged_database_gives_a_notice_and_a_working_app(
        make_window: WindowFactory, qtbot: QtBot, data_home: DataPaths, damage: str) -> None:
    path = data_home.database
    make_database(path, conversations=5, per_conversation=10)
    backup = store_backups.take_backup(path, budget_bytes=10**9)
    if damage == "truncated":
        truncate(path, 8192)
    else:
        overwrite_page(path, page_holding(path, "Q00025Z"))

    window = make_window()
    bar = window.notifications
    qtbot.waitUntil(lambda: bar.current is not None and "was damaged" in bar.current.text)
    assert bar.current is not None and bar.current.level == "warning"
    assert "Something went wrong" not in bar.current.text
    assert [a.label for a in bar.current.actions] == ["Restore from a backup…", "Show the files"]
    assert str(path.parent) in bar.current.text
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 5)

    done: list[object] = []
    window.store.call(lambda s: s.create_conversation("made after the salvage"), done.append,
                      changes=True)
    qtbot.waitUntil(lambda: bool(done))
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 6)

    with qtbot.waitSignal(window.store.opened, timeout=10_000):
        window.store_recovery.restore(backup.path)
    qtbot.waitUntil(lambda: bar.current is not None and "Restored" in bar.current.text)
    assert bar.current is not None and "kept at" in bar.current.text
    qtbot.waitUntil(lambda: len(window.chat_page.sidebar.conversations) == 5)


def test_closing_the_window_backs_up_what_changed(make_window: WindowFactory, qtbot: QtBot,
                                                  data_home: DataPaths) -> None:
    window = make_window()
    qtbot.waitUntil(lambda: window.store.is_open)
    done: list[object] = []
    window.store.call(lambda s: s.create_conversation("to back up"), done.append, changes=True)
    qtbot.waitUntil(lambda: bool(done))
    assert store_backups.list_backups(data_home.database) == []
    window.close()
    window.shutdown()
    kept = store_backups.list_backups(data_home.database)
    assert len(kept) == 1
    with Store.open(kept[0].path) as copy:
        assert [c.title for c in copy.list_conversations()] == ["to back up"]


def test_the_timer_backs_up_only_when_something_changed(make_window: WindowFactory,
                                                        qtbot: QtBot,
                                                        data_home: DataPaths) -> None:
    window = make_window()
    qtbot.waitUntil(lambda: window.store.is_open)
    window.store_recovery.backups.back_up_if_changed()  # nothing written yet: no backup
    done: list[object] = []
    window.store.call(lambda s: s.create_conversation("timed"), done.append, changes=True)
    qtbot.waitUntil(lambda: bool(done))
    with qtbot.waitSignal(window.store_recovery.backups.backed_up, timeout=10_000):
        window.store_recovery.backups.back_up_if_changed()
    assert len(store_backups.list_backups(data_home.database)) == 1
    window.store_recovery.backups.back_up_if_changed()  # nothing new since
    window.store_recovery.backups.tasks.close()
    assert len(store_backups.list_backups(data_home.database)) == 1


@pytest.mark.allow_log("mixtral_desk.desktop", "Could not back up")
def test_a_failing_backup_is_said_once(make_window: WindowFactory, qtbot: QtBot,
                                       data_home: DataPaths) -> None:
    window = make_window()
    qtbot.waitUntil(lambda: window.store.is_open)
    (data_home.database.parent / "backups").write_text("a file where the folder goes")
    backups = window.store_recovery.backups
    for _ in range(3):
        backups.back_up_now()
    qtbot.waitUntil(lambda: not backups.tasks.busy)
    qtbot.wait(50)  # the failures' reports arrive on the GUI thread
    said = [n for n in window.notifications.history if "Could not back up" in n.text]
    assert len(said) == 1 and "earlier backups are kept" in said[0].text
