"""The chat screen's controller: the sidebar and the chat view, wired to the session and the store.

The use cases themselves (titles, per-conversation sampling, branching) live in
:class:`~mixtral_desk.core.session.Session`; this page starts them through the session bridge and
shows their results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QSplitter, QVBoxLayout, QWidget

from mixtral_desk.core.i18n import tr

from ..bridge.session_bridge import SERVER_BUSY, SessionBridge
from ..bridge.store_bridge import StoreBridge
from ..errors import Action, ErrorSink
from ..signals import emit
from .chat_view import ChatView
from .shown_branch import ShownBranch, read_shown_branch
from .sidebar import Sidebar

if TYPE_CHECKING:  # pydantic and the engine package load after the first paint
    from mixtral_desk.core.chat import TurnResult
    from mixtral_desk.core.store import Conversation


class ChatPage(QWidget):
    """Sidebar + conversation; starts turns on the session bridge and shows their results.

    Signals:
        branch_shown(object): a conversation's :class:`ShownBranch` was shown (after it was
            read, or at the end of a turn).
        turn_finished(object): a turn ended — the TurnResult, or the exception that ended it.
        need_model(): the user tried to send without a loaded model (the text stays in the
            input).
    """

    branch_shown = Signal(object)
    turn_finished = Signal(object)
    need_model = Signal()

    def __init__(self, store: StoreBridge, session: SessionBridge, sink: ErrorSink,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store, self.session, self.sink = store, session, sink
        self.current: str | None = None
        self._conversation: Conversation | None = None
        self._unsent: str | None = None  # the text of the turn running, until it is stored

        self.sidebar = Sidebar(store, session.delete_conversation)
        self.view = ChatView()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.sidebar)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([260, 740])
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self.sidebar.conversation_selected.connect(self.open)
        self.sidebar.new_requested.connect(self.new_chat)
        self.sidebar.deleted.connect(self._deleted)
        self.sidebar.restored.connect(self._restored)
        self.view.send_requested.connect(self.send)
        self.view.composer.refused.connect(self.sink.report)
        self.view.edit_resent.connect(self.edit_and_resend)
        self.view.stop_requested.connect(session.stop)
        self.view.regenerate_requested.connect(self.regenerate)
        self.view.continue_requested.connect(self.continue_reply)
        self.view.branch_requested.connect(self.select_branch)
        self.view.settings_requested.connect(self.edit_settings)
        self.view.notice.connect(lambda text: sink.inform(text, timeout_ms=2000))
        session.token.connect(self.view.append_token)
        session.busy_changed.connect(self.view.set_busy)
        session.conversation_created.connect(self._created)
        session.reply_finished.connect(self._turn_finished)
        session.reply_failed.connect(self._turn_failed)
        self.view.settings_button.setEnabled(False)

    # --- what other parts of the window may ask --------------------------------------------------

    def focus_input(self) -> None:
        """Put the cursor in the message input (Ctrl+L)."""
        self.view.composer.setFocus()

    def typed_text(self) -> str:
        """What is in the message input, stripped."""
        return self.view.composer.toPlainText().strip()

    def block_sending(self, reason: str | None) -> None:
        """Disable Send, saying why (the API server answers a request), or enable it (None)."""
        self.view.send_button.setEnabled(reason is None)
        self.view.send_button.setToolTip(reason or "")

    # --- conversations -------------------------------------------------------------------------

    def new_chat(self) -> None:
        """Show an empty chat; the conversation is created with its first message."""
        if self.session.busy:
            return
        self.current = None
        self._conversation = None
        self.view.cancel_edit()
        self.view.clear()
        self.view.set_title(None)
        self.view.settings_button.setEnabled(False)
        self.sidebar.set_current(None)
        self.view.composer.setFocus()

    def open(self, conversation_id: str) -> None:
        """Show a conversation (read in the background)."""
        if self.session.busy and conversation_id != self.current:
            self.sink.inform(tr("A reply is being written; stop it (Esc) to switch "
                                "conversations."), level="warning", timeout_ms=3000)
            return
        self.current = conversation_id
        self.sidebar.set_current(conversation_id)
        self.reload()
        self.session.warm(conversation_id)

    def reload(self) -> None:
        """Read the current conversation again and show it."""
        conversation_id = self.current
        if conversation_id is None:
            return
        self.store.call(lambda s: read_shown_branch(s, conversation_id), self._show)

    def _show(self, branch: ShownBranch) -> None:
        if branch.conversation.id != self.current:
            return
        self._conversation = branch.conversation
        self.view.show_branch(branch)
        self.view.settings_button.setEnabled(True)
        emit(self.branch_shown, branch)

    def _deleted(self, conversation_id: str, title: str) -> None:
        if conversation_id == self.current:
            self.new_chat()
        self.sink.inform(tr("Deleted “{title}”.", title=title), timeout_ms=8000, actions=(
            Action(tr("Undo"), lambda: self.sidebar.undo_delete(conversation_id)),))

    def _restored(self, conversation_id: str, title: str) -> None:
        self.sink.inform(tr("Restored “{title}”.", title=title), timeout_ms=3000)

    # --- turns ---------------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether a turn may start now; says why not, or asks for a model."""
        if self.session.model_info is None:
            emit(self.need_model)  # the window loads the chosen model, or says how to get one
            return False
        if self.session.busy or not self.store.is_open:
            return False
        if self.session.serving_busy:
            self.sink.inform(tr(SERVER_BUSY), level="warning", timeout_ms=4000)
            return False
        return True

    def send(self, text: str) -> None:
        """Send a message in the current conversation (a new one for a new chat)."""
        if not self._ready():
            return
        self._unsent = text
        self.view.accept_input()
        self.view.begin_reply(user_text=text)
        self.session.send(self.current, text)

    def regenerate(self) -> None:
        """Write another reply to the last user message (the old one stays as a branch)."""
        if self.current is None or not self._ready():
            return
        items = self.view.items()
        users = [i for i, item in enumerate(items) if item.role == "user"]
        if not users:
            return
        self.view.begin_reply(replace_from=users[-1] + 1)
        self.session.regenerate(self.current)

    def edit_and_resend(self, message_id: str, text: str) -> None:
        """Send ``text`` as a new version of a user message (a new branch from its parent)."""
        index = self.view.index_of(message_id)
        if self.current is None or index is None or not self._ready():
            return
        self._unsent = None  # an edit is not sent again by itself
        self.view.accept_input()
        self.view.begin_reply(user_text=text, replace_from=index)
        self.session.edit_and_resend(message_id, text)

    def continue_reply(self, message_id: str) -> None:
        """Continue an interrupted reply."""
        if self.current is None or not self._ready():
            return
        self.view.begin_reply(continue_id=message_id)
        self.session.continue_reply(message_id)

    def _created(self, conversation: Conversation) -> None:
        """A new chat's first message created its conversation."""
        self.current = conversation.id
        self._conversation = conversation
        self.view.set_title(conversation.title or None)
        self.sidebar.show_changed(conversation)
        self.sidebar.set_current(conversation.id)

    def _turn_finished(self, result: TurnResult) -> None:
        """Show the end of the turn from the result it brought (nothing is read again)."""
        self._unsent = None
        conversation = result.conversation
        self.sidebar.show_changed(conversation)
        if conversation.id == self.current:
            self._conversation = conversation
            branch = self.view.finish_turn(result)
            self.view.settings_button.setEnabled(True)
            if branch is not None:
                emit(self.branch_shown, branch)
            else:
                self.reload()
        emit(self.turn_finished, result)

    def _turn_failed(self, error: BaseException) -> None:
        """The reply so far was stored as interrupted: show what is. When nothing was stored (no
        model any more, a new chat that could not be created), the text goes back into the
        input; without a model, the window loads one and sends it then."""
        from mixtral_desk.core.session import NoModelError

        unsent, self._unsent = self._unsent, None
        emit(self.turn_finished, error)
        if isinstance(error, NoModelError) or self.current is None:
            if unsent is not None and not self.typed_text():
                self.view.composer.setPlainText(unsent)
            if self.current is None:
                self.view.clear()
        self.reload()
        self.sidebar.refresh()
        if isinstance(error, NoModelError):
            emit(self.need_model)

    def select_branch(self, message_id: str) -> None:
        """Show the branch through this message (◀ ▶)."""
        if self.session.busy:
            return
        self.store.call(lambda s: s.select_branch(message_id), lambda _: self.reload())

    # --- per-conversation settings -------------------------------------------------------------

    def edit_settings(self) -> None:
        """Edit the current conversation's system prompt and sampling."""
        from .conversation_settings import ConversationSettingsDialog

        conversation = self._conversation
        if conversation is None:
            return
        dialog = ConversationSettingsDialog(conversation.system_prompt, conversation.settings,
                                            self.session.session.settings.sampling, self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        prompt, settings = dialog.values()
        self.store.call(lambda s: s.update_conversation(conversation.id, system_prompt=prompt,
                                                        settings=settings),
                        lambda updated: setattr(self, "_conversation", updated))
