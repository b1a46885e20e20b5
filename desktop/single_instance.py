"""One running app per data folder: a second launch brings the running window to the front.

The first instance on a data folder takes a lock file in it (:class:`QLockFile`; a crashed
instance's lock is recognised by its dead process id and taken over) and listens on a local socket
(:class:`QLocalServer`) named after the folder's path. A later launch on the same folder cannot
take the lock: it connects, sends ``activate``, waits for ``ok`` and should then exit 0. Launches
on different folders (``MIXTRAL_DESK_HOME``) run side by side.

In ``app.main()``, once the QApplication exists and before the window is built::

    instance = SingleInstance(paths.data_dir)
    if not instance.claim():
        return 0  # the running app was asked to come to the front
    ...
    instance.activated.connect(lambda: bring_to_front(window))

The lock is released when the process ends (or by :meth:`SingleInstance.release`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Qt, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.paths import INSTANCE_LOCK_NAME

from .signals import emit

LOCK_NAME = INSTANCE_LOCK_NAME  # the CLI reads it too (core.paths.window_process)
ACTIVATE = b"activate\n"
ACK = b"ok\n"

log = logging.getLogger(__name__)


def server_name(data_dir: Path) -> str:
    """The local socket's name for ``data_dir``: short (a Unix socket path has ~100 bytes) and
    the same for every spelling of the folder."""
    key = os.path.normcase(str(Path(data_dir).expanduser().resolve()))
    return "mixtral-desk-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class SingleInstance(QObject):
    """The guard of one data folder.

    Signals:
        activated(): another launch asked this (first) instance to show its window.
    """

    activated = Signal()

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = Path(data_dir)
        self.name = server_name(self.data_dir)
        self._lock = QLockFile(str(self.data_dir / LOCK_NAME))
        self._lock.setStaleLockTime(0)  # stale only when its process is gone, never by age
        self._server: QLocalServer | None = None
        self.primary = False

    def claim(self, timeout_s: float = 5.0) -> bool:
        """Become the folder's instance (``True``), or wake the running one (``False``).

        ``False`` means: another live process holds the folder; it was sent ``activate`` (or,
        after ``timeout_s`` without an answer, a line on stderr says it does not respond). The
        caller should exit without opening the database. A folder where no lock can be made
        (read-only) is claimed without one.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._lock.tryLock(0):
                self._listen()
                return True
            if self._lock.error() != QLockFile.LockError.LockFailedError:
                log.warning("cannot lock %s (%s); starting without the single-instance guard",
                            self.data_dir, self._lock.error().name)
                self.primary = True
                return True
            if self._send_activate(min(1.0, max(deadline - time.monotonic(), 0.05))):
                log.info("another Mixtral Desk uses %s; asked it to come to the front",
                         self.data_dir)
                return False
            if time.monotonic() >= deadline:  # alive (the lock says so) but not answering
                info = self._lock.getLockInfo()  # PySide6: (pid, hostname, appname)
                pid = info[0] if isinstance(info, tuple) and info else 0
                if isinstance(pid, int) and pid > 0:
                    text = tr("Mixtral Desk is already running on {folder} (process {pid}) but "
                              "does not respond; close it first.", folder=self.data_dir, pid=pid)
                else:
                    text = tr("Mixtral Desk is already running on {folder} but does not "
                              "respond; close it first.", folder=self.data_dir)
                print(f"mixtral-desk: {text}", file=sys.stderr)
                return False
            time.sleep(0.1)  # the first instance is still starting: it listens very soon

    def release(self) -> None:
        """Stop listening and unlock (idempotent); also done when the process ends."""
        if self._server is not None:
            self._server.close()
            self._server.deleteLater()
            self._server = None
        if self._lock.isLocked():
            self._lock.unlock()
        self.primary = False

    # --- the first instance ----------------------------------------------------------------------

    def _listen(self) -> None:
        self.primary = True
        # We hold the lock, so a socket left under this name is a crashed instance's: remove it.
        QLocalServer.removeServer(self.name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            log.warning("single-instance socket %s: %s; a second launch cannot reach this one",
                        self.name, server.errorString())
            server.deleteLater()
            return
        server.newConnection.connect(self._on_connection)
        self._server = server

    def _on_connection(self) -> None:
        server = self._server
        while server is not None and server.hasPendingConnections():
            socket = server.nextPendingConnection()
            if socket is None:
                break
            socket.setParent(self)
            socket.readyRead.connect(lambda s=socket: self._on_ready_read(s))
            socket.disconnected.connect(socket.deleteLater)
            if socket.bytesAvailable():
                self._on_ready_read(socket)

    def _on_ready_read(self, socket: QLocalSocket) -> None:
        if not socket.canReadLine():
            return
        line = bytes(socket.readLine().data())
        if line == ACTIVATE:
            socket.write(ACK)
            socket.flush()
            emit(self.activated)
        socket.disconnectFromServer()

    # --- a later launch --------------------------------------------------------------------------

    def _send_activate(self, timeout_s: float) -> bool:
        socket = QLocalSocket()
        try:
            socket.connectToServer(self.name)
            ms = max(int(timeout_s * 1000), 50)
            if not socket.waitForConnected(ms):
                return False
            socket.write(ACTIVATE)
            if not socket.waitForBytesWritten(ms):
                return False
            while not socket.canReadLine():
                if not socket.waitForReadyRead(ms):
                    return False
            return bytes(socket.readLine().data()) == ACK
        finally:
            socket.abort()


def bring_to_front(window: QWidget) -> None:
    """Show ``window`` un-minimised, raised and active (as far as the window system allows)."""
    window.setWindowState((window.windowState() & ~Qt.WindowState.WindowMinimized)
                          | Qt.WindowState.WindowActive)
    window.show()
    window.raise_()
    window.activateWindow()
