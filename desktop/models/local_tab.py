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

from mixtral_desk.core.i18n import N_, ntr, tr
from mixtral_desk.core.units import format_bytes

from ..bridge.tasks import TaskQueue
from ..errors import ErrorSink
from ..i18n import keep_translated
from ..signals import emit
from .common import buttons, table

if TYPE_CHECKING:
    from mixtral_desk.core.downloads.local import LocalModel

SOURCE_TEXT = {"linked": N_("imported (linked)"), "copied": N_("imported (copy)"),
               "download": N_("downloaded")}


def read_local(models_dir: Path) -> tuple[list[LocalModel], list[LocalModel]]:
    """Local models and GGUF files in the Hugging Face cache (worker thread)."""
    from mixtral_desk.core.downloads.local import list_local_models, scan_hf_cache

    return list_local_models(models_dir), scan_hf_cache()


class LocalTab(QWidget):
    """Models on this machine.

    Keyboard: Return on a row of either table presses its first button (Load, Import), the
    context-menu key lists the row's buttons, Delete on a local model asks to delete it.

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
        self.cached: list[LocalModel] = []
        self._shown = False
        column = QVBoxLayout(self)
        top = QHBoxLayout()
        self.usage = QLabel()
        self.import_button = QPushButton()
        self.import_button.clicked.connect(self._import_clicked)
        top.addWidget(self.usage, 1)
        top.addWidget(self.import_button)
        column.addLayout(top)
        self.table = table(4)
        self.table.delete_pressed.connect(self._delete_row)
        column.addWidget(self.table, 2)
        self.cache_title = QLabel()
        self.cache_title.setWordWrap(True)
        column.addWidget(self.cache_title)
        self.cache = table(3)
        self.cache_title.setBuddy(self.cache)
        column.addWidget(self.cache, 1)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set every text in the current language (the rows too)."""
        self.import_button.setText(tr("Import a .gguf file…"))
        self.import_button.setToolTip(tr("Link a GGUF model file on this computer into the app's "
                                         "models (the file stays where it is)."))
        self.table.set_headers([tr("Model"), tr("Size"), tr("Source"), ""])
        self.table.setAccessibleName(tr("Models on this computer"))
        self.table.setAccessibleDescription(tr("Return loads the selected model, Delete deletes "
                                               "it; the context-menu key lists its actions."))
        self.cache_title.setText(tr("<b>Found in the Hugging Face cache</b> (downloaded by other "
                                    "tools; import them to use them here)"))
        self.cache.set_headers([tr("Model"), tr("Size"), ""])
        self.cache.setAccessibleName(tr("Models found in the Hugging Face cache"))
        self.cache.setAccessibleDescription(tr("Return imports the selected model."))
        if self._shown:
            self._render()

    def refresh(self) -> None:
        """List local and HF-cache models again (in the background)."""
        models_dir = self.models_dir
        self.io.submit(lambda: read_local(models_dir), self._show)

    def _show(self, result: tuple[list[LocalModel], list[LocalModel]]) -> None:
        self.models, self.cached = result
        self._shown = True
        self._render()
        emit(self.local_shown, len(self.models))

    def _render(self) -> None:
        """Fill both tables from the last listing (keeps the current rows)."""
        local, cached = self.models, self.cached
        current = self.table.currentRow()
        self.table.setRowCount(0)
        for row, model in enumerate(local):
            self.table.insertRow(row)
            name = QTableWidgetItem(model.name)
            name.setToolTip(str(model.path))
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, QTableWidgetItem(format_bytes(model.size)))
            source = SOURCE_TEXT.get(model.source)
            self.table.setItem(row, 2, QTableWidgetItem(tr(source) if source else model.source))
            load = QPushButton(tr("Load"))
            load.setAccessibleName(tr("Load {model}", model=model.name))
            load.clicked.connect(lambda _=False, p=model.path: emit(self.load_requested, p))
            delete = QPushButton(tr("Delete"))
            delete.setAccessibleName(tr("Delete {model}", model=model.name))
            delete.clicked.connect(lambda _=False, m=model: self._delete_clicked(m))
            self.table.setCellWidget(row, 3, buttons(load, delete))
        if 0 <= current < self.table.rowCount():
            self.table.setCurrentCell(current, 0)
        total = sum(m.size for m in local)
        self.usage.setText(ntr("{count} model · {size} on disk in {folder}",
                               "{count} models · {size} on disk in {folder}", len(local),
                               size=format_bytes(total), folder=str(self.models_dir)))
        current = self.cache.currentRow()
        self.cache.setRowCount(0)
        for row, model in enumerate(cached):
            self.cache.insertRow(row)
            name = QTableWidgetItem(model.name)
            name.setToolTip(str(model.path))
            self.cache.setItem(row, 0, name)
            self.cache.setItem(row, 1, QTableWidgetItem(format_bytes(model.size)))
            button = QPushButton(tr("Import"))
            button.setAccessibleName(tr("Import {model}", model=model.name))
            button.clicked.connect(lambda _=False, p=model.path: self.import_file(p))
            self.cache.setCellWidget(row, 2, buttons(button))
        if 0 <= current < self.cache.rowCount():
            self.cache.setCurrentCell(current, 0)
        self.table.resizeRowsToContents()
        self.cache.resizeRowsToContents()

    def _import_clicked(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, tr("Import a GGUF model"), "",
                                              tr("GGUF models (*.gguf)"))
        if name:
            self.import_file(Path(name))

    def import_file(self, path: Path) -> None:
        """Import a .gguf (linked in place, after checking it) in the background."""
        models_dir = self.models_dir

        def work() -> LocalModel:
            from mixtral_desk.core.downloads.local import import_model

            return import_model(path, models_dir)

        def done(model: LocalModel) -> None:
            self.sink.inform(tr("Imported {model}.", model=model.name), timeout_ms=4000)
            self.refresh()
            emit(self.models_changed)
        self.io.submit(work, done)

    def _delete_row(self, row: int) -> None:
        if 0 <= row < len(self.models):
            self._delete_clicked(self.models[row])

    def _delete_clicked(self, model: LocalModel) -> None:
        size = format_bytes(model.size)
        if model.source == "linked":
            question = tr("Delete {model} ({size})?\nThe original file stays where it is.",
                          model=model.name, size=size)
        else:
            question = tr("Delete {model} ({size})?", model=model.name, size=size)
        no = QMessageBox.StandardButton.No
        answer = QMessageBox.question(self, tr("Delete model"), question,
                                      QMessageBox.StandardButton.Yes | no, no)
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
