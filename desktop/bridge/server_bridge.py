"""The "Serve API" toggle's worker: the OpenAI-compatible server over the GUI's own engine.

The session (:meth:`~mixtral_desk.core.session.Session.serve`) starts and stops the server; this
bridge does that on the ``server`` task queue (starting blocks until the port listens), never on
the GUI thread. The server uses the session's engine, as the chat page does, so while it answers
a request the GUI cannot start a turn (the engine generates one reply at a time):
:attr:`ServerBridge.busy` says so, and :attr:`ServerBridge.busy_changed` lets the window disable
Send meanwhile.

The GUI serves this computer only (127.0.0.1, no key); serving the network is the command line's
job (``mixtral-desk serve --host 0.0.0.0 --api-key KEY``).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from mixtral_desk.core.errors import UserText
from mixtral_desk.core.i18n import N_, tr

from ..errors import ErrorSink
from ..signals import emit
from .tasks import TaskQueue

if TYPE_CHECKING:  # uvicorn and Starlette are imported on first use
    from mixtral_desk.core.session import Session

log = logging.getLogger(__name__)

DEFAULT_API_PORT = 8080  # as core.settings.ServerSettings (not imported before the first paint)
BUSY_POLL_MS = 250
NETWORK_HINT = N_("To serve other computers on the network, use the command line: "
                  "mixtral-desk serve --host 0.0.0.0 --api-key KEY")


class ServerBridge(QObject):
    """Starts and stops the local API server on the ``server`` thread; reports on the GUI thread.

    Signals:
        started(str): the server listens; carries its OpenAI base URL
            (``http://127.0.0.1:PORT/v1``).
        stopped(): the server stopped (toggled off, the model went away, the window closed).
        failed(str): the server could not start (the port is taken…); carries the message,
            which was already reported to the error sink.
        busy_changed(bool): the server began (True) or finished (False) answering requests
            (polled while it runs).
    """

    started = Signal(str)
    stopped = Signal()
    failed = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, sink: ErrorSink, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink = sink
        self._session: Session | None = None  # set when a start is asked for
        self._url: str | None = None
        self._busy = False
        self._closed = False
        #: Says what to do after "another program uses this port" (the window's version names its
        #: settings file).
        self.port_hint: Callable[[], UserText] = lambda: UserText(
            N_("Stop that program, or choose another port in the settings."))
        self.tasks = TaskQueue("server", on_error=lambda e: sink.report(e), parent=self)
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(BUSY_POLL_MS)
        self._poll_timer.timeout.connect(self._poll)

    # --- state ---------------------------------------------------------------------------------

    @property
    def url(self) -> str | None:
        """The base URL while serving (as last reported on the GUI thread), else ``None``."""
        return self._url

    @property
    def is_running(self) -> bool:
        """Whether the server listens (as last reported on the GUI thread)."""
        return self._url is not None

    @property
    def busy(self) -> bool:
        """Whether the server is answering a request (read live; requests waiting behind it keep
        it busy)."""
        return self._session is not None and self._session.serving_busy

    # --- start and stop ------------------------------------------------------------------------

    def start(self, session: Session, port: int) -> None:
        """Serve the session's loaded model on 127.0.0.1:``port`` (0: any free port), in the
        background: :attr:`started` or :attr:`failed` follows."""
        self._session = session

        def start_now() -> str:
            from mixtral_desk.core.server import ServerStartError
            from mixtral_desk.core.session import LOCAL_HOST

            try:
                return session.serve(port=port).base_url
            except ServerStartError as error:  # its hint names the command line's --port
                cause = error.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                    raise ServerStartError(N_(
                        "Cannot serve the API on {address}: another program uses this port. "
                        "{hint}"), address=f"{LOCAL_HOST}:{port}",
                        hint=self.port_hint()) from error
                raise
        self.tasks.submit(start_now, self._started, self._start_failed)

    def stop(self) -> None:
        """Stop serving in the background (:attr:`stopped` follows if it ran)."""
        def done(was_running: bool) -> None:
            if was_running or self._url is not None:
                self._set_stopped()
        if self._closed:
            return
        self.tasks.submit(self._stop_now, done)

    def _stop_now(self) -> bool:  # on the server thread
        return self._session is not None and self._session.stop_serving()

    def _started(self, url: str) -> None:
        self._url = url
        self._poll_timer.start()
        emit(self.started, url)

    def _start_failed(self, error: BaseException) -> None:
        self._sink.report(error, tr("while starting the API server"))
        emit(self.failed, str(error))

    def _set_stopped(self) -> None:
        self._url = None
        self._poll_timer.stop()
        self._set_busy(False)
        emit(self.stopped)

    def _poll(self) -> None:
        self._set_busy(self.busy)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            emit(self.busy_changed, busy)

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the server (waits for it) and the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._poll_timer.stop()
        self.tasks.submit(self._stop_now)
        self.tasks.close(timeout=15)
        self._stop_now()  # in case the worker did not get to it in time
        self._url = None
