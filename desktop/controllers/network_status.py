"""The status bar's quiet network indicator: Offline mode, or the Hub found unreachable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from ..status_bar import StatusBar

if TYPE_CHECKING:
    from mixtral_desk.core.downloads.events import JobStateChanged


class NetworkIndicator(QObject):
    """Shows "Offline" while Offline mode is on, "Hub unreachable" after a download could not
    reach the Hub (until one runs or completes), and nothing otherwise.

    Signals: none.
    """

    def __init__(self, status: StatusBar, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.status = status

    def show_mode(self, offline: bool) -> None:
        """Offline mode was turned on or off."""
        self.status.show_network("offline" if offline else "online")

    def download_state_changed(self, event: JobStateChanged) -> None:
        """A download changed state (Offline mode keeps its own indicator)."""
        from mixtral_desk.core import network

        if network.is_offline():
            return
        if isinstance(event.error, network.UnreachableError):
            self.status.show_network("unreachable")
        elif event.state in ("running", "completed") and self.status.network == "unreachable":
            self.status.show_network("online")
