"""The Models screen's Hub tab: search the Hub, open a repository, see per quant whether it fits
this machine, and download it.

A search box (which also takes ``owner/name``, ``owner/name:QUANT`` and Hub URLs), a sort order,
then a results table (downloads, likes, updated, licence, parameters) with "More results"; opening
a repository shows its licence (with the page where a gated one is accepted) and its quant table
(file, size, bits per weight, fit verdict). Verdicts are read only for the rows on screen, as
they scroll into view (:class:`~..bridge.hub_bridge.HubBridge`). While anything is under way a
busy bar and Stop are shown. In Offline mode the browser is hidden behind a note; the Hub
settings (token and mirror) below it stay editable.

Signals:
    download_requested(str, object, object): repository, the entry's files (a tuple) and the
        revision (None: main).
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.hub.references import (
    HubReferenceError,
    looks_like_reference,
    parse_reference,
)
from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.units import format_bytes, format_count, format_parameters

from ..errors import ErrorSink
from ..i18n import keep_translated
from ..signals import emit
from .common import ActionTable, buttons, table

if TYPE_CHECKING:
    from mixtral_desk.core.hub.browse import RepoFiles, SearchPage
    from mixtral_desk.core.hub.fit import FitVerdict

    from ..bridge.hub_bridge import HubBridge

OFFLINE_HUB = N_("Offline mode is on: searching the Hub needs the network. Turn it off in "
                 "Settings → Network to browse the Hub; the token and mirror below can still be "
                 "changed.")
SORTS = (("downloads", N_("Most downloaded")), ("likes", N_("Most liked")),
         ("trending", N_("Trending")), ("updated", N_("Recently updated")))
RESULTS, REPO = range(2)


class HubTab(QWidget):
    """The Hub browser above the Hub settings form ``settings`` (see the module docstring)."""

    download_requested = Signal(str, object, object)

    def __init__(self, bridge: HubBridge, sink: ErrorSink, settings: QWidget,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge, self.sink = bridge, sink
        self.offline = False
        self.page: SearchPage | None = None
        self.repo: RepoFiles | None = None
        self.verdicts: dict[str, FitVerdict] = {}
        self._asked: set[str] = set()  # entries whose verdict was asked for
        self._wanted_quant: str | None = None

        column = QVBoxLayout(self)
        self.offline_label = QLabel()
        self.offline_label.setWordWrap(True)
        column.addWidget(self.offline_label)
        self.browser = QWidget()
        column.addWidget(self.browser, 1)
        column.addWidget(settings)
        column.addStretch(0)  # takes the room only while the browser is hidden (Offline mode)
        inner = QVBoxLayout(self.browser)
        inner.setContentsMargins(0, 0, 0, 0)
        bar = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setClearButtonEnabled(True)
        self.query.returnPressed.connect(self.search)
        self.sort = QComboBox()
        for key, _ in SORTS:
            self.sort.addItem("", key)
        self.search_button = QPushButton()
        self.search_button.clicked.connect(self.search)
        self.stop_button = QPushButton()
        self.stop_button.clicked.connect(self.stop)
        self.spinner = QProgressBar()
        self.spinner.setRange(0, 0)
        self.spinner.setMaximumWidth(90)
        self.spinner.setTextVisible(False)
        for widget in (self.query, self.sort, self.search_button, self.spinner,
                       self.stop_button):
            bar.addWidget(widget, 1 if widget is self.query else 0)
        inner.addLayout(bar)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.status.setOpenExternalLinks(True)
        inner.addWidget(self.status)
        self.stack = QStackedWidget()
        inner.addWidget(self.stack, 1)
        self.stack.addWidget(self._build_results())
        self.stack.addWidget(self._build_repo())

        bridge.searched.connect(self._show_page)
        bridge.repo_loaded.connect(self._show_repo)
        bridge.verdict.connect(self._show_verdict)
        bridge.failed.connect(self._show_error)
        bridge.busy_changed.connect(self._busy)
        self._busy(False)
        keep_translated(self.retranslate)

    def _build_results(self) -> QWidget:
        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        self.results = table(8)
        column.addWidget(self.results, 1)
        self.more_button = QPushButton()
        self.more_button.clicked.connect(self.more)
        column.addWidget(self.more_button, 0, Qt.AlignmentFlag.AlignRight)
        return holder

    def _build_repo(self) -> QWidget:
        holder = QWidget()
        column = QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.back_button = QPushButton()
        self.back_button.clicked.connect(self.back)
        self.repo_title = QLabel()
        self.repo_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.repo_title.setOpenExternalLinks(True)
        self.repo_title.setWordWrap(True)
        top.addWidget(self.back_button)
        top.addWidget(self.repo_title, 1)
        column.addLayout(top)
        self.quants: ActionTable = table(6)
        header = self.quants.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.quants.verticalScrollBar().valueChanged.connect(lambda _: self._check_visible())
        column.addWidget(self.quants, 1)
        return holder

    def retranslate(self) -> None:
        """Set every text in the current language."""
        self.offline_label.setText(tr(OFFLINE_HUB))
        self.query.setPlaceholderText(tr("Search GGUF models, or paste owner/name, "
                                         "owner/name:Q4_K_M or a Hub link"))
        self.query.setAccessibleName(tr("Search the Hub"))
        for i, (_, text) in enumerate(SORTS):
            self.sort.setItemText(i, tr(text))
        self.sort.setAccessibleName(tr("Sort order"))
        self.search_button.setText(tr("Search"))
        self.stop_button.setText(tr("Stop"))
        self.spinner.setAccessibleName(tr("Working…"))
        self.more_button.setText(tr("More results"))
        self.back_button.setText(tr("← Results"))
        self.results.set_headers([tr("Repository"), tr("Downloads"), tr("Likes"), tr("Updated"),
                                  tr("Licence"), tr("Parameters"), tr("Architecture"), ""])
        self.quants.set_headers([tr("File"), tr("Quant"), tr("Size"), tr("Bits/weight"),
                                 tr("Fits this machine?"), ""])
        if self.page is not None:
            self._fill_results()
        if self.repo is not None:
            self._fill_repo()

    # --- offline mode --------------------------------------------------------------------------

    def set_offline(self, offline: bool) -> None:
        """Hide the browser behind a note in Offline mode (and stop what is under way)."""
        self.offline = offline
        self.offline_label.setVisible(offline)
        self.browser.setVisible(not offline)
        if offline:
            self.bridge.cancel()

    # --- actions -------------------------------------------------------------------------------

    def search(self) -> None:
        """Search for the text in the box, or open the repository it names."""
        text = self.query.text().strip()
        if self.offline:
            return
        if looks_like_reference(text):
            try:
                reference = parse_reference(text)
            except HubReferenceError as error:
                self._say(str(error))
                return
            self._wanted_quant = reference.quant or (reference.filename or None)
            self.open_repo(reference.repo_id, reference.revision)
            return
        self._say(tr("Searching…"))
        self.bridge.search(text, self.sort.currentData())

    def more(self) -> None:
        """Show the next page of results."""
        if self.page is not None and self.page.has_more:
            self.bridge.search(self.page.query, self.page.sort, self.page.page + 1)

    def open_repo(self, repo_id: str, revision: str | None = None) -> None:
        """Show a repository's quants (read in the background)."""
        self._say(tr("Opening {repo}…", repo=repo_id))
        self.bridge.open_repo(repo_id, revision)

    def back(self) -> None:
        """Back to the results (reading verdicts stops)."""
        self.bridge.cancel()
        self.repo = None
        self.stack.setCurrentIndex(RESULTS)
        self._say("")

    def stop(self) -> None:
        """Stop the search, listing or verdicts under way (rows without a verdict are read
        again when they next scroll into view)."""
        self.bridge.cancel()
        self._asked.clear()
        if self.repo is not None:
            for row, entry in enumerate(self.repo.entries):
                self.quants.setItem(row, 4, self._verdict_item(entry.name, entry.kind))
        self._say(tr("Stopped."))

    def _busy(self, busy: bool) -> None:
        self.spinner.setVisible(busy)
        self.stop_button.setVisible(busy)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def _show_error(self, error: BaseException) -> None:
        if isinstance(error, DeskError):
            self._say(escape(str(error)))
        else:
            self._say("")
            self.sink.report(error, tr("while browsing the Hub"))

    # --- results -------------------------------------------------------------------------------

    def _show_page(self, page: SearchPage) -> None:
        if self.page is not None and page.page > 0 and page.query == self.page.query:
            from dataclasses import replace

            page = replace(page, repos=self.page.repos + page.repos)
        self.page = page
        self.stack.setCurrentIndex(RESULTS)
        self._fill_results()
        self._say("" if page.repos else tr("No GGUF repository matches “{query}”.",
                                           query=escape(page.query)))

    def _fill_results(self) -> None:
        assert self.page is not None
        self.results.setRowCount(len(self.page.repos))
        for row, repo in enumerate(self.page.repos):
            cells = [repo.repo_id, format_count(repo.downloads), str(repo.likes),
                     repo.updated.date().isoformat() if repo.updated else "–",
                     tr("{licence} (gated)", licence=repo.licence or "–") if repo.gated
                     else repo.licence or "–",
                     format_parameters(repo.parameters),
                     repo.architecture or "–"]
            for column, text in enumerate(cells):
                self.results.setItem(row, column, QTableWidgetItem(text))
            button = QPushButton(tr("Open"))
            button.setAccessibleName(tr("Open {repo}", repo=repo.repo_id))
            button.clicked.connect(lambda _=False, r=repo.repo_id: self.open_repo(r))
            self.results.setCellWidget(row, 7, buttons(button))
        self.more_button.setVisible(self.page.has_more)

    # --- a repository --------------------------------------------------------------------------

    def _show_repo(self, files: RepoFiles) -> None:
        self.repo = files
        self.verdicts, self._asked = {}, set()
        self.stack.setCurrentIndex(REPO)
        self._say("")
        self._fill_repo()
        self._check_visible()

    def _fill_repo(self) -> None:
        files = self.repo
        assert files is not None
        licence = escape(files.licence or tr("not stated"))
        title = tr("<b>{repo}</b> · licence {licence}", repo=escape(files.repo_id),
                   licence=licence)
        if files.gated:
            title += "<br>" + tr("Gated: <a href=\"{url}\">accept the licence on the Hub</a>, "
                                 "then save a token below.", url=escape(files.url, quote=True))
        if not files.models:
            title += "<br>" + tr("This repository holds no GGUF model file.")
        self.repo_title.setText(title)
        self.quants.setRowCount(len(files.entries))
        for row, entry in enumerate(files.entries):
            bpw = entry.bits_per_weight(files.parameters)
            name = entry.name + (tr(" ({count} parts)", count=entry.parts)
                                 if entry.parts > 1 else "")
            cells = [name, entry.quant, format_bytes(entry.size),
                     f"{bpw:.2f}" if bpw and entry.kind == "model" else "–"]
            for column, text in enumerate(cells):
                self.quants.setItem(row, column, QTableWidgetItem(text))
            self.quants.setItem(row, 4, self._verdict_item(entry.name, entry.kind))
            if entry.kind == "model":
                button = QPushButton(tr("Download"))
                button.setAccessibleName(tr("Download {name}", name=entry.name))
                button.clicked.connect(lambda _=False, e=entry: emit(
                    self.download_requested, files.repo_id, e.files, files.revision))
                self.quants.setCellWidget(row, 5, buttons(button))
            else:
                self.quants.removeCellWidget(row, 5)
        wanted = self._wanted_quant
        if wanted is not None:
            for row, entry in enumerate(files.entries):
                if wanted.upper() == entry.quant or wanted in entry.files:
                    self.quants.selectRow(row)
                    if (item := self.quants.item(row, 0)) is not None:
                        self.quants.scrollToItem(item)

    def _verdict_item(self, name: str, kind: str) -> QTableWidgetItem:
        """The verdict cell: the verdict in a line (a header that could not be read says so
        briefly, the reason in the tooltip), or what is under way."""
        verdict = self.verdicts.get(name)
        if kind == "mmproj":
            text = tooltip = tr("vision projector, not a model")
        elif verdict is None:
            text = tooltip = tr("reading header…") if name in self._asked else ""
        else:
            tooltip = verdict.summary()
            text = tr("unknown (header not readable)") if verdict.problem is not None \
                else tooltip
        item = QTableWidgetItem(text)
        item.setToolTip(tooltip)
        return item

    def _check_visible(self) -> None:
        """Ask for the verdicts of the model rows now on screen that have none yet."""
        files = self.repo
        if files is None or self.offline:
            return
        viewport = self.quants.viewport().rect()
        todo = []
        for row, entry in enumerate(files.entries):
            top = self.quants.rowViewportPosition(row)
            visible = top + self.quants.rowHeight(row) >= 0 and top <= viewport.height()
            if visible and entry.kind == "model" and entry.name not in self._asked:
                self._asked.add(entry.name)
                todo.append(entry)
                self.quants.setItem(row, 4, self._verdict_item(entry.name, entry.kind))
        if todo:
            self.bridge.check(files.repo_id, files.commit, todo)

    def _show_verdict(self, commit: str, name: str, verdict: FitVerdict) -> None:
        files = self.repo
        if files is None or files.commit != commit:
            return
        self.verdicts[name] = verdict
        for row, entry in enumerate(files.entries):
            if entry.name == name:
                self.quants.setItem(row, 4, self._verdict_item(name, entry.kind))

    def showEvent(self, event: object) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)  # type: ignore[arg-type]
        self._check_visible()

    def resizeEvent(self, event: object) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)  # type: ignore[arg-type]
        self._check_visible()
