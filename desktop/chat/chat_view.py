"""The conversation on screen: messages, streaming with coalesced rendering, and the composer.

Keyboard: Tab goes through the messages' buttons and the composer; Ctrl+R writes another reply to
the last message; in a message, Alt+Left / Alt+Right show its other versions (the focus stays on
that message).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPalette, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.i18n import tr

from ..i18n import keep_translated
from ..signals import emit
from .composer import Composer
from .message_view import REGENERATE_KEYS, MessageView
from .shown_branch import MessageItem, ShownBranch

if TYPE_CHECKING:
    from mixtral_desk.core.chat import TurnResult

RENDER_INTERVAL_MS = 100
MAX_RENDER_INTERVAL_MS = 500
RENDER_BUDGET = 20  # wait at least this many times a render's own cost before the next one


class ChatView(QWidget):
    """Shows one conversation's branch and takes the next message.

    Tokens arrive through :meth:`append_token`; the growing message is re-rendered at most every
    :data:`RENDER_INTERVAL_MS` — longer for a long message, whose render costs more — and only
    that message is laid out again, so a fast model never floods the event loop.

    Signals:
        send_requested(str): send this text as a new user message.
        edit_resent(str, str): send this text as a new version of user message id.
        stop_requested(): stop the reply being written.
        regenerate_requested(): write another reply to the last user message.
        continue_requested(str): continue this interrupted reply id.
        branch_requested(str): show the branch through this message id.
        settings_requested(): open the conversation's settings.
        notice(str): a short confirmation to show (e.g. "Code copied").
    """

    send_requested = Signal(str)
    edit_resent = Signal(str, str)
    stop_requested = Signal()
    regenerate_requested = Signal()
    continue_requested = Signal(str)
    branch_requested = Signal(str)
    settings_requested = Signal()
    notice = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shown_branch: ShownBranch | None = None
        self.views: list[MessageView] = []
        self._streaming: MessageView | None = None
        self._editing: str | None = None
        self._busy = False
        self.renders = 0  # how many times the streaming message was re-rendered (tests, bench)
        self.kept = 0  # how many views the last show_branch() kept as they were (tests)
        self._title: str | None = ""  # None: a new chat ("New chat"); "": nothing shown
        self._refocus: tuple[int, str] | None = None  # (view index, part) after a branch switch

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)

        header = QHBoxLayout()
        header.setContentsMargins(16, 8, 12, 8)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title.font()
        font.setWeight(font.Weight.DemiBold)
        self.title.setFont(font)
        self.settings_button = QPushButton()
        self.settings_button.setFlat(True)
        self.settings_button.clicked.connect(self.settings_requested)
        header.addWidget(self.title, 1)
        header.addWidget(self.settings_button)
        layout.addLayout(header)

        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list_widget = QWidget()
        self.list_layout = QVBoxLayout(self.list_widget)
        self.list_layout.setContentsMargins(16, 8, 16, 8)
        self.list_layout.setSpacing(10)
        self.placeholder = QLabel()
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        # Palette roles, not a style sheet: they follow a light ↔ dark switch.
        self.placeholder.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.placeholder.setContentsMargins(40, 40, 40, 40)
        self.list_layout.addWidget(self.placeholder)
        self.list_layout.addStretch(1)
        self.scroll_area.setWidget(self.list_widget)
        layout.addWidget(self.scroll_area, 1)
        self.scroll_area.verticalScrollBar().rangeChanged.connect(self._follow)
        self._stick_to_bottom = True
        self.scroll_area.verticalScrollBar().valueChanged.connect(self._on_scrolled)

        bottom = QVBoxLayout()
        bottom.setContentsMargins(16, 6, 16, 12)
        self.edit_banner = QWidget()
        banner = QHBoxLayout(self.edit_banner)
        banner.setContentsMargins(0, 0, 0, 0)
        self.edit_note = QLabel()
        self.edit_note.setWordWrap(True)
        banner.addWidget(self.edit_note, 1)
        self.cancel_edit_button = QPushButton()
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        banner.addWidget(self.cancel_edit_button)
        self.edit_banner.hide()
        bottom.addWidget(self.edit_banner)
        row = QHBoxLayout()
        self.composer = Composer()
        self.composer.submitted.connect(self._submit)
        self.send_button = QPushButton()
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(lambda: self._submit(self.composer.toPlainText().strip()))
        self.stop_button = QPushButton()
        self.stop_button.clicked.connect(self.stop_requested)
        self.stop_button.hide()
        row.addWidget(self.composer, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        row.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignBottom)
        bottom.addLayout(row)
        layout.addLayout(bottom)

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_streaming)

        regenerate = QShortcut(QKeySequence(REGENERATE_KEYS), self)
        regenerate.setContext(Qt.ShortcutContext.WindowShortcut)
        regenerate.activated.connect(self.regenerate_last)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the texts in the current language (each message sets its own)."""
        self._render_title()
        self.settings_button.setToolTip(tr("The system prompt and generation settings of this "
                                           "conversation"))
        self.settings_button.setText(tr("Conversation settings…"))
        self.placeholder.setText(tr("Ask anything. Replies are written by the model on this "
                                    "computer; nothing leaves it."))
        self.scroll_area.setAccessibleName(tr("Messages"))
        self.edit_note.setText(tr("Editing a message — sending makes a new version; the old one "
                                  "stays reachable with ◀ ▶."))
        self.cancel_edit_button.setText(tr("Cancel edit"))
        self.cancel_edit_button.setToolTip(tr("Leave edit mode (Esc)"))
        self.send_button.setText(tr("Send"))
        self.stop_button.setText(tr("Stop"))
        self.stop_button.setToolTip(tr("Stop the reply (Esc)"))

    def set_title(self, title: str | None) -> None:
        """Show this conversation title; ``None``: a new chat (shown as "New chat")."""
        self._title = title
        self._render_title()

    def _render_title(self) -> None:
        self.title.setText(tr("New chat") if self._title is None else self._title)

    # --- showing a conversation ------------------------------------------------------------------

    def show_branch(self, branch: ShownBranch) -> None:
        """Show this conversation's branch.

        Messages already on screen with the same content are kept as they are (a finished
        reply, the user's message before it): only what changed is rendered again, so ending a
        turn in a long conversation costs one message, not all of them.
        """
        self.shown_branch = branch
        self.set_title(branch.conversation.title or None)
        self._render_timer.stop()
        self._streaming = None
        keep = 0  # same role and text: keep the view (set_item() updates status and siblings)
        for view, item in zip(self.views, branch.items, strict=False):
            if view.role != item.role or view.text != item.content:
                break
            keep += 1
        for view in self.views[keep:]:
            view.setParent(None)
            view.deleteLater()
        self.views = self.views[:keep]
        for view, item in zip(self.views, branch.items, strict=False):
            if view.item != item:
                view.set_item(item)
        for item in branch.items[keep:]:
            self._add_view(MessageView(item, item.role))
        self.placeholder.setVisible(not self.views)
        self._update_last()
        self._stick_to_bottom = True
        self.kept = keep
        refocus, self._refocus = self._refocus, None
        if refocus is not None and refocus[0] < len(self.views):
            self.views[refocus[0]].restore_focus(refocus[1])

    def clear(self) -> None:
        """Show no conversation."""
        self.shown_branch = None
        self.set_title("")
        self._clear()
        self.placeholder.show()

    def _clear(self) -> None:
        self._render_timer.stop()
        self._streaming = None
        for view in self.views:
            view.setParent(None)
            view.deleteLater()
        self.views = []

    def _add_view(self, view: MessageView) -> MessageView:
        view.edit_requested.connect(self._start_edit)
        view.regenerate_requested.connect(self.regenerate_requested)
        view.continue_requested.connect(self.continue_requested)
        view.branch_requested.connect(lambda message_id, view=view: self._branch(view, message_id))
        view.copied.connect(self.notice)
        margins = self.list_layout.contentsMargins()
        width = self.list_widget.width() - margins.left() - margins.right()
        if width > 0:  # lay the text out at about its final width now: no tall first frame
            view.fit_width(width)
        self.list_layout.insertWidget(self.list_layout.count() - 1, view)
        view.show()  # now, not on the next event-loop pass: the height is known at once
        self.views.append(view)
        self.placeholder.hide()
        return view

    def _update_last(self) -> None:
        for view in self.views:
            view.set_last(view is self.views[-1], self._busy)

    def _branch(self, view: MessageView, message_id: str) -> None:
        """Ask for another version; the focus, if it is in that message, stays there."""
        part = view.focused_part()
        if part is not None and view in self.views:
            self._refocus = (self.views.index(view), part)
        emit(self.branch_requested, message_id)

    def regenerate_last(self) -> None:
        """Write another reply to the last message (Ctrl+R), when the last one is a reply."""
        last = self.views[-1] if self.views else None
        if (self.isVisible() and not self._busy and last is not None
                and not last.regenerate_button.isHidden()):
            emit(self.regenerate_requested)

    # --- streaming -------------------------------------------------------------------------------

    def begin_reply(self, *, user_text: str | None = None, replace_from: int | None = None,
                    continue_id: str | None = None) -> None:
        """Show a turn starting: optionally the user's message, then a reply being written.

        ``replace_from``: drop the views from this index on first (regenerate, edit).
        ``continue_id``: the interrupted reply that continues in place.
        """
        self._stick_to_bottom = True
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        if replace_from is not None:
            for view in self.views[replace_from:]:
                view.setParent(None)
                view.deleteLater()
            self.views = self.views[:replace_from]
        if continue_id is not None and self.views and self.views[-1].item is not None \
                and self.views[-1].item.id == continue_id:
            self._streaming = self.views[-1]
        else:
            if user_text is not None:
                self._add_view(MessageView(None, "user")).text = user_text
                self.views[-1].show_text()
            self._streaming = self._add_view(MessageView(None, "assistant"))
        self._streaming.set_streaming(True)
        self._update_last()

    def append_token(self, text: str) -> None:
        """Add streamed text; the message is re-rendered by a coalescing timer."""
        if self._streaming is None:
            return
        self._streaming.text += text
        if not self._render_timer.isActive():
            self._render_timer.start()

    def _render_streaming(self) -> None:
        if self._streaming is not None:
            started = time.perf_counter()
            self._streaming.show_text()
            self.renders += 1
            # A long message costs more to lay out: render it less often, so the GUI thread
            # never takes more than about 1/RENDER_BUDGET of a core while a reply streams.
            cost_ms = (time.perf_counter() - started) * 1000
            self._render_timer.setInterval(int(min(MAX_RENDER_INTERVAL_MS,
                                                   max(RENDER_INTERVAL_MS,
                                                       RENDER_BUDGET * cost_ms))))

    def finish_turn(self, result: TurnResult) -> ShownBranch | None:
        """Show a finished turn from its result (no reading from the store): the reply being
        written becomes the stored one, and the user message before it gets its id and
        alternatives. Returns the branch now shown, or ``None`` when the view shows no reply
        being written (it was cleared meanwhile)."""
        from .shown_branch import items_of_turn

        streaming, self._streaming = self._streaming, None
        if streaming is None or streaming not in self.views:
            return None
        self._render_timer.stop()
        question, reply = items_of_turn(result)
        if streaming.text != reply.content:  # normally the same: the stream was all of it
            streaming.text = reply.content
            streaming.show_text()
        streaming.set_item(reply)
        index = self.views.index(streaming)
        if question is not None and index > 0 and self.views[index - 1].role == "user":
            self.views[index - 1].set_item(question)
        self._update_last()
        self.kept = len(self.views)
        self.shown_branch = ShownBranch(result.conversation, tuple(self.items()))
        self.set_title(result.conversation.title or None)
        return self.shown_branch

    @property
    def streaming_text(self) -> str:
        """The text of the reply being written ('' when none)."""
        return self._streaming.text if self._streaming is not None else ""

    def set_busy(self, busy: bool) -> None:
        """A reply is being written: show Stop instead of Send, hide per-message actions."""
        self._busy = busy
        self.stop_button.setVisible(busy)
        self.send_button.setVisible(not busy)
        if not busy:
            self._render_streaming()
        self._update_last()

    def _follow(self) -> None:
        if self._stick_to_bottom:
            bar = self.scroll_area.verticalScrollBar()
            bar.setValue(bar.maximum())

    def _on_scrolled(self, value: int) -> None:
        bar = self.scroll_area.verticalScrollBar()
        self._stick_to_bottom = value >= bar.maximum() - 24

    # --- input -----------------------------------------------------------------------------------

    def _submit(self, text: str) -> None:
        """Ask for the text to be sent; it stays in the input until :meth:`accept_input`."""
        if not text or self._busy:
            return
        if self._editing is not None:
            emit(self.edit_resent, self._editing, text)
        else:
            emit(self.send_requested, text)

    def accept_input(self) -> None:
        """The typed text was sent: clear the input and leave edit mode."""
        self.composer.clear()
        self._editing = None
        self.edit_banner.hide()

    def _start_edit(self, message_id: str) -> None:
        view = next((v for v in self.views if v.item is not None and v.item.id == message_id),
                    None)
        if view is None:
            return
        self._editing = message_id
        self.composer.setPlainText(view.text)
        self.edit_banner.show()
        self.composer.setFocus()

    def cancel_edit(self) -> None:
        """Leave edit mode, clearing the input."""
        if self._editing is not None:
            self._editing = None
            self.edit_banner.hide()
            self.composer.clear()

    def index_of(self, message_id: str) -> int | None:
        """The position of a shown message, or None."""
        for index, view in enumerate(self.views):
            if view.item is not None and view.item.id == message_id:
                return index
        return None

    def items(self) -> list[MessageItem]:
        """The shown messages that are stored (not the one being written)."""
        return [v.item for v in self.views if v.item is not None]
