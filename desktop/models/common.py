"""Small widget helpers shared by the Models screen's tabs."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QContextMenuEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QMenu,
    QPushButton,
    QTableWidget,
    QWidget,
)

from ..signals import emit


class ActionTable(QTableWidget):
    """A read-only, row-selecting table whose last column holds each row's buttons.

    The buttons are reachable without a mouse: Return (or Enter) presses the current row's first
    enabled button, and the context-menu key (or a right click) lists all of them.

    Signals:
        delete_pressed(int): the Delete key was pressed on this row.
    """

    delete_pressed = Signal(int)

    def __init__(self, columns: int, parent: QWidget | None = None) -> None:
        super().__init__(0, columns, parent)
        self.verticalHeader().hide()
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.setTabKeyNavigation(False)  # Tab leaves the table; arrows move between rows
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, columns):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)

    def set_headers(self, headers: list[str]) -> None:
        """The column titles (already translated)."""
        self.setHorizontalHeaderLabels(headers)

    def row_buttons(self, row: int) -> list[QPushButton]:
        """The visible buttons of ``row``, left to right."""
        holder = self.cellWidget(row, self.columnCount() - 1)
        if holder is None:
            return []
        return [b for b in holder.findChildren(QPushButton) if not b.isHidden()]

    def press_default(self, row: int) -> bool:
        """Press the first enabled button of ``row``; False when there is none."""
        for button in self.row_buttons(row):
            if button.isEnabled():
                button.click()
                return True
        return False

    def row_menu(self, row: int) -> QMenu:
        """A menu with one entry per button of ``row`` (disabled where the button is)."""
        menu = QMenu(self)
        for button in self.row_buttons(row):
            action = menu.addAction(button.text())
            action.setEnabled(button.isEnabled())
            action.setToolTip(button.toolTip())
            action.triggered.connect(button.click)
        menu.setToolTipsVisible(True)
        return menu

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's name)
        row = self.currentRow()
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if row >= 0 and enter and self.press_default(row):
            event.accept()
            return
        if row >= 0 and event.matches(QKeySequence.StandardKey.Delete):
            emit(self.delete_pressed, row)
            event.accept()
            return
        super().keyPressEvent(event)

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:  # noqa: N802 (Qt's name)
        if event.reason() == QContextMenuEvent.Reason.Mouse:
            row = self.rowAt(event.pos().y())
            position = event.globalPos()
        else:  # the context-menu key: the current row, at its first cell
            row = self.currentRow()
            rect = self.visualRect(self.model().index(row, 0)) if row >= 0 else None
            position = (self.viewport().mapToGlobal(rect.bottomLeft()) if rect is not None
                        else self.mapToGlobal(QPoint(0, 0)))
        if row < 0 or not self.row_buttons(row):
            super().contextMenuEvent(event)
            return
        self.setCurrentCell(row, 0)
        menu = self.row_menu(row)
        menu.exec(position)
        menu.deleteLater()


def table(columns: int) -> ActionTable:
    """A read-only, row-selecting table whose first column takes the spare width."""
    return ActionTable(columns)


def buttons(*items: QPushButton) -> QWidget:
    """Buttons in a row, for a table cell."""
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(4, 0, 4, 0)
    for button in items:
        row.addWidget(button)
    return holder
