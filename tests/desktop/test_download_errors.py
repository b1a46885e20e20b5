"""Download errors reach the window as typed exceptions: a row translates its job's error when it
is shown, the Models page reports errors through the sink (known problems kindly, bugs as bugs),
and the network indicator tells an unreachable Hub by the error's type."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from mixtral_desk.core import i18n
from mixtral_desk.core.downloads.errors import HubUnreachableError, RemoteFileNotFoundError
from mixtral_desk.core.downloads.events import JobStateChanged
from mixtral_desk.core.downloads.jobs import Job, JobFile
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.paths import DataPaths
from mixtral_desk.desktop.bridge.tasks import TaskQueue
from mixtral_desk.desktop.errors import ErrorSink, Notice
from mixtral_desk.desktop.i18n import apply_language
from mixtral_desk.desktop.main_window import MainWindow
from mixtral_desk.desktop.models.downloads_view import DownloadRow
from mixtral_desk.desktop.models.page import ModelsPage

MISSING = N_("File {file!r} is not in {repo} at that revision. It holds no GGUF file.")


@pytest.fixture
def chinese_after() -> Iterator[None]:
    """The real compiled zh_CN catalog must be there; English again after the test."""
    assert i18n.catalog_path("zh_CN").is_file(), "no compiled zh_CN catalog (build the package)"
    yield
    apply_language("en")


def missing_file() -> RemoteFileNotFoundError:
    return RemoteFileNotFoundError(MISSING, file="x.gguf", repo="owner/x")


def test_a_failed_row_shows_its_error_in_the_language_of_the_moment(
        qtbot: QtBot, tmp_path: Path, chinese_after: None) -> None:
    error = missing_file()
    job = Job(id="job-1", model_id="x", repo_id="owner/x", revision=None, requested=["x.gguf"],
              dest_dir=tmp_path, state="failed", error=error.user_message,
              files=[JobFile("x.gguf", size=1000)])
    row = DownloadRow(job, "X")
    qtbot.addWidget(row)
    assert row.detail.text() == "⚠ " + error.english
    apply_language("zh_CN")  # no new job: the row translates the same error again
    assert row.detail.text() == "⚠ " + str(error) and str(error) != error.english
    apply_language("en")
    assert row.detail.text() == "⚠ " + error.english


@pytest.fixture
def page(qtbot: QtBot, data_home: DataPaths) -> Iterator[tuple[ModelsPage, list[Notice]]]:
    io = TaskQueue("test-io")
    sink = ErrorSink()
    shown: list[Notice] = []
    sink.notice.connect(shown.append)
    models = ModelsPage(data_home, io, sink)
    qtbot.addWidget(models)
    try:
        with qtbot.waitSignal(models.downloads.jobs_listed, timeout=10_000):
            models.show()  # the download manager is ready: a state change lists the jobs
        yield models, shown
    finally:
        models.shutdown()
        io.close()


@pytest.mark.allow_log("mixtral_desk.desktop", "x.gguf")
@pytest.mark.allow_log("mixtral_desk.desktop", "Unexpected error")
def test_the_models_page_reports_known_errors_kindly_and_bugs_as_bugs(
        page: tuple[ModelsPage, list[Notice]], chinese_after: None) -> None:
    models, shown = page
    error = missing_file()
    apply_language("zh_CN")
    models.downloads.state_changed.emit(JobStateChanged("job-1", "failed", error))
    assert shown[-1].level == "error" and shown[-1].details is None
    assert shown[-1].text == str(error) != error.english  # translated when it is shown
    apply_language("en")

    models.downloads.state_changed.emit(JobStateChanged("job-2", "failed",
                                                        RuntimeError("index out of range")))
    assert shown[-1].level == "error" and "This is a bug" in shown[-1].text
    assert "while downloading job-2" in shown[-1].text and shown[-1].details
    count = len(shown)
    models.downloads.state_changed.emit(JobStateChanged("job-3", "paused"))  # no error: nothing
    assert len(shown) == count


def test_an_unreachable_hub_shows_in_the_status_bar(online: None, window: MainWindow) -> None:
    unreachable = HubUnreachableError(N_("Cannot reach {endpoint}: {reason}"),
                                      endpoint="http://127.0.0.1:9", reason="refused")
    window.network.download_state_changed(JobStateChanged("job-1", "failed", unreachable))
    assert window.status.network == "unreachable"
    window.network.download_state_changed(JobStateChanged("job-2", "failed", missing_file()))
    assert window.status.network == "unreachable"  # another error says nothing of the network
    window.network.download_state_changed(JobStateChanged("job-1", "running"))
    assert window.status.network == "online"
