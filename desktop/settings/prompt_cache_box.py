"""The Settings page's prompt cache group: the disk budget (Automatic / Off / a size), what the
cache folder holds now, and Clear cache.

Measuring and clearing the folder read and delete files, so both run on the window's ``io`` task
queue, never on the GUI thread (:mod:`mixtral_desk.core.session.cache_folder` does the work).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.i18n import N_, ntr, tr
from mixtral_desk.core.units import format_bytes, format_memory

from ..bridge.tasks import TaskQueue
from ..i18n import keep_translated
from ..signals import emit

if TYPE_CHECKING:  # pydantic and the engine package load after the first paint
    from mixtral_desk.core.session.cache_folder import CacheReport

T = TypeVar("T")

#: The budget's modes and their names, in the combo box's order.
MODES = {"auto": N_("Automatic"), "off": N_("Off"), "limit": N_("Up to")}
#: The size a limit starts from when none was set (the automatic budget's ceiling).
DEFAULT_LIMIT_GIB = 8.0


def _attempt(work: Callable[[], T]) -> Callable[[], T | DeskError]:
    """``work`` with a known error returned instead of raised (shown in the group); anything
    else still raises and goes to the error sink."""
    def task() -> T | DeskError:
        try:
            return work()
        except DeskError as error:
            return error
    return task


def _measure() -> CacheReport:
    from mixtral_desk.core.session.cache_folder import cache_report
    from mixtral_desk.core.settings import LoadDefaults

    return cache_report(LoadDefaults(prompt_cache_gib=None))  # its budget: the automatic one


def _clear() -> tuple[int, CacheReport]:
    from mixtral_desk.core.session.cache_folder import clear_cache

    return clear_cache(), _measure()


class PromptCacheBox(QGroupBox):
    """The prompt cache's budget setting, its size now and Clear cache.

    Signals:
        measured(object): the :class:`~mixtral_desk.core.session.cache_folder.CacheReport` just
            read (after a measurement or a clear), or the DeskError that stopped it.
        cleared(int): Clear cache freed this many bytes.
    """

    measured = Signal(object)
    cleared = Signal(int)

    def __init__(self, io: TaskQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._io = io
        self._report: CacheReport | DeskError | None = None
        self._freed: int | None = None
        self._working = False

        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        row = QHBoxLayout()
        self.mode = QComboBox()
        for value in MODES:
            self.mode.addItem("", value)
        self.limit = QDoubleSpinBox(decimals=1, minimum=0.1, maximum=1024.0, singleStep=1.0)
        self.limit.setValue(DEFAULT_LIMIT_GIB)
        self.limit.setMinimumWidth(120)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        row.addWidget(self.mode)
        row.addWidget(self.limit)
        row.addStretch(1)
        self.mode_label = QLabel()
        self.mode_label.setBuddy(self.mode)
        form.addRow(self.mode_label, row)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.note.setMinimumWidth(420)
        form.addRow("", self.note)
        self.usage = QLabel()
        self.usage.setWordWrap(True)
        self.usage.setMinimumWidth(420)
        self.usage_label = QLabel()
        form.addRow(self.usage_label, self.usage)
        self.clear_button = QPushButton()
        self.clear_button.clicked.connect(self.clear)
        self.usage_label.setBuddy(self.clear_button)
        button_row = QHBoxLayout()
        button_row.addWidget(self.clear_button)
        button_row.addStretch(1)
        form.addRow("", button_row)
        keep_translated(self.retranslate)
        self._mode_changed()

    def retranslate(self) -> None:
        """Set every text in the current language (the values stay)."""
        self.setTitle(tr("Prompt cache"))
        self.mode_label.setText(tr("Disk space"))
        for index, name in enumerate(MODES.values()):
            self.mode.setItemText(index, tr(name))
        tip = tr("How much disk space the saved conversation states may take. Automatic: 10 % of "
                 "the free disk space, at most 8 GiB. Off: nothing is kept, not even in RAM. "
                 "Takes effect when the model is (re)loaded.")
        self.mode.setToolTip(tip)
        self.mode.setAccessibleName(tr("Prompt cache disk space"))
        self.limit.setSuffix(" GiB")
        self.limit.setToolTip(tip)
        self.limit.setAccessibleName(tr("Prompt cache size limit"))
        self.usage_label.setText(tr("In use"))
        self.clear_button.setText(tr("Clear cache"))
        self.clear_button.setToolTip(tr(
            "Delete the saved states of every model. The next reply in an earlier conversation "
            "may be slower: its prompt is evaluated again. A loaded model keeps the states it "
            "holds in RAM until it is unloaded."))
        self._render()

    # --- the setting ---------------------------------------------------------------------------

    def set_value(self, gib: float | None) -> None:
        """Show the setting ``load.prompt_cache_gib`` (None: automatic, 0: off)."""
        mode = "auto" if gib is None else "off" if gib == 0 else "limit"
        if mode == "limit" and gib is not None:
            self.limit.setValue(gib)
        self.mode.setCurrentIndex(self.mode.findData(mode))
        self._mode_changed()

    def value(self) -> float | None:
        """The setting the group shows (None: automatic, 0: off, else GiB)."""
        mode = self.mode.currentData()
        if mode == "auto":
            return None
        if mode == "off":
            return 0.0
        return round(self.limit.value(), 1)

    def _mode_changed(self) -> None:
        self.limit.setVisible(self.mode.currentData() == "limit")

    # --- the folder ----------------------------------------------------------------------------

    @property
    def working(self) -> bool:
        """Whether a measurement or a clear is running."""
        return self._working

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        """Measure the folder each time the page is shown (it changes as people chat)."""
        super().showEvent(event)
        self.refresh()

    def refresh(self) -> None:
        """Measure the cache folder in the background (unless that or a clear is running)."""
        if self._working:
            return
        self._working = True
        self._freed = None
        self._render()
        self._io.submit(_attempt(_measure), self._measured, self._stopped)

    def clear(self) -> None:
        """Remove every saved state in the background, then say what that freed."""
        if self._working:
            return
        self._working = True
        self._freed = None
        self._render()
        self._io.submit(_attempt(_clear), self._cleared, self._stopped)

    def _measured(self, result: CacheReport | DeskError) -> None:
        self._working = False
        self._report = result
        self._render()
        emit(self.measured, result)

    def _cleared(self, result: tuple[int, CacheReport] | DeskError) -> None:
        if isinstance(result, DeskError):
            self._measured(result)
            return
        freed, report = result
        self._freed = freed
        self._measured(report)
        emit(self.cleared, freed)

    def _stopped(self, error: BaseException) -> None:
        """A bug stopped the work: the group stops waiting, and the error is raised again, so
        that the excepthook hands it to the error sink (with its traceback)."""
        self._working = False
        self._report = None
        self._render()
        raise error

    def _render(self) -> None:
        """The note, what the folder holds and the button, from the last result."""
        report = self._report
        if report is not None and not isinstance(report, DeskError):
            self.note.setText(tr("Keeps each conversation's processed prompt on disk, so that "
                                 "going back to a conversation starts answering sooner. "
                                 "Automatic allows {size} on this disk now.",
                                 size=format_memory(report.budget.bytes)))
        else:
            self.note.setText(tr("Keeps each conversation's processed prompt on disk, so that "
                                 "going back to a conversation starts answering sooner."))
        self.clear_button.setEnabled(not self._working)
        if isinstance(report, DeskError):
            self.usage.setText(str(report))
            self.usage.setToolTip("")
            return
        if report is None:
            self.usage.setText(tr("Measuring…") if self._working else "")
            self.usage.setToolTip("")
            return
        if report.entries == 0:
            text = tr("The cache is empty.")
        else:
            text = ntr("{size} in {count} saved state.", "{size} in {count} saved states.",
                       report.entries, size=format_bytes(report.bytes))
        if self._freed is not None:
            text = tr("Cleared: {size} freed. {state}", size=format_bytes(self._freed),
                      state=text)
        self.usage.setText(text)
        self.usage.setToolTip(tr("Folder: {path}", path=str(report.folder)))
