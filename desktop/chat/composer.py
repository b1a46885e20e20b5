"""The message input: Enter sends, Shift+Enter adds a line; grows with its text up to a limit."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QPlainTextEdit, QSizePolicy, QWidget

from mixtral_desk.core.i18n import tr

from ..i18n import keep_translated
from ..signals import emit

MAX_LINES = 8


class Composer(QPlainTextEdit):
    """Where the user types.

    Signals:
        submitted(str): Enter was pressed with non-blank text (the text, stripped).
    """

    submitted = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTabChangesFocus(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the texts in the current language."""
        self.setPlaceholderText(tr("Message the model — Enter sends, Shift+Enter adds a line"))
        self.setAccessibleName(tr("Message"))
        self.setAccessibleDescription(tr("Enter sends, Shift+Enter adds a line"))

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            text = self.toPlainText().strip()
            if text:
                emit(self.submitted, text)
            event.accept()
            return
        super().keyPressEvent(event)

    def _fit(self) -> None:
        wanted = max(1, int(self.document().size().height()))  # lines, for a plain text edit
        lines = min(MAX_LINES, wanted)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded if wanted > MAX_LINES
                                        else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        height = (lines * self.fontMetrics().lineSpacing()
                  + 2 * int(self.document().documentMargin()) + 2 * self.frameWidth() + 8)
        self.setFixedHeight(height)
