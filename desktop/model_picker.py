"""The toolbar's model picker: local models, Load/Unload, and load progress."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.units import format_bytes

from .i18n import keep_translated
from .signals import emit

if TYPE_CHECKING:
    from mixtral_desk.core.downloads.local import LocalModel


class ModelPicker(QWidget):
    """A combo box of models and a Load / Unload button; shows progress while loading.

    Signals:
        load_requested(object): load this model file (a Path).
        unload_requested(): unload the model.
        stop_load_requested(): cancel the load in progress.
    """

    load_requested = Signal(object)
    unload_requested = Signal()
    stop_load_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(28)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.open_button = QPushButton()
        self.open_button.clicked.connect(self.browse)
        self.load_button = QPushButton()
        self.load_button.clicked.connect(self._load_clicked)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setFixedWidth(120)
        self.progress.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.progress.hide()
        layout.addWidget(self.combo)
        layout.addWidget(self.open_button)
        layout.addWidget(self.load_button)
        layout.addWidget(self.progress)
        self.state = "empty"  # empty | loading | loaded
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the texts in the current language (the Load button's from the state)."""
        self.combo.setPlaceholderText(tr("No model yet"))
        self.combo.setToolTip(tr("Models on this computer"))
        self.combo.setAccessibleName(tr("Model"))
        self.open_button.setText(tr("Open…"))
        self.open_button.setToolTip(tr("Open a .gguf file from anywhere on this computer"))
        self.progress.setAccessibleName(tr("Loading progress"))
        self.progress.setToolTip(tr("Loading the model"))
        self._update()

    def set_models(self, models: list[LocalModel], current: Path | None) -> None:
        """Fill the list; select ``current`` (the loaded or last used model) when present."""
        previous = self.combo.currentData()
        self.combo.blockSignals(True)
        self.combo.clear()
        for model in models:
            path = model.path
            self.combo.addItem(f"{model.name}  ({format_bytes(model.size)})", str(path))
            self.combo.setItemData(self.combo.count() - 1, str(path),
                                   Qt.ItemDataRole.ToolTipRole)
        index = self.combo.findData(str(current)) if current is not None else -1
        if index < 0 and previous is not None:
            index = self.combo.findData(previous)
        self.combo.setCurrentIndex(max(index, 0) if self.combo.count() else -1)
        self.combo.blockSignals(False)
        self._update()

    def selected(self) -> Path | None:
        """The model chosen in the list."""
        data = self.combo.currentData()
        return Path(data) if data else None

    def add_and_select(self, path: Path) -> None:
        """Add a file (from Open…) and select it."""
        index = self.combo.findData(str(path))
        if index < 0:
            self.combo.addItem(path.stem, str(path))
            index = self.combo.count() - 1
            self.combo.setItemData(index, str(path), Qt.ItemDataRole.ToolTipRole)
        self.combo.setCurrentIndex(index)
        self._update()

    def set_state(self, state: str) -> None:
        """``empty`` (nothing loaded), ``loading`` or ``loaded``."""
        self.state = state
        if state == "loading":
            self.progress.setValue(0)
        self.progress.setVisible(state == "loading")
        self._update()

    def set_progress(self, fraction: float) -> None:
        """Loading progress, 0.0 to 1.0."""
        self.progress.setValue(int(fraction * 100))

    def _update(self) -> None:
        if self.state == "loading":
            self.load_button.setText(tr("Cancel"))
            self.load_button.setToolTip(tr("Stop loading the model"))
        elif self.state == "loaded":
            self.load_button.setText(tr("Unload"))
            self.load_button.setToolTip(tr("Unload the model and free its memory"))
        else:
            self.load_button.setText(tr("Load"))
            self.load_button.setToolTip(tr("Load the selected model"))
        self.load_button.setEnabled(self.state != "empty" or self.combo.count() > 0)
        self.combo.setEnabled(self.state != "loading")

    def _load_clicked(self) -> None:
        if self.state == "loading":
            emit(self.stop_load_requested)
        elif self.state == "loaded":
            emit(self.unload_requested)
        elif self.selected() is not None:
            emit(self.load_requested, self.selected())

    def browse(self) -> None:
        """Ask for a .gguf file anywhere on this computer, add it and ask to load it."""
        # The patterns stay outside the translation: only the descriptions are text.
        gguf, every = tr("GGUF models"), tr("All files")
        filters = f"{gguf} (*.gguf);;{every} (*)"
        name, _ = QFileDialog.getOpenFileName(self, tr("Open a GGUF model"), "", filters)
        if name:
            path = Path(name)
            self.add_and_select(path)
            emit(self.load_requested, path)
