"""The chat screen's controller: the sidebar and the chat view, wired to store and engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDialog, QSplitter, QVBoxLayout, QWidget

from mixtral_desk.core.i18n import tr

from ..bridge.engine_bridge import EngineBridge
from ..bridge.store_bridge import StoreBridge
from ..errors import Action, ErrorSink
from ..signals import emit
from .chat_view import ChatView
from .sidebar import Sidebar
from .thread import Thread, read_thread

if TYPE_CHECKING:  # pydantic and the engine package load after the first paint
    from mixtral_desk.core.chat import TurnResult
    from mixtral_desk.core.engine import SamplingOptions
    from mixtral_desk.core.store import Conversation, Store

TITLE_CHARS = 48


def title_from(text: str) -> str:
    """A conversation title from its first message: the first line, shortened."""
    line = text.strip().splitlines()[0] if text.strip() else tr("New chat")
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


class ChatPage(QWidget):
    """Sidebar + conversation; starts turns on the engine bridge and shows their results.

    Signals:
        thread_shown(object): a conversation's :class:`Thread` was shown (after a load or a turn).
        turn_finished(object): a turn ended — the TurnResult, or the exception that ended it.
        need_model(): the user tried to send without a loaded model (the text stays in the
            input).
    """

    thread_shown = Signal(object)
    turn_finished = Signal(object)
    need_model = Signal()

    def __init__(self, store: StoreBridge, engine: EngineBridge, sink: ErrorSink,
                 defaults: Callable[[], SamplingOptions], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store, self.engine, self.sink = store, engine, sink
        self._defaults = defaults
        self.current: str | None = None
        self._conversation: Conversation | None = None
        self._creating = False  # a new chat's conversation is being created for its first turn

        self.sidebar = Sidebar(store)
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
        self.view.edit_resent.connect(self.edit_and_resend)
        self.view.stop_requested.connect(engine.stop)
        self.view.regenerate_requested.connect(self.regenerate)
        self.view.continue_requested.connect(self.continue_reply)
        self.view.branch_requested.connect(self.select_branch)
        self.view.settings_requested.connect(self.edit_settings)
        self.view.notice.connect(lambda text: sink.inform(text, timeout_ms=2000))
        engine.token.connect(self.view.append_token)
        engine.busy_changed.connect(self.view.set_busy)
        engine.reply_finished.connect(self._turn_ended)
        engine.reply_failed.connect(self._turn_ended)
        self.view.settings_button.setEnabled(False)

    # --- conversations -------------------------------------------------------------------------

    def new_chat(self) -> None:
        """Show an empty chat; the conversation is created with its first message."""
        if self.engine.busy:
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
        if self.engine.busy and conversation_id != self.current:
            self.sink.inform(tr("A reply is being written; stop it (Esc) to switch "
                                "conversations."), level="warning", timeout_ms=3000)
            return
        self.current = conversation_id
        self.sidebar.set_current(conversation_id)
        self.reload()

    def reload(self) -> None:
        """Read the current conversation again and show it."""
        conversation_id = self.current
        if conversation_id is None:
            return
        self.store.call(lambda s: read_thread(s, conversation_id), self._show)

    def _show(self, thread: Thread) -> None:
        if thread.conversation.id != self.current:
            return
        self._conversation = thread.conversation
        self.view.show_thread(thread)
        self.view.settings_button.setEnabled(True)
        emit(self.thread_shown, thread)

    def _deleted(self, conversation_id: str, title: str) -> None:
        if conversation_id == self.current:
            self.new_chat()
        self.sink.inform(tr("Deleted “{title}”.", title=title), timeout_ms=8000, actions=(
            Action(tr("Undo"), lambda: self.sidebar.undo_delete(conversation_id)),))

    def _restored(self, conversation_id: str, title: str) -> None:
        self.sink.inform(tr("Restored “{title}”.", title=title), timeout_ms=3000)

    # --- turns ---------------------------------------------------------------------------------

    def _ready(self) -> Store | None:
        store = self.store.store
        if self.engine.model_info is None:
            emit(self.need_model)  # the window loads the chosen model, or says how to get one
            return None
        if self.engine.busy or self._creating or store is None:
            return None
        reason = self.engine.busy_elsewhere()
        if reason:
            self.sink.inform(reason, level="warning", timeout_ms=4000)
            return None
        return store

    def _sampling(self) -> SamplingOptions:
        from .conversation_settings import sampling_for

        settings = self._conversation.settings if self._conversation is not None else {}
        return sampling_for(self._defaults(), settings)

    def send(self, text: str) -> None:
        """Send a message in the current conversation (creating it for a new chat)."""
        store = self._ready()
        if store is None:
            return
        self.view.accept_input()
        self.view.begin_reply(user_text=text)
        if self.current is None:
            model = self.engine.model_name()

            def created(conversation: Conversation) -> None:
                self._creating = False
                self.current = conversation.id
                self._conversation = conversation
                self.view.set_title(conversation.title or None)
                self.sidebar.set_current(conversation.id)
                self.engine.send(store, conversation.id, text, self._sampling())
            def failed(error: BaseException) -> None:
                self._creating = False
                self.sink.report(error, tr("while creating the conversation"))
                self.view.clear()
            self._creating = True
            self.store.call(lambda s: s.create_conversation(title_from(text), model=model),
                            created, failed, changes=True)
        else:
            self.engine.send(store, self.current, text, self._sampling())

    def regenerate(self) -> None:
        """Write another reply to the last user message (the old one stays as a branch)."""
        store = self._ready()
        if store is None or self.current is None:
            return
        items = self.view.items()
        users = [i for i, item in enumerate(items) if item.role == "user"]
        if not users:
            return
        self.view.begin_reply(replace_from=users[-1] + 1)
        self.engine.regenerate(store, self.current, self._sampling())

    def edit_and_resend(self, message_id: str, text: str) -> None:
        """Send ``text`` as a new version of a user message (a new branch from its parent)."""
        store = self._ready()
        index = self.view.index_of(message_id)
        if store is None or self.current is None or index is None:
            return
        self.view.accept_input()
        self.view.begin_reply(user_text=text, replace_from=index)
        self.engine.edit_and_resend(store, self.current, message_id, text, self._sampling())

    def continue_reply(self, message_id: str) -> None:
        """Continue an interrupted reply."""
        store = self._ready()
        if store is None or self.current is None:
            return
        self.view.begin_reply(continue_id=message_id)
        self.engine.continue_reply(store, self.current, message_id, self._sampling())

    def stop(self) -> None:
        """Stop the reply being written (Esc)."""
        if self.engine.busy:
            self.engine.stop()

    def _turn_ended(self, result: TurnResult | BaseException) -> None:
        emit(self.turn_finished, result)
        self.reload()
        emit(self.store.changed)

    def select_branch(self, message_id: str) -> None:
        """Show the branch through this message (◀ ▶)."""
        if self.engine.busy:
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
                                            self._defaults(), self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        prompt, settings = dialog.values()
        self.store.call(lambda s: s.update_conversation(conversation.id, system_prompt=prompt,
                                                        settings=settings),
                        lambda updated: setattr(self, "_conversation", updated))
