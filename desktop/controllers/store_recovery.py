"""The notice after the conversation database was found damaged, and its two ways on.

The salvage already happened on the store thread (the app keeps working with what it recovered);
this says exactly what happened and offers **Restore from a backup…** (a file dialog in the
backups folder; the current file is kept aside first) and **Show the files** (the folder with
the damaged file and the backups, in the system's file manager).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QWidget

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.store.backups import backups_folder
from mixtral_desk.core.store.recovery import RecoveryReport

from ..bridge.store_bridge import StoreBridge
from ..errors import Action, ErrorSink


class StoreRecoveryController(QObject):
    """Shows :attr:`StoreBridge.recovered` reports with their actions.

    Signals: none.
    """

    def __init__(self, sink: ErrorSink, store: StoreBridge, window: QWidget) -> None:
        super().__init__(window)
        self._sink, self._store, self._window = sink, store, window
        store.recovered.connect(self.show_report)

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
            self._window, tr("Restore from a backup"), str(backups_folder(self._store.path)),
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
