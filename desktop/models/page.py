"""The Models screen: the catalog, downloads, local models and the Hub browser, as tabs."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core import network
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.session.hub_settings import (
    HubSettings,
    load_hub_settings,
    save_hub_settings,
)

from ..bridge.downloads_bridge import DownloadsBridge
from ..bridge.hub_bridge import HubBridge
from ..bridge.tasks import TaskQueue
from ..errors import ErrorSink
from ..i18n import keep_translated
from ..signals import emit
from .catalog_tab import OFFLINE_DOWNLOAD, CatalogTab
from .common import buttons
from .downloads_view import OFFLINE_RESUME, DownloadRow
from .hub_tab import HubTab
from .local_tab import LocalTab

if TYPE_CHECKING:
    from mixtral_desk.core.catalog import CatalogEntry
    from mixtral_desk.core.downloads.events import JobProgress, JobStateChanged
    from mixtral_desk.core.downloads.jobs import Job
    from mixtral_desk.core.paths import DataPaths

CATALOG_TAB, DOWNLOADS_TAB, LOCAL_TAB, HUB_TAB = range(4)


class ModelsPage(QWidget):
    """Find, download, import and delete models.

    Offline mode (:meth:`set_offline`; at first whatever :func:`network.is_offline` says) shows a
    note on the page and disables what needs the network — starting, resuming and retrying
    downloads — with a tooltip that says why; loading, importing and deleting work as always.

    Signals:
        models_changed(): the local models changed (a download finished, an import, a delete).
        load_requested(object): load this model file (a Path).
    """

    models_changed = Signal()
    load_requested = Signal(object)

    def __init__(self, paths: DataPaths, io: TaskQueue, sink: ErrorSink,
                 catalog_path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.paths, self.io, self.sink = paths, io, sink
        self.downloads = DownloadsBridge(paths, sink, self)
        self.hub = HubBridge(sink, parent=self)
        self.rows: dict[str, DownloadRow] = {}
        self.offline = network.is_offline()
        self._hub_saved = False  # the user saved Hub settings before the file was read
        self._closed = False  # shut down (a late read of the Hub settings is dropped)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        self.title = QLabel()
        layout.addWidget(self.title)
        self.offline_note = QLabel()
        self.offline_note.setWordWrap(True)
        self.offline_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.offline_note.setVisible(self.offline)
        layout.addWidget(self.offline_note)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)
        self.catalog = CatalogTab(paths.models_dir, io, catalog_path)
        self.tabs.addTab(self.catalog, "")
        self.tabs.addTab(self._build_downloads_tab(), "")
        self.local = LocalTab(paths.models_dir, io, sink)
        self.tabs.addTab(self.local, "")
        self.hub_tab = HubTab(self.hub, sink, self._build_hub_tab())
        self.tabs.addTab(self.hub_tab, "")
        self.catalog.set_offline(self.offline)
        self.hub_tab.set_offline(self.offline)
        self.hub_tab.download_requested.connect(self.download_files)

        self.catalog.download_requested.connect(self.download)
        self.catalog.load_requested.connect(self.load_requested)
        self.local.load_requested.connect(self.load_requested)
        self.local.models_changed.connect(self._local_changed)
        self.downloads.jobs_listed.connect(self._show_jobs)
        self.downloads.progress.connect(self._progress)
        self.downloads.state_changed.connect(self._state_changed)
        keep_translated(self.retranslate)
        self.catalog.refresh()
        self.local.refresh()
        self.io.submit(lambda: load_hub_settings(paths), self._hub_loaded)

    def _build_downloads_tab(self) -> QWidget:
        tab = QWidget()
        column = QVBoxLayout(tab)
        self.no_downloads = QLabel()
        self.no_downloads.setWordWrap(True)
        self.no_downloads.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(self.no_downloads)
        self.downloads_list = QScrollArea()
        self.downloads_list.setWidgetResizable(True)
        self.downloads_list.setFrameShape(QScrollArea.Shape.NoFrame)
        holder = QWidget()
        self.rows_layout = QVBoxLayout(holder)
        self.rows_layout.addStretch(1)
        self.downloads_list.setWidget(holder)
        column.addWidget(self.downloads_list, 1)
        return tab

    def _build_hub_tab(self) -> QWidget:
        """The Hub settings form (token and mirror), shown under the Hub browser."""
        tab = QWidget()
        form = QFormLayout(tab)
        form.setContentsMargins(0, 8, 0, 0)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.endpoint = QLineEdit()
        self.hub_save_button = QPushButton()
        self.hub_save_button.clicked.connect(self._save_hub_clicked)
        self.token.returnPressed.connect(self._save_hub_clicked)
        self.endpoint.returnPressed.connect(self._save_hub_clicked)
        self.hub_help = QLabel()
        self.hub_help.setWordWrap(True)
        self.token_label = QLabel()
        self.endpoint_label = QLabel()
        self.token_label.setBuddy(self.token)  # the labels name their fields
        self.endpoint_label.setBuddy(self.endpoint)
        form.addRow(self.token_label, self.token)
        form.addRow(self.endpoint_label, self.endpoint)
        form.addRow("", self.hub_help)
        form.addRow("", buttons(self.hub_save_button))
        return tab

    def retranslate(self) -> None:
        """Set every text in the current language."""
        self.title.setText("<h2>" + escape(tr("Models")) + "</h2>")
        self.offline_note.setText(tr("Offline mode is on: downloads and Hub search are off."))
        self.tabs.setTabText(CATALOG_TAB, tr("Catalog"))
        self.tabs.setTabText(DOWNLOADS_TAB, tr("Downloads"))
        self.tabs.setTabText(LOCAL_TAB, tr("On this computer"))
        self.tabs.setTabText(HUB_TAB, tr("Hugging Face Hub"))
        self.no_downloads.setText(tr("No downloads yet. Start one from the Catalog tab; a "
                                     "download can be paused and resumes where it stopped."))
        self.downloads_list.setAccessibleName(tr("Downloads"))
        self.token_label.setText(tr("Access token"))
        self.endpoint_label.setText(tr("Endpoint (mirror)"))
        self.token.setPlaceholderText(tr("hf_… (needed only for gated or private models)"))
        self.endpoint.setPlaceholderText(tr("https://huggingface.co (or a mirror, e.g. "
                                            "https://hf-mirror.com)"))
        self.hub_help.setText(tr("The token is stored in this app's config folder and sent only "
                                 "to the endpoint above. Without one, a token saved by "
                                 "<tt>hf auth login</tt> is used if present."))
        self.hub_save_button.setText(tr("Save"))
        self.hub_save_button.setAccessibleName(tr("Save the Hub settings"))

    # --- offline mode --------------------------------------------------------------------------

    def set_offline(self, offline: bool) -> None:
        """Offline mode was turned on or off: show or hide the note, disable or enable what
        needs the network (Download, Resume, Retry)."""
        self.offline = offline
        self.offline_note.setVisible(offline)
        self.catalog.set_offline(offline)
        self.hub_tab.set_offline(offline)
        for row in self.rows.values():
            row.set_offline(offline)

    def _refuse_offline(self, message: str) -> bool:
        """True, after saying ``message``, when Offline mode is on (the page's or the process')."""
        if not (self.offline or network.is_offline()):
            return False
        self.sink.inform(message, level="warning", timeout_ms=6000)
        return True

    # --- downloads -----------------------------------------------------------------------------

    def download(self, entry: CatalogEntry) -> None:
        """Start downloading a catalog entry and show the Downloads tab (unless offline)."""
        if self._refuse_offline(tr(OFFLINE_DOWNLOAD)):
            return
        self.downloads.download(entry)
        self.tabs.setCurrentIndex(DOWNLOADS_TAB)

    def download_files(self, repo_id: str, files: tuple[str, ...], revision: str | None) -> None:
        """Start downloading Hub files (an entry of the Hub tab) and show the Downloads tab
        (unless offline)."""
        if self._refuse_offline(tr(OFFLINE_DOWNLOAD)):
            return
        self.downloads.download_repo(repo_id, files, revision)
        self.tabs.setCurrentIndex(DOWNLOADS_TAB)

    def resume(self, job_id: str) -> None:
        """Resume a paused download or retry a failed one (unless offline)."""
        if self._refuse_offline(tr(OFFLINE_RESUME)):
            return
        self.downloads.resume(job_id)

    def _show_jobs(self, jobs: list[Job]) -> None:
        visible = [j for j in jobs if j.display_state != "cancelled"]
        for job_id in set(self.rows) - {j.id for j in visible}:
            self.rows.pop(job_id).deleteLater()
        for job in visible:
            row = self.rows.get(job.id)
            if row is None:
                row = DownloadRow(job, self.catalog.name_of(job.catalog_id, job.model_id))
                row.set_offline(self.offline)
                row.pause_requested.connect(self.downloads.pause)
                row.resume_requested.connect(self.resume)
                row.cancel_requested.connect(self.downloads.cancel)
                row.load_requested.connect(lambda path: emit(self.load_requested, Path(path)))
                self.rows[job.id] = row
                self.rows_layout.insertWidget(0, row)
            else:
                row.update_job(job)
        self.no_downloads.setVisible(not self.rows)

    def _progress(self, progress: JobProgress) -> None:
        row = self.rows.get(progress.job_id)
        if row is not None:
            row.update_progress(progress)

    def _state_changed(self, event: JobStateChanged) -> None:
        if event.error is not None:  # failed, or paused by itself (network gone, disk full)
            # A known error is shown as its message (translated now); anything else is a bug.
            row = self.rows.get(event.job_id)
            self.sink.report(event.error, tr("while downloading {model}",
                                             model=row.title if row else event.job_id))
        if event.state == "completed":
            self.sink.inform(tr("Download finished: {name}",
                                name=event.path.name if event.path else ""), timeout_ms=5000)
            self._local_changed()

    def _local_changed(self) -> None:
        self.local.refresh()
        self.catalog.refresh()
        emit(self.models_changed)

    # --- Hub settings --------------------------------------------------------------------------

    def _hub_loaded(self, config: HubSettings) -> None:
        if self._hub_saved or self._closed:
            return
        self.token.setText(config.token)
        self.endpoint.setText(config.endpoint)
        self.downloads.configure(config.endpoint, config.token)
        self.hub.configure(config.endpoint, config.token)

    def _save_hub_clicked(self) -> None:
        self.save_hub(HubSettings(endpoint=self.endpoint.text().strip().rstrip("/"),
                                  token=self.token.text().strip()))

    def save_hub(self, config: HubSettings) -> None:
        """Save the Hub settings and use them for new downloads."""
        self._hub_saved = True
        paths = self.paths
        self.io.submit(lambda: save_hub_settings(config, paths),
                       lambda _: self.sink.inform(tr("Hub settings saved."), timeout_ms=2500))
        self.downloads.configure(config.endpoint, config.token)
        self.hub.configure(config.endpoint, config.token)

    def shutdown(self) -> None:
        """Pause running downloads and stop the downloads thread."""
        self._closed = True
        self.hub.close()
        self.downloads.close()
