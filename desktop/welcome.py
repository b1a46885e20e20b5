"""The first-run screen: what the app does and the one step to take (get a model)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class Welcome(QWidget):
    """Shown while there is no model and no conversation.

    Signals:
        browse_requested(): go to the Models page.
        open_requested(): open a .gguf file already on disk.
    """

    browse_requested = Signal()
    open_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.addStretch(2)
        box = QWidget()
        box.setFixedWidth(600)
        column = QVBoxLayout(box)
        title = QLabel("<h1>Welcome to Mixtral Desk</h1>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text = QLabel(
            "Chat with Mixtral and other open models that run entirely on this computer — "
            "private, and offline once a model is here.<br><br>"
            "<b>First, get a model.</b> Pick one that fits this machine from the catalog "
            "(the download can be paused and resumed), or open a <tt>.gguf</tt> file you "
            "already have.")
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        column.addWidget(title)
        column.addWidget(text)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.browse_button = QPushButton("Browse models")
        self.browse_button.setDefault(True)
        self.browse_button.setMinimumHeight(34)
        self.browse_button.clicked.connect(self.browse_requested)
        self.open_button = QPushButton("Open a .gguf file…")
        self.open_button.setMinimumHeight(34)
        self.open_button.clicked.connect(self.open_requested)
        buttons.addWidget(self.browse_button)
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        column.addSpacing(12)
        column.addLayout(buttons)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(box)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(3)
