"""The first-run screen: what the app does, the model that fits this machine, the one step to take.

The recommendation comes from the offload planner (:mod:`mixtral_desk.core.recommend`), computed
by the window in a worker and handed over with :meth:`Welcome.show_recommendation`. Where the
system speaks Chinese, the screen also offers the Hub mirror (hf-mirror.com), since the Hub itself
is slow or unreachable from mainland China.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.units import format_bytes, format_memory

from .i18n import keep_translated
from .signals import emit

if TYPE_CHECKING:
    from mixtral_desk.core.catalog import CatalogEntry
    from mixtral_desk.core.recommend import Recommendation

class Welcome(QWidget):
    """Shown while there is no model and no conversation.

    Signals:
        browse_requested(): go to the Models page.
        open_requested(): open a .gguf file already on disk.
        download_requested(object): download the recommended :class:`CatalogEntry`.
        mirror_chosen(bool): the user turned the Hub mirror on (True) or off (False).
    """

    browse_requested = Signal()
    open_requested = Signal()
    download_requested = Signal(object)
    mirror_chosen = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._recommendation: Recommendation | None = None
        self._recommendation_known = False
        self._ram_available: int | None = None
        outer = QVBoxLayout(self)
        outer.addStretch(2)
        box = QWidget()
        box.setMaximumWidth(640)
        column = QVBoxLayout(box)
        self.title = QLabel()
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.recommendation = QLabel()
        self.recommendation.setWordWrap(True)
        self.recommendation.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.recommendation.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton()
        self.download_button.setMinimumHeight(34)
        self.download_button.setVisible(False)
        self.download_button.clicked.connect(self._download_clicked)
        self.mirror = QCheckBox()
        self.mirror.setVisible(False)
        self.mirror.toggled.connect(lambda on: emit(self.mirror_chosen, on))
        column.addWidget(self.title)
        column.addWidget(self.text)
        column.addSpacing(12)
        column.addWidget(self.recommendation)
        download_row = QHBoxLayout()
        download_row.addStretch(1)
        download_row.addWidget(self.download_button)
        download_row.addStretch(1)
        column.addLayout(download_row)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.browse_button = QPushButton()
        self.browse_button.setDefault(True)
        self.browse_button.setMinimumHeight(34)
        self.browse_button.clicked.connect(self.browse_requested)
        self.open_button = QPushButton()
        self.open_button.setMinimumHeight(34)
        self.open_button.clicked.connect(self.open_requested)
        buttons.addWidget(self.browse_button)
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        column.addSpacing(12)
        column.addLayout(buttons)
        mirror_row = QHBoxLayout()
        mirror_row.addStretch(1)
        mirror_row.addWidget(self.mirror)
        mirror_row.addStretch(1)
        column.addSpacing(8)
        column.addLayout(mirror_row)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(box, 3)
        row.addStretch(1)
        outer.addLayout(row)
        outer.addStretch(3)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set the texts in the current language."""
        self.title.setText("<h1>{}</h1>".format(tr("Welcome to Mixtral Desk")))
        self.text.setText(tr(
            "Chat with Mixtral and other open models that run entirely on this computer — "
            "private, and offline once a model is here.<br><br>"
            "<b>First, get a model.</b> Pick one that fits this machine from the catalog "
            "(the download can be paused and resumed), or open a <tt>.gguf</tt> file you "
            "already have."))
        self.browse_button.setText(tr("Browse models"))
        self.open_button.setText(tr("Open a .gguf file…"))
        self.mirror.setText(tr("Download through the mirror hf-mirror.com (often faster from "
                               "mainland China)"))
        self._render_recommendation()

    def offer_mirror(self, checked: bool) -> None:
        """Show the mirror choice (for a Chinese-speaking system), ticked when it is in use."""
        self.mirror.blockSignals(True)
        self.mirror.setChecked(checked)
        self.mirror.blockSignals(False)
        self.mirror.setVisible(True)

    def show_recommendation(self, recommendation: Recommendation | None,
                            ram_available: int | None = None) -> None:
        """Show the planner's pick for this machine (``None``: nothing in the catalog fits the
        ``ram_available`` bytes)."""
        self._recommendation = recommendation
        self._recommendation_known = True
        self._ram_available = ram_available
        self._render_recommendation()

    def _render_recommendation(self) -> None:
        rec = self._recommendation
        self.download_button.setVisible(rec is not None)
        if not self._recommendation_known:
            self.recommendation.setText("")
            return
        if rec is None:
            self.recommendation.setText(tr(
                "No model in the catalog fits the memory available now ({memory}). Close other "
                "programs, or open a smaller .gguf file.",
                memory=format_memory(self._ram_available)))
            return
        entry = rec.entry
        values = {"name": entry.name, "size": format_bytes(entry.size_bytes),
                  "speed": f"{rec.plan.tokens_per_s:.0f}"}
        if rec.readable:
            summary = tr("<b>Recommended for this machine:</b> {name} ({size}), about {speed} "
                         "tokens per second here.", **values)
        else:
            summary = tr("<b>Recommended for this machine:</b> {name} ({size}), about {speed} "
                         "tokens per second here. It is the fastest that fits; replies will "
                         "come slowly.", **values)
        self.recommendation.setText(summary)
        self.download_button.setText(tr("Download {quant}", quant=entry.quant))
        self.download_button.setToolTip(tr("Download {name} ({size})", name=entry.name,
                                           size=format_bytes(entry.size_bytes)))

    def _download_clicked(self) -> None:
        if self._recommendation is not None:
            entry: CatalogEntry = self._recommendation.entry
            emit(self.download_requested, entry)
