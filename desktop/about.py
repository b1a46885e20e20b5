"""The About dialog: the version, and the licences of everything a bundle ships.

The licence texts come from the ``licenses`` folder: inside a frozen bundle it sits next to the
code (``sys._MEIPASS/licenses``: packaging/licenses plus every shipped Python distribution's own
licence files under ``third-party/``); in a source checkout it is ``packaging/licenses``. In a
plain ``pip install`` neither exists, and the dialog lists the installed distributions'
licence files from their metadata instead.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from html import escape
from importlib import metadata
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QIcon
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mixtral_desk import __version__
from mixtral_desk.core.i18n import N_, tr

from .i18n import keep_translated

THIRD_PARTY = "third-party"
#: The licence of a distribution whose metadata names none in a line (translated where shown).
SEE_LICENCE_FILES = N_("see its licence files")
_LICENCE_NAME = re.compile(r"^(licen[cs]e|copying|notice|authors)", re.IGNORECASE)


@dataclass(frozen=True)
class Component:
    """One entry of the list: what it is, its licence and where the licence text is."""

    name: str
    licence: str
    version: str = ""
    texts: tuple[Path, ...] = ()
    url: str = ""
    note: str = ""

    def licence_label(self) -> str:
        """The licence in the current language (an SPDX expression stays as it is)."""
        return tr(SEE_LICENCE_FILES) if self.licence == SEE_LICENCE_FILES else self.licence

    def text(self) -> str:
        """The licence text(s) with a short header, or a line saying where to find them.

        The header is in the current language; the licence texts are shown as they are.
        """
        head = [f"{self.name} {self.version}".strip(),
                tr("Licence: {licence}", licence=self.licence_label())]
        if self.url:
            head.append(self.url)
        if self.note:
            head += ["", self.note]
        parts = ["\n".join(head)]
        for path in self.texts:
            try:
                body = path.read_text(encoding="utf-8", errors="replace")
                parts.append(f"--- {path.name} ---\n{body}")
            except OSError as error:
                parts.append("--- " + tr("{file}: cannot be read ({reason})", file=path.name,
                                         reason=error.strerror) + " ---")
        if not self.texts:
            parts.append(tr("(The licence text is in this package's distribution metadata.)"))
        return "\n\n".join(parts)


def licence_dir() -> Path | None:
    """The folder with components.toml and the licence texts, or ``None`` (plain install)."""
    folder = _resource_dir("licenses")
    return folder if folder is not None and (folder / "components.toml").is_file() else None


def _resource_dir(name: str) -> Path | None:
    """``name`` (``licenses``, ``icons``) in the bundle, else in packaging/ of a source checkout."""
    bundle = getattr(sys, "_MEIPASS", None)
    candidates = [Path(bundle) / name] if bundle else []
    candidates.append(Path(__file__).resolve().parents[1] / "packaging" / name)
    return next((c for c in candidates if c.is_dir()), None)


def app_icon() -> QIcon:
    """The app's icon in every size there is (an empty icon in a plain pip install)."""
    icon = QIcon()
    folder = _resource_dir("icons")
    if folder is not None:
        for png in sorted(folder.glob("mixtral-desk-*.png")):
            icon.addFile(str(png))
    return icon


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _third_party_folder(folder: Path, name: str) -> Path | None:
    if not (folder / THIRD_PARTY).is_dir():
        return None
    key = _key(name)
    return next((d for d in sorted((folder / THIRD_PARTY).iterdir())
                 if d.name.rsplit("-", 1)[0] == key), None)


def components(folder: Path | None = None) -> list[Component]:
    """The headline components (llama.cpp, Qt, Python, …) from ``components.toml``."""
    folder = folder if folder is not None else licence_dir()
    if folder is None:
        return []
    with (folder / "components.toml").open("rb") as file:
        entries = tomllib.load(file).get("component", [])
    found = []
    for entry in entries:
        texts: tuple[Path, ...] = ()
        if entry["file"] == THIRD_PARTY:
            sub = _third_party_folder(folder, entry.get("dist", entry["name"]))
            if sub is not None:
                texts = tuple(sorted(p for p in sub.rglob("*") if p.is_file()))
            else:  # a source checkout: the installed distribution's own files
                texts = _installed_licence_files(entry.get("dist", entry["name"]))
        else:
            texts = (folder / entry["file"],)
        found.append(Component(name=entry["name"], licence=entry["licence"],
                               version=_version(entry["dist"]) if "dist" in entry else "",
                               texts=texts, url=entry.get("url", ""),
                               note=entry.get("note", "")))
    return found


def third_party(folder: Path | None = None) -> list[Component]:
    """Every other shipped Python distribution, with its own licence files."""
    folder = folder if folder is not None else licence_dir()
    found = []
    if folder is not None and (folder / THIRD_PARTY).is_dir():
        for sub in sorted((folder / THIRD_PARTY).iterdir()):
            name, _, version = sub.name.rpartition("-")
            found.append(Component(name=name, version=version, licence=_licence_of(name),
                                   texts=tuple(sorted(p for p in sub.rglob("*") if p.is_file()))))
        return found
    for dist in sorted(_shipped_distributions(), key=lambda d: d.metadata["Name"].lower()):
        found.append(Component(name=dist.metadata["Name"], version=dist.version,
                               licence=_licence_expression(dist), texts=_licence_files(dist)))
    return found


def _shipped_distributions(root: str = "mixtral-desk") -> list[metadata.Distribution]:
    """``root`` and what it needs, installed (requirements behind an extra are left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        key = _key(todo.pop())
        if key in seen:
            continue
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for requirement in dist.requires or []:
            name = re.match(r"[A-Za-z0-9._-]+", requirement)
            if name and "extra ==" not in requirement:
                todo.append(name.group(0))
    return list(seen.values())


def _licence_files(dist: metadata.Distribution) -> tuple[Path, ...]:
    files = [Path(str(dist.locate_file(f))) for f in dist.files or []
             if f.parts and f.parts[0].endswith(".dist-info")
             and ("licenses" in f.parts[1:-1] or _LICENCE_NAME.match(f.name))]
    return tuple(p for p in files if p.is_file())


def _installed_licence_files(name: str) -> tuple[Path, ...]:
    try:
        return _licence_files(metadata.distribution(name))
    except metadata.PackageNotFoundError:
        return ()


def _licence_of(name: str) -> str:
    try:
        return _licence_expression(metadata.distribution(name))
    except metadata.PackageNotFoundError:
        return SEE_LICENCE_FILES


def _licence_expression(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    expression = meta["License-Expression"] or meta["License"] or ""
    if expression and len(expression) < 80 and "\n" not in expression:
        return str(expression)
    return SEE_LICENCE_FILES


class AboutDialog(QDialog):
    """Version, description, and a list of components; the selected one's licence is shown.

    Signals: none (modal; ``exec()`` it).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.resize(820, 560)
        folder = licence_dir()
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)
        self.list = QListWidget()
        self.list.setObjectName("about-components")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self._entries = components(folder)
        others = third_party(folder)
        headline = {_key(c.name) for c in self._entries}
        self._entries += [c for c in others if _key(c.name) not in headline]
        for index in range(len(self._entries)):
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.list.addItem(item)
        self.list.currentRowChanged.connect(self._show)
        splitter = QSplitter()
        splitter.addWidget(self.list)
        splitter.addWidget(self.text)
        splitter.setSizes([300, 520])
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(splitter, 1)
        layout.addWidget(buttons)
        keep_translated(self.retranslate)
        if self._entries:
            self.list.setCurrentRow(0)

    def retranslate(self) -> None:
        """Set the texts in the current language (the licence texts themselves stay as they are)."""
        self.setWindowTitle(tr("About Mixtral Desk"))
        self.header.setText(
            f"<h2>Mixtral Desk {escape(__version__)}</h2><p>"
            + tr("Run Mixtral-8x7B-Instruct and other GGUF models on your own machine, offline."
                 "<br>Made with llama.cpp, Qt for Python and the open-source components below; "
                 "select one to read its licence.")
            + "</p>")
        self.list.setAccessibleName(tr("Components"))
        self.list.setAccessibleDescription(tr("Select a component to read its licence"))
        self.text.setAccessibleName(tr("Licence text"))
        for row, component in enumerate(self._entries):
            item = self.list.item(row)
            if item is not None:
                item.setText(f"{component.name} {component.version}".strip()
                             + f" — {component.licence_label()}")
        self._show(self.list.currentRow())

    def entries(self) -> list[Component]:
        """What the list shows, in order."""
        return list(self._entries)

    def _show(self, row: int) -> None:
        if 0 <= row < len(self._entries):
            self.text.setPlainText(self._entries[row].text())
            self.text.moveCursor(self.text.textCursor().MoveOperation.Start)
