"""The Models page without a mouse, in Offline mode and in another language: Return, Delete and the
context menu on the tables, the downloads' buttons, and what needs the network saying it is off."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMenu, QMessageBox
from pytestqt.qtbot import QtBot

from mixtral_desk.core import network
from mixtral_desk.core.downloads.events import JobProgress
from mixtral_desk.core.downloads.jobs import Job, JobFile
from mixtral_desk.core.errors import UserText
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.desktop.bridge.tasks import TaskQueue
from mixtral_desk.desktop.errors import ErrorSink, Notice
from mixtral_desk.desktop.i18n import apply_language
from mixtral_desk.desktop.models.common import ActionTable
from mixtral_desk.desktop.models.downloads_view import DownloadRow
from mixtral_desk.desktop.models.local_tab import LocalTab
from mixtral_desk.desktop.models.page import ModelsPage
from tests.desktop.desktop_helpers import use_mini_catalog
from tests.desktop.test_models import download_button

COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: A few of the Models page's strings, enough to see a language switch re-render it.
MINI_CATALOG: dict[str | tuple[str, str], str] = {
    "Downloading": "下载中", "Paused": "已暂停", "Pause": "暂停", "Model": "模型",
    "Load": "加载", "Delete": "删除", "{minutes} min left": "还剩 {minutes} 分钟",
    "{done} of {total} ({percent} %)": "{done} / {total}（{percent}%）",
    ("{count} model · {size} on disk in {folder}", "{count} models · {size} on disk in {folder}"):
        "{count} 个模型 · 在 {folder} 中占用磁盘 {size}",
}


@pytest.fixture
def mini_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A small zh_CN catalog in place of the real one (switched to by the test); English after."""
    use_mini_catalog(tmp_path / "locale", monkeypatch, MINI_CATALOG)
    yield
    apply_language("en")


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache folder for this test."""
    from huggingface_hub.utils import _cache_manager

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    # scan_cache_dir() reads its own copy, taken when its module was first imported.
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def io() -> Iterator[TaskQueue]:
    queue = TaskQueue("test-io")
    yield queue
    queue.close()


def notices(sink: ErrorSink) -> list[Notice]:
    shown: list[Notice] = []
    sink.notice.connect(shown.append)
    return shown


@pytest.mark.allow_log("mixtral_desk.desktop", "Offline mode is on")
def test_offline_mode_turns_downloads_off_and_says_why(
        qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, hf_cache: Path, data_home: DataPaths,
        io: TaskQueue) -> None:
    monkeypatch.setattr(network, "_offline_override", True)
    sink = ErrorSink()
    page = ModelsPage(data_home, io, sink)
    qtbot.addWidget(page)
    try:
        with qtbot.waitSignal(page.catalog.catalog_shown, timeout=10_000), \
                qtbot.waitSignal(page.downloads.jobs_listed, timeout=10_000):
            page.show()
        offline_then_online(page, sink, qtbot)
    finally:
        page.shutdown()


def offline_then_online(page: ModelsPage, sink: ErrorSink, qtbot: QtBot) -> None:
    table = page.catalog.table
    assert page.offline and page.offline_note.isVisibleTo(page)
    assert page.offline_note.text() == "Offline mode is on: downloads and Hub search are off."
    button = download_button(page)
    assert not button.isEnabled() and button.toolTip().startswith("Offline mode is on")
    menu = table.row_menu(0)
    assert [(a.text(), a.isEnabled()) for a in menu.actions()] == [("Download", False)]
    menu.deleteLater()
    table.setFocus()
    table.setCurrentCell(0, 0)
    with qtbot.assertNotEmitted(page.catalog.download_requested):
        QTest.keyClick(table, Qt.Key.Key_Return)

    # Asked anyway (by code), the page says why instead of trying.
    shown = notices(sink)
    page.download(page.catalog.entries[0])
    assert page.tabs.currentIndex() == 0 and not page.rows
    assert shown and shown[-1].level == "warning" and "Offline mode is on" in shown[-1].text

    page.set_offline(False)
    assert not page.offline_note.isVisibleTo(page)
    button = download_button(page)
    assert button.isEnabled() and not button.toolTip().startswith("Offline mode")
    # Return presses the row's Download button; the process is still offline, so it is refused.
    table.setCurrentCell(0, 0)
    with qtbot.waitSignal(page.catalog.download_requested, timeout=1000) as asked:
        QTest.keyClick(table, Qt.Key.Key_Return)
    assert asked.args == [page.catalog.entries[0]]
    assert "Offline mode is on" in shown[-1].text and page.tabs.currentIndex() == 0
    page.set_offline(True)
    assert not download_button(page).isEnabled() and page.offline_note.isVisibleTo(page)


def make_job(tmp_path: Path, state: str, error: str | None = None) -> Job:
    return Job(id="job-1", model_id="tiny", repo_id="owner/tiny-GGUF", revision=None,
               requested=["tiny.gguf"], dest_dir=tmp_path, state=state,  # type: ignore[arg-type]
               error=UserText(error) if error is not None else None,
               files=[JobFile("tiny.gguf", size=4_000_000, done=1_000_000)])


def progress(**values: object) -> JobProgress:
    fields: dict[str, object] = {"job_id": "job-1", "files": (), "done": 1_000_000,
                                 "total": 4_000_000, "speed_bps": 0.0, "eta_s": None,
                                 "stalled": False, "phase": "downloading"}
    fields.update(values)
    return JobProgress(**fields)  # type: ignore[arg-type]


def test_download_rows_show_each_state_offline_and_in_chinese(
        qtbot: QtBot, tmp_path: Path, mini_chinese: None) -> None:
    row = DownloadRow(make_job(tmp_path, "paused", "the network went away"), "Tiny")
    qtbot.addWidget(row)
    assert row.state.text() == "Paused" and row.detail.text() == "Paused: the network went away"
    assert not row.resume_button.isHidden() and row.resume_button.text() == "Resume"
    assert row.resume_button.accessibleName() == "Resume downloading Tiny"
    row.set_offline(True)
    assert not row.resume_button.isEnabled()
    assert row.resume_button.toolTip().startswith("Offline mode is on")
    assert row.cancel_button.isEnabled()  # cancelling needs no network
    row.set_offline(False)
    assert row.resume_button.isEnabled() and not row.resume_button.toolTip()

    row.update_job(make_job(tmp_path, "failed", "404: no such file"))
    assert row.state.text() == "Failed" and row.resume_button.text() == "Retry"
    assert row.detail.text() == "⚠ 404: no such file"
    row.update_job(make_job(tmp_path, "queued"))
    assert row.state.text() == "Queued" and not row.pause_button.isHidden()
    row.update_job(make_job(tmp_path, "running"))
    row.update_progress(progress(phase="checking"))
    assert row.state.text() == "Verifying" and "checking the bytes" in row.detail.text()
    row.update_progress(progress(stalled=True))
    assert row.state.text() == "Stalled" and "stalled" in row.detail.text()
    row.update_progress(progress(speed_bps=2_000_000.0, eta_s=120.0))
    assert row.state.text() == "Downloading"
    assert row.detail.text() == "1.0 MB of 4.0 MB (25 %) · 2.0 MB/s · 2 min left"

    apply_language("zh_CN")  # the live progress is rendered again, numbers and units as they were
    assert row.state.text() == "下载中" and row.pause_button.text() == "暂停"
    assert row.detail.text() == "1.0 MB / 4.0 MB（25%） · 2.0 MB/s · 还剩 2 分钟"
    apply_language("en")
    assert row.state.text() == "Downloading" and row.detail.text().endswith("2 min left")

    # Its buttons are ordinary focusable buttons: Space presses the focused one.
    assert row.pause_button.focusPolicy() == Qt.FocusPolicy.StrongFocus
    with qtbot.waitSignal(row.pause_requested, timeout=1000) as paused:
        QTest.keyClick(row.pause_button, Qt.Key.Key_Space)
    assert paused.args == ["job-1"]


def keyboard_menu(table: ActionTable) -> list[str]:
    """The entries of the menu that the context-menu key opens on ``table`` (then closed)."""
    seen: list[str] = []

    def close() -> None:
        menu = QApplication.activePopupWidget()
        assert isinstance(menu, QMenu)
        seen.extend(action.text() for action in menu.actions())
        menu.close()

    QTimer.singleShot(0, close)
    event = QContextMenuEvent(QContextMenuEvent.Reason.Keyboard, QPoint(0, 0), QPoint(0, 0))
    QApplication.sendEvent(table, event)
    return seen


def put_in_hf_cache(cache: Path, model: Path) -> None:
    """``model`` as huggingface_hub stores a download: a blob, a snapshot link, a ref."""
    repo = cache / "models--owner--tiny-GGUF"
    (repo / "blobs").mkdir(parents=True)
    shutil.copyfile(model, repo / "blobs" / "0badc0de")
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "tiny-cached.gguf").symlink_to(Path("..", "..", "blobs", "0badc0de"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")


def test_local_models_from_the_keyboard(
        qtbot: QtBot, tmp_path: Path, tiny_model: Path, hf_cache: Path, io: TaskQueue,
        monkeypatch: pytest.MonkeyPatch, mini_chinese: None) -> None:
    put_in_hf_cache(hf_cache, tiny_model)
    tab = LocalTab(tmp_path / "models", io, ErrorSink())
    qtbot.addWidget(tab)
    tab.show()
    assert tab.table.accessibleName() == "Models on this computer"
    assert tab.cache.accessibleName() == "Models found in the Hugging Face cache"
    with qtbot.waitSignal(tab.local_shown, timeout=10_000) as shown:
        tab.refresh()
    assert shown.args == [0] and tab.cache.rowCount() == 1

    # Return on the cache's row imports it.
    tab.cache.setFocus()
    tab.cache.setCurrentCell(0, 0)
    with qtbot.waitSignal(tab.local_shown, timeout=10_000) as shown:
        QTest.keyClick(tab.cache, Qt.Key.Key_Return)
    assert shown.args == [1]
    assert tab.usage.text().startswith("1 model · ")

    # Return loads; the context-menu key lists Load and Delete.
    tab.table.setFocus()
    tab.table.setCurrentCell(0, 0)
    with qtbot.waitSignal(tab.load_requested, timeout=1000) as asked:
        QTest.keyClick(tab.table, Qt.Key.Key_Return)
    assert asked.args == [tab.models[0].path]
    assert keyboard_menu(tab.table) == ["Load", "Delete"]

    # A language switch re-renders the rows and the usage line.
    apply_language("zh_CN")
    assert tab.usage.text().startswith("1 个模型 · 在 ")
    header = tab.table.horizontalHeaderItem(0)
    assert header is not None and header.text() == "模型"
    assert [b.text() for b in tab.table.row_buttons(0)] == ["加载", "删除"]
    assert tab.table.currentRow() == 0
    apply_language("en")

    # Delete asks first (No is the default answer), then deletes.
    asked_about: list[str] = []

    def answer(parent: object, title: str, text: str, *args: object) -> QMessageBox.StandardButton:
        asked_about.append(text)
        return QMessageBox.StandardButton.Yes

    monkeypatch.setattr(QMessageBox, "question", answer)
    tab.table.setFocus()
    tab.table.setCurrentCell(0, 0)
    with qtbot.waitSignal(tab.local_shown, timeout=10_000) as shown:
        QTest.keyClick(tab.table, Qt.Key.Key_Delete)
    assert shown.args == [0] and asked_about[0].startswith("Delete 0badc0de (")
    assert tiny_model.exists()
