"""The conversation list: grouped by date, pinned first; rename, pin, delete with undo; search."""

from __future__ import annotations

from datetime import datetime
from html import escape

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.store import SNIPPET_CLOSE, SNIPPET_OPEN, Conversation, SearchHit

from ..bridge.store_bridge import StoreBridge
from ..signals import emit

ID_ROLE = Qt.ItemDataRole.UserRole
UNDO_MS = 8000
SEARCH_DELAY_MS = 200
LIST_LIMIT = 500


def date_group(when: datetime, now: datetime | None = None) -> str:
    """"Today", "Yesterday", "Previous 7 days", "Previous 30 days" or the month and year."""
    local = when.astimezone()
    today = (now or datetime.now().astimezone()).date()
    days = (today - local.date()).days
    if days <= 0:
        return "Today"
    if days == 1:
        return "Yesterday"
    if days < 7:
        return "Previous 7 days"
    if days < 30:
        return "Previous 30 days"
    return local.strftime("%B %Y")


def snippet_html(snippet: str) -> str:
    """A search snippet with its «matches» in bold."""
    text = escape(snippet)
    return text.replace(SNIPPET_OPEN, "<b>").replace(SNIPPET_CLOSE, "</b>")


def as_you_type(query: str) -> str:
    """Make each plain word a prefix (``pine`` finds "pineapples") while the user types.

    Queries with quotes are left alone (a phrase means exactly that).
    """
    if '"' in query:
        return query
    words = [w if w == "OR" or w.endswith("*") else w + "*" for w in query.split()]
    return " ".join(words)


class Sidebar(QWidget):
    """Lists conversations and search results.

    Signals:
        conversation_selected(str): the user picked this conversation id.
        new_requested(): the "New chat" button.
        deleted(str, str): a conversation (id, title) was hidden and will be deleted unless
            :meth:`undo_delete` is called within a few seconds.
        search_results(int): a search finished with this many hits (for tests and the UI).
    """

    conversation_selected = Signal(str)
    new_requested = Signal()
    deleted = Signal(str, str)
    search_results = Signal(int)

    def __init__(self, store: StoreBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._conversations: list[Conversation] = []
        self._pending_delete: dict[str, QTimer] = {}
        self._current: str | None = None
        self.setMinimumWidth(220)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_requested)
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search conversations (Ctrl+F)")
        self.search_box.setClearButtonEnabled(True)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search_box)

        self.stack = QStackedWidget()
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(8)
        self.tree.setStyleSheet("QTreeView::item { padding: 3px 2px; }")
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemChanged.connect(self._renamed)
        self.results = QListWidget()
        self.results.setWordWrap(True)
        self.results.itemClicked.connect(self._result_clicked)
        self.no_results = QLabel("No matches.")
        self.no_results.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.stack.addWidget(self.tree)
        self.stack.addWidget(self.results)
        self.stack.addWidget(self.no_results)
        layout.addWidget(self.stack, 1)

        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self._search)
        self.search_box.textChanged.connect(lambda _: self._search_timer.start())
        store.changed.connect(self.refresh)

    # --- the list ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the list from the store (in the background)."""
        self._store.call(lambda s: s.list_conversations(limit=LIST_LIMIT), self._fill)

    @property
    def conversations(self) -> list[Conversation]:
        """The listed conversations (without those pending deletion)."""
        return [c for c in self._conversations if c.id not in self._pending_delete]

    def _fill(self, conversations: list[Conversation]) -> None:
        self._conversations = conversations
        self.tree.blockSignals(True)
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        for conversation in self.conversations:
            name = "Pinned" if conversation.pinned else date_group(conversation.updated_at)
            group = groups.get(name)
            if group is None:
                group = QTreeWidgetItem(self.tree, [name])
                group.setFlags(Qt.ItemFlag.ItemIsEnabled)
                font = group.font(0)
                font.setBold(True)
                font.setPointSizeF(font.pointSizeF() * 0.9)
                group.setFont(0, font)
                groups[name] = group
            item = QTreeWidgetItem(group, [conversation.title or "New chat"])
            item.setData(0, ID_ROLE, conversation.id)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                          | Qt.ItemFlag.ItemIsEditable)
            item.setToolTip(0, conversation.title or "New chat")
            if conversation.id == self._current:
                item.setSelected(True)
        self.tree.expandAll()
        self.tree.blockSignals(False)

    def set_current(self, conversation_id: str | None) -> None:
        """Highlight the shown conversation."""
        self._current = conversation_id
        for item in self._items():
            item.setSelected(item.data(0, ID_ROLE) == conversation_id)

    def _items(self) -> list[QTreeWidgetItem]:
        found: list[QTreeWidgetItem] = []
        for i in range(self.tree.topLevelItemCount()):
            group = self.tree.topLevelItem(i)
            if group is not None:
                found.extend(c for j in range(group.childCount())
                             if (c := group.child(j)) is not None)
        return found

    def _clicked(self, item: QTreeWidgetItem) -> None:
        conversation_id = item.data(0, ID_ROLE)
        if conversation_id:
            emit(self.conversation_selected, conversation_id)

    def _conversation(self, conversation_id: str) -> Conversation | None:
        return next((c for c in self._conversations if c.id == conversation_id), None)

    # --- rename, pin, delete -------------------------------------------------------------------

    def _menu(self, position: QPoint) -> None:
        item = self.tree.itemAt(position)
        conversation_id = item.data(0, ID_ROLE) if item is not None else None
        conversation = self._conversation(conversation_id) if conversation_id else None
        if item is None or conversation is None:
            return
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self._start_rename(item, conversation))
        menu.addAction("Unpin" if conversation.pinned else "Pin to top",
                       lambda: self.set_pinned(conversation.id, not conversation.pinned))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete(conversation.id))
        menu.exec(self.tree.viewport().mapToGlobal(position))

    def _start_rename(self, item: QTreeWidgetItem, conversation: Conversation) -> None:
        self.tree.blockSignals(True)
        item.setText(0, conversation.title or "New chat")
        self.tree.blockSignals(False)
        self.tree.editItem(item, 0)

    def _renamed(self, item: QTreeWidgetItem) -> None:
        conversation_id = item.data(0, ID_ROLE)
        title = item.text(0).strip()
        if conversation_id and title:
            self.rename(conversation_id, title)

    def rename(self, conversation_id: str, title: str) -> None:
        """Give a conversation a new title."""
        self._store.call(lambda s: s.update_conversation(conversation_id, title=title),
                         changes=True)

    def set_pinned(self, conversation_id: str, pinned: bool) -> None:
        """Pin a conversation to the top of the list, or unpin it."""
        self._store.call(lambda s: s.update_conversation(conversation_id, pinned=pinned),
                         changes=True)

    def delete(self, conversation_id: str) -> None:
        """Hide the conversation now and delete it after :data:`UNDO_MS` unless undone."""
        conversation = self._conversation(conversation_id)
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(UNDO_MS)
        timer.timeout.connect(lambda: self.commit_delete(conversation_id))
        self._pending_delete[conversation_id] = timer
        timer.start()
        self._fill(self._conversations)
        title = (conversation.title if conversation else None) or "New chat"
        emit(self.deleted, conversation_id, title)

    def undo_delete(self, conversation_id: str) -> None:
        """Bring back a conversation whose deletion is pending."""
        timer = self._pending_delete.pop(conversation_id, None)
        if timer is not None:
            timer.stop()
            timer.deleteLater()
            self._fill(self._conversations)

    def commit_delete(self, conversation_id: str) -> None:
        """Delete now a conversation whose deletion is pending."""
        timer = self._pending_delete.pop(conversation_id, None)
        if timer is None:
            return
        timer.stop()
        timer.deleteLater()
        self._store.call(lambda s: s.delete_conversation(conversation_id), changes=True)

    def commit_all(self) -> None:
        """Carry out every pending deletion (at shutdown)."""
        for conversation_id in list(self._pending_delete):
            self.commit_delete(conversation_id)

    def is_pending_delete(self, conversation_id: str) -> bool:
        """Whether this conversation is hidden, waiting to be deleted."""
        return conversation_id in self._pending_delete

    # --- search --------------------------------------------------------------------------------

    def focus_search(self) -> None:
        """Put the cursor in the search box (Ctrl+F)."""
        self.search_box.setFocus()
        self.search_box.selectAll()

    def _search(self) -> None:
        query = self.search_box.text().strip()
        if not query:
            self.stack.setCurrentWidget(self.tree)
            return
        typed = as_you_type(query)
        self._store.call(lambda s: s.search(typed, limit=50), self._show_hits)

    def _show_hits(self, hits: list[SearchHit]) -> None:
        if not self.search_box.text().strip():
            return
        hits = [h for h in hits if h.conversation_id not in self._pending_delete]
        self.results.clear()
        for hit in hits:
            item = QListWidgetItem()
            item.setData(ID_ROLE, hit.conversation_id)
            label = QLabel(f"<b>{escape(hit.conversation_title or 'New chat')}</b><br>"
                           f"<span>{snippet_html(hit.snippet)}</span>")
            label.setWordWrap(True)
            label.setContentsMargins(4, 4, 4, 4)
            item.setSizeHint(label.sizeHint())
            self.results.addItem(item)
            self.results.setItemWidget(item, label)
        self.stack.setCurrentWidget(self.results if hits else self.no_results)
        emit(self.search_results, len(hits))

    def _result_clicked(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(ID_ROLE)
        if conversation_id:
            emit(self.conversation_selected, conversation_id)
