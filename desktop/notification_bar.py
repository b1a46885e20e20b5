"""The strip above the pages where every notice appears: text, action buttons, Details…, close."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPainter, QPaintEvent, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QToolButton,
    QWidget,
)

from mixtral_desk.core.i18n import N_, tr

from .errors import Level, Notice
from .i18n import keep_translated

#: Each level's accent: (on a light window, on a dark window). The bar's background is the
#: window colour tinted with the accent; its text is the accent (readable on both).
ACCENTS: dict[Level, tuple[str, str]] = {
    "info": ("#1f5fa8", "#8ab4f8"),
    "warning": ("#8a5a00", "#f2c061"),
    "error": ("#a4262c", "#f28b82"),
}
TINT = 0.14  # how much of the accent goes into the background
ICONS: dict[Level, str] = {"info": "ℹ", "warning": "⚠", "error": "✖"}
LEVEL_NAMES: dict[Level, str] = {"info": N_("Information"), "warning": N_("Warning"),
                                 "error": N_("Error")}


def mix(base: QColor, accent: QColor, amount: float) -> QColor:
    """``base`` with ``amount`` (0–1) of ``accent`` blended in."""
    return QColor.fromRgbF(*(b + (a - b) * amount for b, a in (
        (base.redF(), accent.redF()), (base.greenF(), accent.greenF()),
        (base.blueF(), accent.blueF()))))


def level_colors(level: Level, palette: QPalette) -> tuple[QColor, QColor]:
    """(background, foreground) of a notice of ``level`` over a window of this ``palette``."""
    window = palette.color(QPalette.ColorRole.Window)
    light, dark = ACCENTS[level]
    accent = QColor(dark if window.lightness() < 128 else light)
    return mix(window, accent, TINT), accent


class NotificationBar(QFrame):
    """Shows the newest :class:`Notice`; errors stay until closed, others time out.

    Its colours follow the application's palette (light or dark), also when it changes while
    the app runs. Keyboard: its buttons are in the Tab order.

    Signals: none (buttons call the notice's actions directly).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current: Notice | None = None
        self.history: list[Notice] = []
        self._accent = QColor()
        self.setAutoFillBackground(True)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 6, 6)
        self.icon = QLabel()
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.icon)
        layout.addWidget(self.label, 1)
        self._buttons: list[QPushButton] = []
        self._button_row = QHBoxLayout()
        layout.addLayout(self._button_row)
        self.details_button = QPushButton()
        self.details_button.clicked.connect(self._show_details)
        layout.addWidget(self.details_button)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setAutoRaise(True)
        self.close_button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.close_button.clicked.connect(self.dismiss)
        layout.addWidget(self.close_button)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.dismiss)
        self.hide()
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the bar's own texts (a notice's text is translated by whoever sent it)."""
        self.details_button.setText(tr("Details…"))
        self.details_button.setToolTip(tr("Show the technical details"))
        self.close_button.setToolTip(tr("Dismiss"))
        self.close_button.setAccessibleName(tr("Dismiss"))
        self.setAccessibleName(tr("Notification"))
        if self.current is not None:
            self.icon.setAccessibleName(tr(LEVEL_NAMES[self.current.level]))

    def show_notice(self, notice: Notice) -> None:
        """Show ``notice`` (replacing the one shown)."""
        self.current = notice
        self.history.append(notice)
        self._apply_colors()
        self.icon.setText(ICONS[notice.level])
        self.icon.setAccessibleName(tr(LEVEL_NAMES[notice.level]))
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

    def _apply_colors(self) -> None:
        """Tint the bar for the current notice, from the application's palette (never ours)."""
        if self.current is None:
            return
        background, foreground = level_colors(self.current.level, QGuiApplication.palette())
        palette = self.palette()
        if (palette.color(QPalette.ColorRole.Window) == background
                and palette.color(QPalette.ColorRole.WindowText) == foreground):
            return  # unchanged: setting it again would only send another PaletteChange
        palette.setColor(QPalette.ColorRole.Window, background)
        palette.setColor(QPalette.ColorRole.WindowText, foreground)
        self._accent = foreground
        self.setPalette(palette)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        """Follow a palette change (light ↔ dark) of the application."""
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colors()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        """A line in the accent colour along the bottom edge."""
        super().paintEvent(event)
        if self._accent.isValid():
            painter = QPainter(self)
            painter.setPen(self._accent)
            painter.drawLine(0, self.height() - 1, self.width(), self.height() - 1)

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
