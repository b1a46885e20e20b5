"""One message on screen: a header, the rendered body, and its buttons (copy, edit, branches).

Keyboard: the buttons are in the Tab order (the body's links too: Tab moves between them, Enter
follows one); while the focus is in a message, Alt+Left and Alt+Right show its previous and next
version. Colours come from the palette and follow it when it changes (light ↔ dark).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize, Qt, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QFontDatabase,
    QGuiApplication,
    QKeySequence,
    QPainter,
    QPaintEvent,
    QPalette,
    QShortcut,
)
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

from mixtral_desk.core.i18n import ntr, tr
from mixtral_desk.core.reply_figures import stored_prompt_figure

from ..i18n import keep_translated
from ..signals import emit
from .markdown import Style
from .shown_branch import MessageItem

PREVIOUS_KEYS = "Alt+Left"  # while the focus is in a message: its previous version
NEXT_KEYS = "Alt+Right"
REGENERATE_KEYS = "Ctrl+R"  # in the chat view: another reply to the last message


def is_dark(widget: QWidget) -> bool:
    """Whether the widget's palette is a dark theme."""
    return widget.palette().color(QPalette.ColorRole.Window).lightness() < 128


def _blend(base: QColor, other: QColor, amount: float) -> str:
    """``base`` with ``amount`` (0–1) of ``other`` mixed in, as ``#rrggbb``."""
    return QColor.fromRgbF(base.redF() + (other.redF() - base.redF()) * amount,
                           base.greenF() + (other.greenF() - base.greenF()) * amount,
                           base.blueF() + (other.blueF() - base.blueF()) * amount).name()


def message_style(widget: QWidget) -> Style:
    """How a message over ``widget`` renders: shades between its palette's window and text
    colours (readable in light and dark themes) and the system's fixed-pitch font."""
    palette = widget.palette()
    window = palette.color(QPalette.ColorRole.Window)
    text = palette.color(QPalette.ColorRole.WindowText)
    return Style(code_background=_blend(window, text, 0.06),
                 inline_background=_blend(window, text, 0.10),
                 muted=_blend(window, text, 0.55),
                 border=_blend(window, text, 0.30),
                 mono_family=QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).family(),
                 dark=is_dark(widget))


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
        # Transparent over the message (no style sheet: it would pin the palette it was set with).
        self.setAutoFillBackground(False)
        self.viewport().setAutoFillBackground(False)
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
        self._style: Style | None = None  # what the body was last rendered with
        self._streaming = False
        self.setObjectName("userMessage" if role == "user" else "assistantMessage")
        # Never taller than its content: spare room in the list goes to the stretch below.
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        layout = QVBoxLayout(self)
        self._margins = (12, 8, 12, 6)
        layout.setContentsMargins(*self._margins)
        layout.setSpacing(2)

        header = QHBoxLayout()
        header.setSpacing(10)
        self.who = QLabel()
        self.who.setTextFormat(Qt.TextFormat.PlainText)
        font = self.who.font()
        font.setBold(True)
        self.who.setFont(font)
        self.state = QLabel()
        self.state.setTextFormat(Qt.TextFormat.PlainText)
        self.state.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        header.addWidget(self.who)
        header.addWidget(self.state)
        header.addStretch(1)
        layout.addLayout(header)

        self.body = MessageBody(self)
        self.body.copy_code.connect(self._copy_code)
        layout.addWidget(self.body)

        self.footer = QHBoxLayout()
        self.footer.setSpacing(2)
        self.prev_button = self._tool()
        self.prev_button.setText("◀")
        self.branch_label = QLabel()
        self.branch_label.setTextFormat(Qt.TextFormat.PlainText)
        self.next_button = self._tool()
        self.next_button.setText("▶")
        # Created in the order they stand in, which is the Tab order.
        self.continue_button = self._tool()
        self.regenerate_button = self._tool()
        self.edit_button = self._tool()
        self.copy_button = self._tool()
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
        # Only the message holding the focus answers (each message has its own shortcuts).
        for keys, delta in ((PREVIOUS_KEYS, -1), (NEXT_KEYS, 1)):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda delta=delta: self._step(delta))
        self.set_last(False)
        keep_translated(self.retranslate)

    def _tool(self) -> QToolButton:
        button = QToolButton(self)
        button.setAutoRaise(True)
        button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        return button

    def retranslate(self) -> None:
        """Set the texts in the current language and render the message again."""
        self.setAccessibleName(tr("Your message") if self.role == "user" else tr("Reply"))
        self.body.setAccessibleName(tr("Message text"))
        self.prev_button.setAccessibleName(tr("Previous branch"))
        self.prev_button.setToolTip(tr("Previous version ({keys})", keys=self._keys(PREVIOUS_KEYS)))
        self.next_button.setAccessibleName(tr("Next branch"))
        self.next_button.setToolTip(tr("Next version ({keys})", keys=self._keys(NEXT_KEYS)))
        self.copy_button.setText(tr("Copy"))
        self.copy_button.setToolTip(tr("Copy the whole message"))
        self.edit_button.setText(tr("Edit"))
        self.edit_button.setToolTip(tr("Edit and send again (keeps the old version)"))
        self.regenerate_button.setText(tr("Regenerate"))
        self.regenerate_button.setToolTip(tr("Write another reply ({keys})",
                                             keys=self._keys(REGENERATE_KEYS)))
        self.continue_button.setText(tr("Continue"))
        self.continue_button.setToolTip(tr("Continue this interrupted reply"))
        self._render_who()
        self.set_streaming(self._streaming)
        self.show_text()

    @staticmethod
    def _keys(keys: str) -> str:
        return QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)

    def _render_who(self) -> None:
        item = self.item
        if self.role == "user":
            self.who.setText(tr("You"))
        else:
            self.who.setText(item.model if item is not None and item.model else tr("Assistant"))

    # --- content ---------------------------------------------------------------------------------

    def show_text(self) -> None:
        """Re-render the body from :attr:`text` (only this message is laid out again)."""
        from . import markdown  # markdown-it and Pygments load with the first message

        self._style = message_style(self)
        if self.role == "user":
            rendered = markdown.plain(self.text)
        else:
            rendered = markdown.render(self.text, style=self._style)
        self._code = rendered.code_blocks
        self.body.setHtml(rendered.html)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt override
        """Render again in the new colours when the palette changes (light ↔ dark)."""
        super().changeEvent(event)
        if (event.type() == QEvent.Type.PaletteChange and self._style is not None
                and self._style != message_style(self)):
            self.show_text()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        """The user's messages sit on a rounded, slightly different background."""
        if self.role == "user":
            palette = self.palette()
            painter = QPainter(self)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setBrush(palette.color(QPalette.ColorRole.AlternateBase))
            painter.setPen(palette.color(QPalette.ColorRole.Midlight))
            painter.drawRoundedRect(self.rect().adjusted(0, 0, -1, -1), 8, 8)
            painter.end()
        super().paintEvent(event)

    def set_item(self, item: MessageItem) -> None:
        """The stored message this view shows (same text; new status, stats or siblings)."""
        self.item = item
        self._render_who()
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
            self.state.setText(tr("writing…"))
        elif item is not None and item.status == "interrupted":
            self.state.setText(tr("⚠ interrupted"))
        elif item is not None and item.status == "error":
            self.state.setText(tr("⚠ failed"))
        else:
            self.state.setText(self._stats_text())
        many = item is not None and len(item.siblings) > 1 and not streaming
        for widget in (self.prev_button, self.branch_label, self.next_button):
            widget.setVisible(many)
        if many and item is not None:
            self.branch_label.setText(f"{item.index + 1}/{len(item.siblings)}")
            self.branch_label.setAccessibleName(tr("Branch {index} of {count}",
                                                   index=item.index + 1,
                                                   count=len(item.siblings)))
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
            parts.append(ntr("{count} token", "{count} tokens", int(tokens)))
        if rate:
            parts.append(f"{rate:.1f} tok/s")
        cached = stored_prompt_figure(stats)
        if cached:
            parts.append(cached)
        return " · ".join(parts)

    # --- focus -----------------------------------------------------------------------------------

    def focused_part(self) -> str | None:
        """Which part of this message has the keyboard focus (an attribute name), or None."""
        widget = self.window().focusWidget()  # the window's, even while another app is active
        if widget is None or not (widget is self or self.isAncestorOf(widget)):
            return None
        for name in ("prev_button", "next_button", "copy_button", "edit_button",
                     "regenerate_button", "continue_button"):
            if getattr(self, name) is widget:
                return name
        return "body"

    def restore_focus(self, part: str) -> None:
        """Put the focus on ``part`` (from :meth:`focused_part`), or on the text when that part
        is hidden or disabled now."""
        widget = getattr(self, part, self.body)
        if not isinstance(widget, QWidget) or widget.isHidden() or not widget.isEnabled():
            widget = self.body
        widget.setFocus(Qt.FocusReason.OtherFocusReason)

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
        emit(self.copied, tr("Message copied"))

    def _copy_code(self, index: int) -> None:
        if 0 <= index < len(self._code):
            QGuiApplication.clipboard().setText(self._code[index])
            emit(self.copied, tr("Code copied"))
