"""The conversation list: grouped by date, pinned first; rename, pin, delete with undo; search.

Keyboard, in the list: Enter opens the conversation under the cursor, F2 renames it, Delete
deletes it (Ctrl+Z, or Undo on the notice, brings it back), the Menu key or Shift+F10 opens its
context menu. In the search box, Down moves to the results and Enter opens the first one; Enter
on a result opens it.

Why one module of about 500 lines: the list, the search results, the keys and the context menu
act on the same rows and the same pending deletions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape

from PySide6.QtCore import (
    QEvent,
    QItemSelectionModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QContextMenuEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.i18n import N_, ntr, tr
from mixtral_desk.core.store import SNIPPET_CLOSE, SNIPPET_OPEN, Conversation, SearchHit, Store

from ..bridge.store_bridge import StoreBridge
from ..i18n import keep_translated
from ..signals import emit

ID_ROLE = Qt.ItemDataRole.UserRole
UNDO_MS = 8000
SEARCH_DELAY_MS = 200
LIST_LIMIT = 500
ROW_PADDING = 6  # extra pixels of height per row (3 above, 3 below)
OPEN_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter)
DELETE_KEYS = (Qt.Key.Key_Delete, Qt.Key.Key_Backspace)  # Backspace: a Mac's "delete" key
#: Deletes a conversation for good: ``delete(store, conversation_id)``, run on the store thread.
Deleter = Callable[[Store, str], object]

MONTHS = (N_("January {year}"), N_("February {year}"), N_("March {year}"), N_("April {year}"),
          N_("May {year}"), N_("June {year}"), N_("July {year}"), N_("August {year}"),
          N_("September {year}"), N_("October {year}"), N_("November {year}"),
          N_("December {year}"))


def date_group(when: datetime, now: datetime | None = None) -> str:
    """"Today", "Yesterday", "Previous 7 days", "Previous 30 days" or the month and year
    (in the current language)."""
    local = when.astimezone()
    today = (now or datetime.now().astimezone()).date()
    days = (today - local.date()).days
    if days <= 0:
        return tr("Today")
    if days == 1:
        return tr("Yesterday")
    if days < 7:
        return tr("Previous 7 days")
    if days < 30:
        return tr("Previous 30 days")
    return tr(MONTHS[local.month - 1], year=local.year)


def relative_time(when: datetime, now: datetime | None = None) -> str:
    """How long ago ``when`` was: "just now", "5 minutes ago", "yesterday", … or the date."""
    local = when.astimezone()
    current = now or datetime.now().astimezone()
    seconds = int((current - local).total_seconds())
    days = (current.date() - local.date()).days
    if seconds < 60:
        return tr("just now")
    if seconds < 3600:
        return ntr("{count} minute ago", "{count} minutes ago", seconds // 60)
    if days <= 0:
        return ntr("{count} hour ago", "{count} hours ago", seconds // 3600)
    if days == 1:
        return tr("yesterday")
    if days < 30:
        return ntr("{count} day ago", "{count} days ago", days)
    return local.date().isoformat()


def snippet_html(snippet: str) -> str:
    """A search snippet with its «matches» in bold."""
    text = escape(snippet)
    return text.replace(SNIPPET_OPEN, "<b>").replace(SNIPPET_CLOSE, "</b>")


def hit_source(hit: SearchHit) -> str:
    """Where a search hit was found, in the current language (a result's small header)."""
    if hit.message_id is None:
        return tr("In the title")
    if hit.role == "user":
        return tr("In your message")
    return tr("In a reply")


class _RoomyRows(QStyledItemDelegate):
    """Rows a little taller than the font (a style sheet would pin the palette it was set with,
    so that a light ↔ dark switch would not reach the list)."""

    def sizeHint(self, option: QStyleOptionViewItem,  # noqa: N802 - Qt override
                 index: QModelIndex | QPersistentModelIndex) -> QSize:
        size = super().sizeHint(option, index)
        return QSize(size.width(), size.height() + ROW_PADDING)


class Sidebar(QWidget):
    """Lists conversations and search results.

    ``delete(store, conversation_id)`` deletes a conversation for good, on the store thread
    (the session's, which also drops its prompt cache states from a running engine); by default
    :func:`mixtral_desk.core.session.delete_conversation`.

    Signals:
        conversation_selected(str): the user picked this conversation id.
        new_requested(): the "New chat" button.
        deleted(str, str): a conversation (id, title) was hidden and will be deleted unless
            :meth:`undo_delete` is called within a few seconds.
        restored(str, str): a hidden conversation (id, title) was brought back.
        search_results(int): a search finished with this many hits (for tests and the UI).
    """

    conversation_selected = Signal(str)
    new_requested = Signal()
    deleted = Signal(str, str)
    restored = Signal(str, str)
    search_results = Signal(int)

    def __init__(self, store: StoreBridge, delete: Deleter | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store
        self._delete = delete
        self._conversations: list[Conversation] = []
        self._pending_delete: dict[str, QTimer] = {}
        self._current: str | None = None
        self._hits: list[SearchHit] = []
        self.setMinimumWidth(220)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 4, 8)
        self.new_button = QPushButton()
        self.new_button.clicked.connect(self.new_requested)
        self.search_box = QLineEdit()
        self.search_box.setClearButtonEnabled(True)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search_box)

        self.stack = QStackedWidget()
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(8)
        self.tree.setItemDelegate(_RoomyRows(self.tree))
        # Editing starts from F2 or the menu only (on macOS, Return would rename otherwise).
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._menu)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemChanged.connect(self._renamed)
        self.results = QListWidget()
        self.results.setWordWrap(True)
        self.results.itemClicked.connect(self._result_clicked)
        self.no_results = QLabel()
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
        for widget in (self.search_box, self.tree, self.results):
            widget.installEventFilter(self)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the texts in the current language; the list and the results are drawn again."""
        self.new_button.setText(tr("New chat"))
        self.new_button.setToolTip(tr("Start a new conversation ({keys})",
                                      keys=_native(QKeySequence.StandardKey.New)))
        self.search_box.setPlaceholderText(tr("Search conversations ({keys})",
                                              keys=_native("Ctrl+F")))
        self.search_box.setAccessibleName(tr("Search conversations"))
        self.tree.setAccessibleName(tr("Conversations"))
        self.tree.setAccessibleDescription(tr("Enter opens, F2 renames, Delete deletes, the Menu "
                                              "key shows more"))
        self.results.setAccessibleName(tr("Search results"))
        self.no_results.setText(tr("No matches."))
        self._fill(self._conversations)
        self._render_hits()

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
        # Keep the keyboard cursor where it was (on the next row when its item went away).
        cursor = self.tree.currentItem()
        cursor_id = cursor.data(0, ID_ROLE) if cursor is not None else None
        old_items = self._items()
        cursor_row = old_items.index(cursor) if cursor in old_items else -1
        self.tree.blockSignals(True)
        self.tree.clear()
        groups: dict[str, QTreeWidgetItem] = {}
        now = datetime.now().astimezone()
        for conversation in self.conversations:
            name = tr("Pinned") if conversation.pinned else date_group(conversation.updated_at,
                                                                         now)
            group = groups.get(name)
            if group is None:
                group = QTreeWidgetItem(self.tree, [name])
                group.setFlags(Qt.ItemFlag.ItemIsEnabled)
                font = group.font(0)
                font.setBold(True)
                font.setPointSizeF(font.pointSizeF() * 0.9)
                group.setFont(0, font)
                groups[name] = group
            title = conversation.title or tr("New chat")
            item = QTreeWidgetItem(group, [title])
            item.setData(0, ID_ROLE, conversation.id)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                          | Qt.ItemFlag.ItemIsEditable)
            item.setToolTip(0, tr("{title}\nUpdated {when}", title=title,
                                  when=relative_time(conversation.updated_at, now)))
            if conversation.id == self._current:
                item.setSelected(True)
        self.tree.expandAll()
        items = self._items()
        target = next((i for i in items if cursor_id and i.data(0, ID_ROLE) == cursor_id), None)
        if target is None and cursor_row >= 0 and items:
            target = items[min(cursor_row, len(items) - 1)]
        if target is not None:
            self.tree.setCurrentItem(target, 0, QItemSelectionModel.SelectionFlag.NoUpdate)
        self.tree.blockSignals(False)

    def show_changed(self, conversation: Conversation) -> None:
        """One conversation changed (a turn ended, a chat began): update its row in place,
        keeping the list's order (pinned first, then the newest), without reading the list
        again."""
        listed = [c for c in self._conversations if c.id != conversation.id]
        listed.append(conversation)
        listed.sort(key=lambda c: (c.pinned, c.updated_at, c.id), reverse=True)
        self._fill(listed[:LIST_LIMIT])

    def set_current(self, conversation_id: str | None) -> None:
        """Highlight the shown conversation (and put the keyboard cursor on it)."""
        self._current = conversation_id
        for item in self._items():
            shown = item.data(0, ID_ROLE) == conversation_id
            item.setSelected(shown)
            if shown:
                self.tree.setCurrentItem(item, 0, QItemSelectionModel.SelectionFlag.NoUpdate)

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

    # --- keyboard ------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        """The list's, the results' and the search box's keys (see the module's docstring)."""
        kind = event.type()
        if watched is self.tree and kind == QEvent.Type.ContextMenu \
                and isinstance(event, QContextMenuEvent) \
                and event.reason() == QContextMenuEvent.Reason.Keyboard:
            self.open_menu()
            return True
        if kind != QEvent.Type.KeyPress or not isinstance(event, QKeyEvent):
            return super().eventFilter(watched, event)
        if watched is self.tree:
            return self._tree_key(event)
        if watched is self.results and event.key() in OPEN_KEYS:
            item = self.results.currentItem()
            if item is not None:
                self._result_clicked(item)
            return True
        if watched is self.search_box:
            return self._search_key(event)
        return super().eventFilter(watched, event)

    def _tree_key(self, event: QKeyEvent) -> bool:
        key, modifiers = event.key(), event.modifiers()
        item = self.tree.currentItem()
        conversation_id = item.data(0, ID_ROLE) if item is not None else None
        plain = modifiers in (Qt.KeyboardModifier.NoModifier, Qt.KeyboardModifier.KeypadModifier)
        if key in OPEN_KEYS and plain:
            if conversation_id:
                emit(self.conversation_selected, conversation_id)
            return True
        if key == Qt.Key.Key_F2 and plain:
            conversation = self._conversation(conversation_id) if conversation_id else None
            if item is not None and conversation is not None:
                self._start_rename(item, conversation)
            return True
        if key in DELETE_KEYS and plain:
            if conversation_id:
                self.delete(conversation_id)
            return True
        if event.matches(QKeySequence.StandardKey.Undo):
            self.undo_last_delete()
            return True
        if key == Qt.Key.Key_Menu or (key == Qt.Key.Key_F10
                                      and modifiers == Qt.KeyboardModifier.ShiftModifier):
            self.open_menu()
            return True
        return False

    def _search_key(self, event: QKeyEvent) -> bool:
        showing_results = self.stack.currentWidget() is self.results and self.results.count()
        if event.key() == Qt.Key.Key_Down and not event.modifiers():
            target = self.results if showing_results else self.tree
            if target is self.results and self.results.currentRow() < 0:
                self.results.setCurrentRow(0)
            target.setFocus(Qt.FocusReason.TabFocusReason)
            return True
        if event.key() in OPEN_KEYS and showing_results:
            self._search_timer.stop()
            item = self.results.item(0)
            if item is not None:
                self._result_clicked(item)
            return True
        return False

    # --- rename, pin, delete -------------------------------------------------------------------

    def open_menu(self) -> None:
        """The context menu of the conversation under the keyboard cursor, beside it."""
        item = self.tree.currentItem()
        if item is None or not item.data(0, ID_ROLE):
            return
        rect = self.tree.visualItemRect(item)
        self._menu(QPoint(rect.left() + 16, rect.bottom()))

    def _menu(self, position: QPoint) -> None:
        item = self.tree.itemAt(position)
        conversation_id = item.data(0, ID_ROLE) if item is not None else None
        conversation = self._conversation(conversation_id) if conversation_id else None
        if item is None or conversation is None:
            return
        menu = QMenu(self)
        menu.addAction(tr("Open"), lambda: emit(self.conversation_selected, conversation.id))
        rename = menu.addAction(tr("Rename"), lambda: self._start_rename(item, conversation))
        rename.setShortcut(QKeySequence("F2"))  # shown in the menu; the list handles the key
        menu.addAction(tr("Unpin") if conversation.pinned else tr("Pin to top"),
                       lambda: self.set_pinned(conversation.id, not conversation.pinned))
        menu.addSeparator()
        delete = menu.addAction(tr("Delete"), lambda: self.delete(conversation.id))
        delete.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
        menu.exec(self.tree.viewport().mapToGlobal(position))

    def _start_rename(self, item: QTreeWidgetItem, conversation: Conversation) -> None:
        self.tree.blockSignals(True)
        item.setText(0, conversation.title or tr("New chat"))
        self.tree.blockSignals(False)
        self.tree.setCurrentItem(item, 0, QItemSelectionModel.SelectionFlag.NoUpdate)
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

    def _title_of(self, conversation_id: str) -> str:
        conversation = self._conversation(conversation_id)
        return (conversation.title if conversation else None) or tr("New chat")

    def delete(self, conversation_id: str) -> None:
        """Hide the conversation now and delete it after :data:`UNDO_MS` unless undone."""
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(UNDO_MS)
        timer.timeout.connect(lambda: self.commit_delete(conversation_id))
        self._pending_delete[conversation_id] = timer
        timer.start()
        self._fill(self._conversations)
        emit(self.deleted, conversation_id, self._title_of(conversation_id))

    def undo_delete(self, conversation_id: str) -> None:
        """Bring back a conversation whose deletion is pending."""
        timer = self._pending_delete.pop(conversation_id, None)
        if timer is not None:
            timer.stop()
            timer.deleteLater()
            self._fill(self._conversations)
            emit(self.restored, conversation_id, self._title_of(conversation_id))

    def undo_last_delete(self) -> None:
        """Bring back the conversation deleted last, if its deletion is still pending (Ctrl+Z)."""
        if self._pending_delete:
            self.undo_delete(next(reversed(self._pending_delete)))

    def commit_delete(self, conversation_id: str) -> None:
        """Delete now a conversation whose deletion is pending."""
        timer = self._pending_delete.pop(conversation_id, None)
        if timer is None:
            return
        timer.stop()
        timer.deleteLater()
        delete = self._delete
        if delete is None:
            from mixtral_desk.core.session import delete_conversation

            delete = delete_conversation
        # On the store thread: the SQL, then the conversation's prompt cache files.
        self._store.call(lambda s: delete(s, conversation_id), changes=True)

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
        self._store.call(lambda s: s.search(query, limit=50, as_you_type=True), self._show_hits)

    def _show_hits(self, hits: list[SearchHit]) -> None:
        if not self.search_box.text().strip():
            return
        self._hits = [h for h in hits if h.conversation_id not in self._pending_delete]
        self._render_hits()
        self.stack.setCurrentWidget(self.results if self._hits else self.no_results)
        emit(self.search_results, len(self._hits))

    def _render_hits(self) -> None:
        self.results.clear()
        for hit in self._hits:
            title = hit.conversation_title or tr("New chat")
            source = hit_source(hit)
            item = QListWidgetItem()
            item.setData(ID_ROLE, hit.conversation_id)
            plain_snippet = hit.snippet.replace(SNIPPET_OPEN, "").replace(SNIPPET_CLOSE, "")
            item.setData(Qt.ItemDataRole.AccessibleTextRole, f"{title} — {plain_snippet}")
            item.setData(Qt.ItemDataRole.AccessibleDescriptionRole, source)
            label = QLabel(f"<b>{escape(title)}</b><br>"
                           f"<small>{escape(source)}</small><br>"
                           f"<span>{snippet_html(hit.snippet)}</span>")
            label.setWordWrap(True)
            label.setContentsMargins(4, 4, 4, 4)
            item.setSizeHint(label.sizeHint())
            self.results.addItem(item)
            self.results.setItemWidget(item, label)
        self.results.setAccessibleDescription(
            ntr("{count} match", "{count} matches", len(self._hits)))

    def _result_clicked(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(ID_ROLE)
        if conversation_id:
            emit(self.conversation_selected, conversation_id)


def _native(keys: QKeySequence.StandardKey | str) -> str:
    """A key sequence as the platform writes it ("Ctrl+N", "⌘N")."""
    return QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText)
