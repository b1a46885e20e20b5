"""One message on screen: a header, the rendered body, and its buttons (copy, edit, branches)."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..signals import emit
from .thread import MessageItem


def is_dark(widget: QWidget) -> bool:
    """Whether the widget's palette is a dark theme."""
    return widget.palette().color(QPalette.ColorRole.Window).lightness() < 128


class MessageBody(QTextBrowser):
    """Read-only rich text that is exactly as tall as its content (the list scrolls, not it).

    Signals:
        copy_code(int): the "Copy" link of the n-th code block was clicked.
    """

    copy_code = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setOpenLinks(False)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.document().setDocumentMargin(2)
        self.anchorClicked.connect(self._on_link)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)

    def _on_link(self, url: QUrl) -> None:
        if url.scheme() == "copy":
            emit(self.copy_code, int(url.path() or 0))
        elif url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)

    def _fit(self) -> None:
        height = int(self.document().size().height()) + 2
        bar = self.horizontalScrollBar()
        if bar.isVisible():
            height += bar.sizeHint().height()
        if height != self.height():
            self.setFixedHeight(height)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(400, self.height())


class MessageView(QFrame):
    """A message of the shown branch.

    Signals:
        edit_requested(str): edit this user message (its id).
        regenerate_requested(): write another reply to the last user message.
        continue_requested(str): continue this interrupted reply (its id).
        branch_requested(str): show the branch through this sibling message id.
        copied(str): text was put on the clipboard (what, for a short notice).
    """

    edit_requested = Signal(str)
    regenerate_requested = Signal()
    continue_requested = Signal(str)
    branch_requested = Signal(str)
    copied = Signal(str)

    def __init__(self, item: MessageItem | None, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.item = item
        self.text = item.content if item else ""
        self._code: tuple[str, ...] = ()
        self.setObjectName("userMessage" if role == "user" else "assistantMessage")
        # Never taller than its content: spare room in the list goes to the stretch below.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        if role == "user":
            self.setStyleSheet("QFrame#userMessage { background: palette(alternate-base); "
                               "border: 1px solid palette(midlight); border-radius: 8px; }")
        layout = QVBoxLayout(self)
        self._margins = (12, 8, 12, 6)
        layout.setContentsMargins(*self._margins)
        layout.setSpacing(2)

        header = QHBoxLayout()
        header.setSpacing(10)
        who = "You" if role == "user" else (item.model if item and item.model else "Assistant")
        self.who = QLabel(who)
        self.who.setTextFormat(Qt.TextFormat.PlainText)
        font = self.who.font()
        font.setBold(True)
        self.who.setFont(font)
        self.state = QLabel()
        self.state.setTextFormat(Qt.TextFormat.PlainText)
        self.state.setStyleSheet("color: palette(placeholder-text);")
        header.addWidget(self.who)
        header.addWidget(self.state)
        header.addStretch(1)
        layout.addLayout(header)

        self.body = MessageBody(self)
        self.body.copy_code.connect(self._copy_code)
        layout.addWidget(self.body)

        self.footer = QHBoxLayout()
        self.footer.setSpacing(2)
        self.prev_button = self._tool("◀", "Previous version")
        self.branch_label = QLabel()
        self.branch_label.setTextFormat(Qt.TextFormat.PlainText)
        self.next_button = self._tool("▶", "Next version")
        self.copy_button = self._tool("Copy", "Copy the whole message")
        self.edit_button = self._tool("Edit", "Edit and send again (keeps the old version)")
        self.regenerate_button = self._tool("Regenerate", "Write another reply (Ctrl+R)")
        self.continue_button = self._tool("Continue", "Continue this interrupted reply")
        for widget in (self.prev_button, self.branch_label, self.next_button):
            self.footer.addWidget(widget)
        self.footer.addStretch(1)
        for widget in (self.continue_button, self.regenerate_button, self.edit_button,
                       self.copy_button):
            self.footer.addWidget(widget)
        layout.addLayout(self.footer)

        self.prev_button.clicked.connect(lambda: self._step(-1))
        self.next_button.clicked.connect(lambda: self._step(1))
        self.copy_button.clicked.connect(self._copy_all)
        self.edit_button.clicked.connect(self._edit)
        self.regenerate_button.clicked.connect(self.regenerate_requested)
        self.continue_button.clicked.connect(self._continue)
        self.set_streaming(False)
        self.set_last(False)
        self.show_text()

    def _tool(self, text: str, tip: str) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        return button

    # --- content ---------------------------------------------------------------------------------

    def show_text(self) -> None:
        """Re-render the body from :attr:`text` (only this message is laid out again)."""
        from . import markdown  # markdown-it and Pygments load with the first message

        if self.role == "user":
            rendered = markdown.plain(self.text)
        else:
            rendered = markdown.render(self.text, dark=is_dark(self))
        self._code = rendered.code_blocks
        self.body.setHtml(rendered.html)

    def set_item(self, item: MessageItem) -> None:
        """The stored message this view shows (same text; new status, stats or siblings)."""
        self.item = item
        if self.role == "assistant" and item.model:
            self.who.setText(item.model)
        self.set_streaming(False)

    def fit_width(self, width: int) -> None:
        """Lay the body out for a view ``width`` pixels wide (before the layout gets to it)."""
        left, _, right, _ = self._margins
        self.body.document().setTextWidth(max(50, width - left - right))

    def set_streaming(self, streaming: bool) -> None:
        """Show the message as being written (buttons hidden) or finished."""
        self._streaming = streaming
        item = self.item
        if streaming:
            self.state.setText("writing…")
        elif item is not None and item.status == "interrupted":
            self.state.setText("⚠ interrupted")
        elif item is not None and item.status == "error":
            self.state.setText("⚠ failed")
        else:
            self.state.setText(self._stats_text())
        many = item is not None and len(item.siblings) > 1 and not streaming
        for widget in (self.prev_button, self.branch_label, self.next_button):
            widget.setVisible(many)
        if many and item is not None:
            self.branch_label.setText(f"{item.index + 1}/{len(item.siblings)}")
            self.prev_button.setEnabled(item.index > 0)
            self.next_button.setEnabled(item.index < len(item.siblings) - 1)
        self.copy_button.setVisible(not streaming)
        self.edit_button.setVisible(not streaming and self.role == "user" and item is not None)

    def set_last(self, last: bool, busy: bool = False) -> None:
        """The last message of the branch gets Regenerate (and Continue when interrupted)."""
        assistant = self.role == "assistant" and self.item is not None and not self._streaming
        self.regenerate_button.setVisible(last and assistant and not busy)
        self.continue_button.setVisible(last and assistant and not busy and self.item is not None
                                        and self.item.status == "interrupted")

    def _stats_text(self) -> str:
        stats = self.item.stats if self.item else None
        if not stats or self.role != "assistant":
            return ""
        rate = stats.get("decode_tokens_per_s")
        tokens = stats.get("completion_tokens")
        parts = []
        if tokens:
            parts.append(f"{tokens} tokens")
        if rate:
            parts.append(f"{rate:.1f} tok/s")
        return " · ".join(parts)

    # --- actions ---------------------------------------------------------------------------------

    def _step(self, delta: int) -> None:
        item = self.item
        if item is None:
            return
        target = item.index + delta
        if 0 <= target < len(item.siblings):
            emit(self.branch_requested, item.siblings[target])

    def _edit(self) -> None:
        if self.item is not None:
            emit(self.edit_requested, self.item.id)

    def _continue(self) -> None:
        if self.item is not None:
            emit(self.continue_requested, self.item.id)

    def _copy_all(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        emit(self.copied, "Message copied")

    def _copy_code(self, index: int) -> None:
        if 0 <= index < len(self._code):
            QGuiApplication.clipboard().setText(self._code[index])
            emit(self.copied, "Code copied")
