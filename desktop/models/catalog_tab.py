"""The catalog tab: models.toml's entries with quant, size, a fit hint, and Download / Load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QPushButton, QTableWidgetItem, QVBoxLayout, QWidget

from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.units import format_bytes

from ..bridge.tasks import TaskQueue
from ..i18n import keep_translated
from ..signals import emit
from .common import buttons, table

if TYPE_CHECKING:
    from mixtral_desk.core.catalog import Catalog, CatalogEntry, FitHint

FIT_TEXT = {"fits-gpu": N_("✔ Fits the GPU"), "fits-ram": N_("✔ Runs on the CPU"),
            "tight": N_("◐ Tight"), "too-large": N_("✖ Too large")}
OFFLINE_DOWNLOAD = N_("Offline mode is on: downloading needs the network. Turn it off in "
                      "Settings to download models.")


def read_catalog(path: Path | None, models_dir: Path
                 ) -> tuple[Catalog, list[FitHint], list[bool]]:
    """The catalog, a fit hint per entry and whether each is downloaded (worker thread: reads
    files, probes the GPUs)."""
    from mixtral_desk.core.catalog import fit_hint, load_catalog
    from mixtral_desk.core.hardware import detect_hardware

    catalog = load_catalog(path)
    hardware = detect_hardware()
    return (catalog, [fit_hint(entry, hardware) for entry in catalog],
            [entry.is_downloaded(models_dir) for entry in catalog])


class CatalogTab(QWidget):
    """Lists the catalog.

    The fit hints are computed here from the catalog's figures and this machine's memory: they
    need no network. Downloading does: in Offline mode (:meth:`set_offline`) the Download buttons
    are disabled and say why.

    Keyboard: Return on a row presses its Download or Load button; the context-menu key lists it.

    Signals:
        download_requested(object): download this :class:`CatalogEntry`.
        load_requested(object): load this downloaded model file (a Path).
        catalog_shown(int): the table was filled (number of entries).
    """

    download_requested = Signal(object)
    load_requested = Signal(object)
    catalog_shown = Signal(int)

    def __init__(self, models_dir: Path, io: TaskQueue, catalog_path: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models_dir, self.io, self.catalog_path = models_dir, io, catalog_path
        self.entries: list[CatalogEntry] = []
        self.offline = False
        self._result: tuple[Catalog, list[FitHint], list[bool]] | None = None
        column = QVBoxLayout(self)
        self.note = QLabel()
        self.note.setWordWrap(True)
        column.addWidget(self.note)
        self.table = table(5)
        column.addWidget(self.table, 1)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set every text in the current language (the rows too)."""
        self.note.setText(tr("Curated GGUF builds; ★ marks a good first choice. “Fits this "
                             "machine?” compares each model's memory needs with this machine's "
                             "free RAM and GPU memory (hover for the figures)."))
        self.table.set_headers([tr("Model"), tr("Quant"), tr("Download size"),
                                tr("Fits this machine?"), ""])
        self.table.setAccessibleName(tr("Model catalog"))
        self.table.setAccessibleDescription(tr("Press Return to download or load the selected "
                                               "model, or the context-menu key for its actions."))
        self._render()

    def set_offline(self, offline: bool) -> None:
        """Disable the Download buttons (with a tooltip saying why) while Offline mode is on."""
        if offline != self.offline:
            self.offline = offline
            self._render()

    def refresh(self) -> None:
        """Read the catalog and this machine's memory again (in the background)."""
        path, models_dir = self.catalog_path, self.models_dir
        self.io.submit(lambda: read_catalog(path, models_dir), self._show)

    def _show(self, result: tuple[Catalog, list[FitHint], list[bool]]) -> None:
        self._result = result
        self.entries = list(result[0])
        self._render()
        emit(self.catalog_shown, len(self.entries))

    def _render(self) -> None:
        """Fill the table from the last catalog read (keeps the current row)."""
        if self._result is None:
            return
        _, hints, downloaded = self._result
        current = self.table.currentRow()
        self.table.setRowCount(0)
        rows = zip(self.entries, hints, downloaded, strict=True)
        for row, (entry, hint, present) in enumerate(rows):
            self.table.insertRow(row)
            name = QTableWidgetItem(entry.name + ("  ★" if entry.recommended else ""))
            name.setToolTip(tr("{repo}\n{files}\nLicence: {licence}", repo=entry.repo_id,
                               files=", ".join(entry.files), licence=entry.license))
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(entry.quant))
            size = QTableWidgetItem(format_bytes(entry.total_size))
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, 2, size)
            verdict = FIT_TEXT.get(hint.verdict)
            fit = QTableWidgetItem(tr(verdict) if verdict else hint.verdict)
            fit.setToolTip(hint.reason)
            self.table.setItem(row, 3, fit)
            if present:
                button = QPushButton(tr("Load"))
                button.setAccessibleName(tr("Load {model}", model=entry.name))
                path = entry.local_paths(self.models_dir)[0]
                button.clicked.connect(lambda _=False, p=path: emit(self.load_requested, p))
            else:
                button = QPushButton(tr("Download"))
                button.setAccessibleName(tr("Download {model}", model=entry.name))
                button.setEnabled(not self.offline)
                button.setToolTip(tr(OFFLINE_DOWNLOAD) if self.offline else hint.reason)
                button.clicked.connect(lambda _=False, e=entry: emit(self.download_requested, e))
            self.table.setCellWidget(row, 4, buttons(button))
        self.table.resizeRowsToContents()
        if 0 <= current < self.table.rowCount():
            self.table.setCurrentCell(current, 0)

    def name_of(self, catalog_id: str | None, default: str) -> str:
        """The display name of a catalog entry id."""
        return next((e.name for e in self.entries if e.id == catalog_id), default)
