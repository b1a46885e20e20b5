"""Small widget helpers shared by the Models screen's tabs."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QHeaderView, QPushButton, QTableWidget, QWidget


def table(headers: list[str]) -> QTableWidget:
    """A read-only, row-selecting table whose first column takes the spare width."""
    widget = QTableWidget(0, len(headers))
    widget.setHorizontalHeaderLabels(headers)
    widget.verticalHeader().hide()
    widget.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    widget.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    widget.setAlternatingRowColors(True)
    header = widget.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    for column in range(1, len(headers)):
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    return widget


def buttons(*items: QPushButton) -> QWidget:
    """Buttons in a row, for a table cell."""
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(4, 0, 4, 0)
    for button in items:
        row.addWidget(button)
    return holder
