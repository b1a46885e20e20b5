"""Walk a widget tree and collect every text a person can see or hear (screen readers).

Used to prove that, in Chinese, no English is left on screen: a text is *untranslated* when it is
an English source string of the catalog (shown as is), or when it holds a run of English words that
is not a name (product, library, format) or a unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from babel.messages.pofile import read_po
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QTableView,
    QTabWidget,
    QTextEdit,
    QToolBar,
    QTreeView,
    QWidget,
)

from mixtral_desk.core.i18n import LOCALE_DIR

#: Names and terms that stay in Latin letters in the Chinese interface.
KEPT = ("Mixtral Desk", "Hugging Face", "Flash Attention", "OpenAI", "llama.cpp",
        "llama-cpp-python", "hf-mirror.com", "huggingface.co", "English", "Mixtral",
        "GGUF", "gguf", "API", "GPU", "CPU", "RAM", "VRAM", "MoE", "KV", "CUDA", "Metal", "Hub",
        "token", "tokens", "tok/s", "Top-P", "Top-K", "Min-P", "Markdown", "JSON", "URL", "sha256",
        "Ctrl", "Shift", "Enter", "Esc", "Tab", "F2", "Del", "Delete", "Backspace",
        "GB", "MB", "KB", "GiB", "MiB", "KiB", "TB", "Qt", "PySide6", "Python", "MIT", "Apache",
        "Esc", "HTTP", "http", "https", "127.0.0.1", "localhost", "mixtral-desk", "serve",
        "--host", "--api-key", "KEY", "hf auth login", "--n-cpu-moe", "Q4_K_M", "q8_0", "q4_0",
        "f16")
#: Two or more English words in a row (a phrase or a sentence).
PHRASE = re.compile(r"[A-Za-z][a-z]+(?:[ \-][A-Za-z][a-z]+)+")


@dataclass(frozen=True)
class ShownText:
    """One text: where it is (widget class and object name), what kind, and the text."""

    where: str
    kind: str
    text: str


def plain(text: str) -> str:
    """Rich text as the words shown (tags and entities removed)."""
    if "<" in text and ">" in text:
        document = QTextDocument()
        document.setHtml(text)
        return document.toPlainText()
    return text


def _texts_of(widget: QWidget) -> Iterator[tuple[str, str]]:
    yield "tooltip", widget.toolTip()
    yield "accessible name", widget.accessibleName()
    if widget.isWindow():
        yield "window title", widget.windowTitle()
    if isinstance(widget, QLabel):
        yield "label", widget.text()
    if isinstance(widget, QAbstractButton):
        yield "button", widget.text()
    if isinstance(widget, QLineEdit):
        yield "placeholder", widget.placeholderText()
    if isinstance(widget, (QTextEdit, QPlainTextEdit)):
        yield "placeholder", widget.placeholderText()
    if isinstance(widget, QGroupBox):
        yield "group title", widget.title()
    if isinstance(widget, QComboBox):
        for index in range(widget.count()):
            yield "combo item", widget.itemText(index)
    if isinstance(widget, QTabWidget):
        for index in range(widget.count()):
            yield "tab", widget.tabText(index)
            yield "tab tooltip", widget.tabToolTip(index)
    if isinstance(widget, QToolBar):
        for action in widget.actions():
            yield "action", action.text()
            yield "action tooltip", action.toolTip()
    if isinstance(widget, (QTableView, QTreeView)) and widget.model() is not None:
        model = widget.model()
        for section in range(model.columnCount()):  # row headers are numbers
            value = model.headerData(section, Qt.Orientation.Horizontal)
            if isinstance(value, str):
                yield "header", value


def shown_texts(root: QWidget, *, skip: tuple[QWidget, ...] = ()) -> list[ShownText]:
    """Every non-empty text of ``root`` and its visible descendants (``skip``: subtrees of user
    content, such as the messages of a conversation)."""
    found = []
    widgets = [root, *root.findChildren(QWidget)]
    for widget in widgets:
        if not widget.isVisibleTo(root) and widget is not root:
            continue
        if any(widget is s or s.isAncestorOf(widget) for s in skip):
            continue
        where = f"{type(widget).__name__}({widget.objectName()})"
        for kind, text in _texts_of(widget):
            if text and text.strip():
                found.append(ShownText(where, kind, plain(text)))
    return found


def english_sources(language: str = "zh_CN") -> set[str]:
    """The catalog's English strings whose translation differs from them."""
    path = LOCALE_DIR / language / "LC_MESSAGES" / "mixtral_desk.po"
    with path.open("rb") as handle:
        catalog = read_po(handle)
    sources: set[str] = set()
    for message in catalog:
        ids = message.id if isinstance(message.id, (list, tuple)) else [message.id]
        strings = message.string if isinstance(message.string, (list, tuple)) \
            else [message.string]
        if message.id and strings and strings[0] != ids[0]:
            sources.update(plain(i) for i in ids if "{" not in i)
    return sources


def untranslated(texts: list[ShownText], sources: set[str]) -> list[ShownText]:
    """The texts that are English: a source string shown as is, or an English phrase."""
    bad = []
    for item in texts:
        text = item.text.strip()
        if text in sources:
            bad.append(item)
            continue
        rest = text
        for kept in sorted(KEPT, key=len, reverse=True):
            rest = rest.replace(kept, " ")
        rest = re.sub(r"\S+\.(gguf|json|sqlite3|log|py)\b|\S+/\S+|https?://\S+", " ", rest)
        if PHRASE.search(rest):
            bad.append(item)
    return bad
