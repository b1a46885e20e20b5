"""The "On this computer" tab: local models with disk usage, import, delete; the HF cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.units import format_bytes

from ..bridge.tasks import TaskQueue
from ..errors import ErrorSink
from ..signals import emit
from .common import buttons, table

if TYPE_CHECKING:
    from mixtral_desk.core.downloads.local import LocalModel

SOURCE_TEXT = {"linked": "imported (linked)", "copied": "imported (copy)",
               "download": "downloaded"}


def read_local(models_dir: Path) -> tuple[list[LocalModel], list[LocalModel]]:
    """Local models and GGUF files in the Hugging Face cache (worker thread)."""
    from mixtral_desk.core.downloads.local import list_local_models, scan_hf_cache

    return list_local_models(models_dir), scan_hf_cache()


class LocalTab(QWidget):
    """Models on this machine.

    Signals:
        models_changed(): a model was imported or deleted.
        load_requested(object): load this model file (a Path).
        local_shown(int): the table was filled (number of local models).
    """

    models_changed = Signal()
    load_requested = Signal(object)
    local_shown = Signal(int)

    def __init__(self, models_dir: Path, io: TaskQueue, sink: ErrorSink,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models_dir, self.io, self.sink = models_dir, io, sink
        self.models: list[LocalModel] = []
        column = QVBoxLayout(self)
        top = QHBoxLayout()
        self.usage = QLabel()
        self.import_button = QPushButton("Import a .gguf file…")
        self.import_button.clicked.connect(self._import_clicked)
        top.addWidget(self.usage, 1)
        top.addWidget(self.import_button)
        column.addLayout(top)
        self.table = table(["Model", "Size", "Source", ""])
        column.addWidget(self.table, 2)
        column.addWidget(QLabel("<b>Found in the Hugging Face cache</b> (downloaded by other "
                                "tools; import them to use them here)"))
        self.cache = table(["Model", "Size", ""])
        column.addWidget(self.cache, 1)

    def refresh(self) -> None:
        """List local and HF-cache models again (in the background)."""
        models_dir = self.models_dir
        self.io.submit(lambda: read_local(models_dir), self._show)

    def _show(self, result: tuple[list[LocalModel], list[LocalModel]]) -> None:
        local, cached = result
        self.models = local
        self.table.setRowCount(0)
        for row, model in enumerate(local):
            self.table.insertRow(row)
            name = QTableWidgetItem(model.name)
            name.setToolTip(str(model.path))
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(format_bytes(model.size)))
            self.table.setItem(row, 2, QTableWidgetItem(SOURCE_TEXT.get(model.source,
                                                                        model.source)))
            load = QPushButton("Load")
            load.clicked.connect(lambda _=False, p=model.path: emit(self.load_requested, p))
            delete = QPushButton("Delete")
            delete.clicked.connect(lambda _=False, m=model: self._delete_clicked(m))
            self.table.setCellWidget(row, 3, buttons(load, delete))
        total = sum(m.size for m in local)
        self.usage.setText(f"{len(local)} model{'s' if len(local) != 1 else ''} · "
                           f"{format_bytes(total)} on disk in {self.models_dir}")
        self.cache.setRowCount(0)
        for row, model in enumerate(cached):
            self.cache.insertRow(row)
            self.cache.setItem(row, 0, QTableWidgetItem(model.name))
            self.cache.setItem(row, 1, QTableWidgetItem(format_bytes(model.size)))
            button = QPushButton("Import")
            button.clicked.connect(lambda _=False, p=model.path: self.import_file(p))
            self.cache.setCellWidget(row, 2, buttons(button))
        self.table.resizeRowsToContents()
        self.cache.resizeRowsToContents()
        emit(self.local_shown, len(local))

    def _import_clicked(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", "",
                                              "GGUF models (*.gguf)")
        if name:
            self.import_file(Path(name))

    def import_file(self, path: Path) -> None:
        """Import a .gguf (linked in place, after checking it) in the background."""
        models_dir = self.models_dir

        def work() -> LocalModel:
            from mixtral_desk.core.downloads.local import import_model

            return import_model(path, models_dir)

        def done(model: LocalModel) -> None:
            self.sink.inform(f"Imported {model.name}.", timeout_ms=4000)
            self.refresh()
            emit(self.models_changed)
        self.io.submit(work, done)

    def _delete_clicked(self, model: LocalModel) -> None:
        answer = QMessageBox.question(
            self, "Delete model",
            f"Delete {model.name} ({format_bytes(model.size)})?" +
            ("\nThe original file stays where it is." if model.source == "linked" else ""))
        if answer == QMessageBox.StandardButton.Yes:
            self.delete(model)

    def delete(self, model: LocalModel) -> None:
        """Delete a local model (never a linked user's file) in the background."""
        models_dir = self.models_dir

        def work() -> object:
            from mixtral_desk.core.downloads.local import delete_local_model

            return delete_local_model(models_dir, model.name)

        def done(_: object) -> None:
            self.refresh()
            emit(self.models_changed)
        self.io.submit(work, done)
