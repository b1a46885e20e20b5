"""The catalog tab: models.toml's entries with quant, size, a fit hint, and Download / Load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QPushButton, QTableWidgetItem, QVBoxLayout, QWidget

from mixtral_desk.core.units import format_bytes

from ..bridge.tasks import TaskQueue
from ..signals import emit
from .common import buttons, table

if TYPE_CHECKING:
    from mixtral_desk.core.catalog import Catalog, CatalogEntry, FitHint

FIT_TEXT = {"fits-gpu": "✔ Fits the GPU", "fits-ram": "✔ Runs on the CPU",
            "tight": "◐ Tight", "too-large": "✖ Too large"}


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
        column = QVBoxLayout(self)
        note = QLabel("Curated GGUF builds; ★ marks a good first choice. “Fits this machine?” "
                      "compares each model's memory needs with this machine's free RAM and GPU "
                      "memory (hover for the figures).")
        note.setWordWrap(True)
        column.addWidget(note)
        self.table = table(["Model", "Quant", "Download", "Fits this machine?", ""])
        column.addWidget(self.table, 1)

    def refresh(self) -> None:
        """Read the catalog and this machine's memory again (in the background)."""
        path, models_dir = self.catalog_path, self.models_dir
        self.io.submit(lambda: read_catalog(path, models_dir), self._show)

    def _show(self, result: tuple[Catalog, list[FitHint], list[bool]]) -> None:
        catalog, hints, downloaded = result
        self.entries = list(catalog)
        self.table.setRowCount(0)
        rows = zip(self.entries, hints, downloaded, strict=True)
        for row, (entry, hint, present) in enumerate(rows):
            self.table.insertRow(row)
            name = QTableWidgetItem(entry.name + ("  ★" if entry.recommended else ""))
            name.setToolTip(f"{entry.repo_id}\n{', '.join(entry.files)}\nLicence: {entry.license}")
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(entry.quant))
            size = QTableWidgetItem(format_bytes(entry.total_size))
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, 2, size)
            fit = QTableWidgetItem(FIT_TEXT.get(hint.verdict, hint.verdict))
            fit.setToolTip(hint.reason)
            self.table.setItem(row, 3, fit)
            if present:
                button = QPushButton("Load")
                path = entry.local_paths(self.models_dir)[0]
                button.clicked.connect(lambda _=False, p=path: emit(self.load_requested, p))
            else:
                button = QPushButton("Download")
                button.setToolTip(hint.reason)
                button.clicked.connect(lambda _=False, e=entry: emit(self.download_requested, e))
            self.table.setCellWidget(row, 4, buttons(button))
        self.table.resizeRowsToContents()
        emit(self.catalog_shown, len(self.entries))

    def name_of(self, catalog_id: str | None, default: str) -> str:
        """The display name of a catalog entry id."""
        return next((e.name for e in self.entries if e.id == catalog_id), default)
