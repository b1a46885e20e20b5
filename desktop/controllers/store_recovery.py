"""Keeping the conversations safe in the window: timed backups, and the notice after damage.

It owns the :class:`~mixtral_desk.desktop.bridge.backup_bridge.BackupBridge` (timed backups) and
sets the store's backup on close, from the ``backups`` settings.

The salvage already happened on the store thread (the app keeps working with what it recovered);
this says exactly what happened and offers **Restore from a backup…** (a file dialog in the
backups folder; the current file is kept aside first) and **Show the files** (the folder with
the damaged file and the backups, in the system's file manager).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from PySide6.QtCore import QObject, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QWidget

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.store.backups import backups_folder
from mixtral_desk.core.store.recovery import RecoveryReport

from ..bridge.backup_bridge import BackupBridge
from ..bridge.store_bridge import StoreBridge
from ..errors import Action, ErrorSink

if TYPE_CHECKING:  # pydantic loads after the first paint
    from mixtral_desk.core.settings import BackupSettings, Settings


class SettingsWindow(Protocol):
    """The main window as this controller sees it: a QWidget with the settings in effect."""

    @property
    def settings(self) -> Settings:
        """The settings in effect."""


class StoreRecoveryController(QObject):
    """Shows :attr:`StoreBridge.recovered` reports with their actions; runs the backups.

    Signals: none.
    """

    def __init__(self, sink: ErrorSink, store: StoreBridge, window: SettingsWindow) -> None:
        """``window``: the main window, whose ``settings.backups`` is read when needed."""
        self._widget = cast(QWidget, window)  # the main window is a QWidget too
        super().__init__(self._widget)
        self._sink, self._store, self._window = sink, store, window
        store.recovered.connect(self.show_report)
        store.closing.connect(self.close)
        self.backups = BackupBridge(sink, store, self.settings, parent=self)

    def settings(self) -> BackupSettings:
        """The ``backups`` settings in effect."""
        return self._window.settings.backups

    def close(self) -> None:
        """Stop the timed backups; the store's close then backs up what changed."""
        self._store.backup_budget_bytes = self.settings().budget_mb * 1_000_000
        self.backups.close()

    def actions(self) -> tuple[Action, ...]:
        """The notice's buttons."""
        return (Action(tr("Restore from a backup…"), self.choose_backup),
                Action(tr("Show the files"), self.show_files))

    def show_report(self, report: RecoveryReport) -> None:
        """Tell the user what the salvage did (kept until closed)."""
        self._sink.inform(str(report.message()), level="warning", actions=self.actions(),
                          timeout_ms=None)

    def show_files(self) -> None:
        """Open the database's folder in the file manager."""
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self._store.path.parent)))

    def choose_backup(self) -> None:
        """Ask for a backup, then restore it (the current file is kept aside)."""
        chosen, _ = QFileDialog.getOpenFileName(
            self._widget, tr("Restore from a backup"), str(backups_folder(self._store.path)),
            tr("Conversation backups (*.sqlite3)"))
        if chosen:
            self.restore(Path(chosen))

    def restore(self, backup: Path) -> None:
        """Restore ``backup`` in the background and say where the replaced file was kept."""
        def done(kept: Path | None) -> None:
            text = tr("Restored {backup}.", backup=str(backup)) if kept is None else tr(
                "Restored {backup}; the conversations from before are kept at {path}.",
                backup=str(backup), path=str(kept))
            self._sink.inform(text, actions=(Action(tr("Show the files"), self.show_files),))
        self._store.restore(backup, done)
