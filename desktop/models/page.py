"""The Models screen: the catalog, downloads, local models and the Hub settings, as tabs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
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

from ..bridge.downloads_bridge import DownloadsBridge
from ..bridge.tasks import TaskQueue
from ..errors import ErrorSink
from ..signals import emit
from .catalog_tab import CatalogTab
from .common import buttons
from .downloads_view import DownloadRow
from .hub_config import HubConfig, load_hub_config, save_hub_config
from .local_tab import LocalTab

if TYPE_CHECKING:
    from mixtral_desk.core.catalog import CatalogEntry
    from mixtral_desk.core.downloads.events import JobProgress, JobStateChanged
    from mixtral_desk.core.downloads.jobs import Job
    from mixtral_desk.core.paths import DataPaths

DOWNLOADS_TAB = 1


class ModelsPage(QWidget):
    """Find, download, import and delete models.

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
        self.rows: dict[str, DownloadRow] = {}
        self._hub_saved = False  # the user saved Hub settings before the file was read

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.addWidget(QLabel("<h2>Models</h2>"))
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)
        self.catalog = CatalogTab(paths.models_dir, io, catalog_path)
        self.tabs.addTab(self.catalog, "Catalog")
        self.tabs.addTab(self._build_downloads_tab(), "Downloads")
        self.local = LocalTab(paths.models_dir, io, sink)
        self.tabs.addTab(self.local, "On this computer")
        self.tabs.addTab(self._build_hub_tab(), "Hugging Face Hub")

        self.catalog.download_requested.connect(self.download)
        self.catalog.load_requested.connect(self.load_requested)
        self.local.load_requested.connect(self.load_requested)
        self.local.models_changed.connect(self._local_changed)
        self.downloads.jobs_listed.connect(self._show_jobs)
        self.downloads.progress.connect(self._progress)
        self.downloads.state_changed.connect(self._state_changed)
        self.catalog.refresh()
        self.local.refresh()
        self.io.submit(lambda: load_hub_config(paths.config_dir), self._hub_loaded)

    def _build_downloads_tab(self) -> QWidget:
        tab = QWidget()
        column = QVBoxLayout(tab)
        self.no_downloads = QLabel("No downloads yet. Start one from the Catalog tab; a "
                                   "download can be paused and resumes where it stopped.")
        self.no_downloads.setWordWrap(True)
        self.no_downloads.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(self.no_downloads)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        holder = QWidget()
        self.rows_layout = QVBoxLayout(holder)
        self.rows_layout.addStretch(1)
        scroll.setWidget(holder)
        column.addWidget(scroll, 1)
        return tab

    def _build_hub_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout(tab)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("hf_… (needed only for gated or private models)")
        self.endpoint = QLineEdit()
        self.endpoint.setPlaceholderText("https://huggingface.co (or a mirror, e.g. "
                                         "https://hf-mirror.com)")
        save = QPushButton("Save")
        save.clicked.connect(self._save_hub_clicked)
        help_text = QLabel("The token is stored in this app's config folder and sent only to "
                           "the endpoint above. Without one, a token saved by "
                           "<tt>hf auth login</tt> is used if present.")
        help_text.setWordWrap(True)
        form.addRow("Access token", self.token)
        form.addRow("Endpoint (mirror)", self.endpoint)
        form.addRow("", help_text)
        form.addRow("", buttons(save))
        return tab

    # --- downloads -----------------------------------------------------------------------------

    def download(self, entry: CatalogEntry) -> None:
        """Start downloading a catalog entry and show the Downloads tab."""
        self.downloads.download(entry)
        self.tabs.setCurrentIndex(DOWNLOADS_TAB)

    def _show_jobs(self, jobs: list[Job]) -> None:
        visible = [j for j in jobs if j.display_state != "cancelled"]
        for job_id in set(self.rows) - {j.id for j in visible}:
            self.rows.pop(job_id).deleteLater()
        for job in visible:
            row = self.rows.get(job.id)
            if row is None:
                row = DownloadRow(job, self.catalog.name_of(job.catalog_id, job.model_id))
                row.pause_requested.connect(self.downloads.pause)
                row.resume_requested.connect(self.downloads.resume)
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
        if event.state == "completed":
            self.sink.inform(f"Download finished: {event.path.name if event.path else ''}",
                             timeout_ms=5000)
            self._local_changed()

    def _local_changed(self) -> None:
        self.local.refresh()
        self.catalog.refresh()
        emit(self.models_changed)

    # --- Hub settings --------------------------------------------------------------------------

    def _hub_loaded(self, config: HubConfig) -> None:
        if self._hub_saved:
            return
        self.token.setText(config.token)
        self.endpoint.setText(config.endpoint)
        self.downloads.configure(config.endpoint, config.token)

    def _save_hub_clicked(self) -> None:
        self.save_hub(HubConfig(endpoint=self.endpoint.text().strip().rstrip("/"),
                                token=self.token.text().strip()))

    def save_hub(self, config: HubConfig) -> None:
        """Save the Hub settings and use them for new downloads."""
        self._hub_saved = True
        config_dir = self.paths.config_dir
        self.io.submit(lambda: save_hub_config(config_dir, config),
                       lambda _: self.sink.inform("Hub settings saved.", timeout_ms=2500))
        self.downloads.configure(config.endpoint, config.token)

    def shutdown(self) -> None:
        """Pause running downloads and stop the downloads thread."""
        self.downloads.close()
