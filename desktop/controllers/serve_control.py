"""The Serve API toggle: serve the loaded model over the OpenAI-compatible API on this computer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QPushButton

from mixtral_desk.core.errors import UserText
from mixtral_desk.core.i18n import N_, tr

from ..bridge.server_bridge import NETWORK_HINT, ServerBridge
from ..bridge.session_bridge import SERVER_BUSY, SessionBridge
from ..chat.page import ChatPage
from ..errors import ErrorSink
from ..status_bar import StatusBar


class ServeController(QObject):
    """Starts and stops the server for the toggle; shows its address; holds Send while it
    answers. The toggle is enabled only while a model is loaded (and not on its way out): the
    window calls :meth:`model_changed` and :meth:`model_going`.

    ``port`` gives the settings' API port (0: a free one); ``settings_file`` names the file to
    change it in.

    Signals: none (the server bridge's say what happened).
    """

    def __init__(self, server: ServerBridge, session: SessionBridge, button: QPushButton,
                 status: StatusBar, chat_page: ChatPage, sink: ErrorSink,
                 port: Callable[[], int], settings_file: Path,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.server, self.session, self.button = server, session, button
        self.status, self.chat_page, self.sink = status, chat_page, sink
        self._port = port
        self._allowed = False  # a model is loaded and not on its way out
        self._closed = False
        server.port_hint = lambda: UserText(N_(
            'Stop that program, or choose another port: "server": {{"api_port": 8081}} in '
            "{file} (0 picks a free port each time)."), file=str(settings_file))
        button.clicked.connect(self._clicked)
        server.started.connect(self._serving)
        server.stopped.connect(self._not_serving)
        server.failed.connect(lambda _: self._not_serving())
        server.busy_changed.connect(self._busy)
        self.show_tooltip()

    def show_tooltip(self, url: str | None = None) -> None:
        """The toggle's tooltip: where it serves (the settings' port while stopped)."""
        if url is None and self.server.is_running:
            return
        port = self._port()
        where = url or (f"http://127.0.0.1:{port}/v1" if port
                        else tr("http://127.0.0.1:(a free port)/v1"))
        self.button.setToolTip(tr(
            "Serve the loaded model over an OpenAI-compatible API at {url}, for programs on "
            "this computer only (no key needed). {hint}", url=where, hint=tr(NETWORK_HINT)))

    def _set_button(self, *, enabled: bool, checked: bool) -> None:
        self.button.setEnabled(enabled)
        self.button.setChecked(checked)

    def _clicked(self, checked: bool) -> None:
        """Start the server on 127.0.0.1 (port from the settings) or stop it; the toggle is
        disabled until that is done."""
        self.button.setEnabled(False)
        if not checked:
            self.server.stop()
            return
        if not self._allowed or self.session.model_info is None:
            self._set_button(enabled=False, checked=False)
            return
        self.server.start(self.session.session, self._port())

    def model_changed(self, info: object | None) -> None:
        """A model is loaded (the toggle is enabled), or none is (the server stops)."""
        if info is None:
            self.model_going()
        elif not self._allowed:
            self._allowed = True
            self._set_button(enabled=True, checked=self.server.is_running)

    def model_going(self) -> None:
        """The model goes away (unloaded, crashed, another one loads): stop serving it."""
        self._allowed = False
        self._set_button(enabled=False, checked=False)
        if not self._closed:
            self.server.stop()

    def _serving(self, url: str) -> None:
        self.status.show_api(url)
        self.show_tooltip(url)
        self._set_button(enabled=self._allowed, checked=True)
        self.sink.inform(tr("Serving the model at {url} (this computer only).", url=url),
                         timeout_ms=6000)

    def _not_serving(self) -> None:
        self.status.show_api(None)
        self.show_tooltip()
        self._busy(False)
        self._set_button(enabled=self._allowed, checked=False)

    def _busy(self, busy: bool) -> None:
        self.chat_page.block_sending(tr(SERVER_BUSY) if busy else None)

    def close(self) -> None:
        """The window closes: stop serving (waits for the server)."""
        self._closed = True
        self.server.close()
