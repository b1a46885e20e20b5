"""The strip above the pages where every notice appears: text, action buttons, Details…, close."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QToolButton,
    QWidget,
)

from .errors import Notice

COLORS = {
    "info": ("#e8f1fb", "#1f5fa8"),
    "warning": ("#fff4dc", "#8a5a00"),
    "error": ("#fdecea", "#a4262c"),
}


class NotificationBar(QFrame):
    """Shows the newest :class:`Notice`; errors stay until closed, others time out.

    Signals: none (buttons call the notice's actions directly).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current: Notice | None = None
        self.history: list[Notice] = []
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        self.icon = QLabel()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.icon)
        layout.addWidget(self.label, 1)
        self._buttons: list[QPushButton] = []
        self._button_row = QHBoxLayout()
        layout.addLayout(self._button_row)
        self.details_button = QPushButton("Details…")
        self.details_button.clicked.connect(self._show_details)
        layout.addWidget(self.details_button)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Close")
        close.clicked.connect(self.dismiss)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self.hide()

    def show_notice(self, notice: Notice) -> None:
        """Show ``notice`` (replacing the one shown)."""
        self.current = notice
        self.history.append(notice)
        background, foreground = COLORS[notice.level]
        self.setStyleSheet(f"NotificationBar {{ background: {background}; "
                           f"border-bottom: 1px solid {foreground}; }} "
                           f"NotificationBar QLabel {{ color: {foreground}; }}")
        self.icon.setText({"info": "ℹ", "warning": "⚠", "error": "✖"}[notice.level])
        self.label.setText(notice.text)
        for button in self._buttons:
            button.deleteLater()
        self._buttons = []
        for action in notice.actions:
            button = QPushButton(action.label)
            button.clicked.connect(lambda _=False, run=action.run: self._act(run))
            self._button_row.addWidget(button)
            self._buttons.append(button)
        self.details_button.setVisible(bool(notice.details))
        self._timer.stop()
        if notice.timeout_ms is not None and notice.level != "error":
            self._timer.start(notice.timeout_ms)
        self.show()

    def _act(self, run: Callable[[], None]) -> None:
        self.dismiss()
        run()

    def dismiss(self) -> None:
        """Hide the bar."""
        self._timer.stop()
        self.current = None
        self.hide()

    def _show_details(self) -> None:
        notice = self.current
        if notice is None:
            return
        box = QMessageBox(QMessageBox.Icon.Critical, "Mixtral Desk", notice.text,
                          QMessageBox.StandardButton.Close, self)
        box.setDetailedText(notice.details or "")
        box.exec()
