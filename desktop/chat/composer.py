"""The message input: Enter sends, Shift+Enter adds a line; grows with its text up to a limit.

A paste that would make the message longer than the largest message the app takes
(:data:`~mixtral_desk.core.untrusted_json.MAX_MESSAGE_CHARS`) is refused whole, and the text
typed so far is kept; sending checks the same rule again in the session layer.
"""

from __future__ import annotations

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QPlainTextEdit, QSizePolicy, QWidget

from mixtral_desk.core.errors import MessageError
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.untrusted_json import check_message

from ..i18n import keep_translated
from ..signals import emit

MAX_LINES = 8


class Composer(QPlainTextEdit):
    """Where the user types.

    Signals:
        submitted(str): Enter was pressed with non-blank text (the text, stripped).
        refused(MessageError): a paste was refused (too long, or not valid text); nothing was
            inserted.
    """

    submitted = Signal(str)
    refused = Signal(object)

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

    def insertFromMimeData(self, source: QMimeData) -> None:  # noqa: N802 - Qt override
        pasted = source.text() if source.hasText() else ""
        selected = len(self.textCursor().selectedText())
        try:
            check_message(self.toPlainText()[:len(self.toPlainText()) - selected] + pasted)
        except MessageError as error:
            emit(self.refused, error)
            return
        super().insertFromMimeData(source)

    def _fit(self) -> None:
        wanted = max(1, int(self.document().size().height()))  # lines, for a plain text edit
        lines = min(MAX_LINES, wanted)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded if wanted > MAX_LINES
                                        else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        height = (lines * self.fontMetrics().lineSpacing()
                  + 2 * int(self.document().documentMargin()) + 2 * self.frameWidth() + 8)
        self.setFixedHeight(height)
