"""A socket guard for tests: records and refuses every connection that would leave this computer.

Installed in a process, it wraps ``socket.socket.connect`` / ``connect_ex`` / ``sendto``,
``socket.create_connection`` and ``socket.getaddrinfo``. Loopback (127.0.0.0/8, ``::1``,
``localhost``, and the unspecified 0.0.0.0 / ``::``, which also mean this computer), Unix sockets
and other local families pass untouched; anything else is recorded as an :class:`Attempt` and
refused (``ConnectionRefusedError`` subclass :class:`BlockedConnectionError`, ``ECONNREFUSED`` for
``connect_ex``, ``socket.gaierror`` for a name lookup), so code under test sees an unreachable
network at once.

In the test process: the :func:`net_guard` fixture (or ``with NetGuard() as guard:``).
In child processes (the CLI, the engine process started with multiprocessing's ``spawn``): run them
with :func:`guarded_env`, which puts ``tests/offline/guard_path`` (holding a ``sitecustomize.py``)
first on ``PYTHONPATH`` and names a log file in ``MIXTRAL_DESK_NET_GUARD_LOG``; every process that
starts with that environment installs the guard and appends each attempt to the log as one JSON
line. :func:`read_log` reads it back, and :func:`guarded_pids` says which processes ran guarded.

This module imports nothing outside the standard library, so that ``sitecustomize`` can load it by
path before anything else.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

LOG_ENV = "MIXTRAL_DESK_NET_GUARD_LOG"
GUARD_PATH = Path(__file__).resolve().parent / "offline" / "guard_path"
_INET = (socket.AF_INET, socket.AF_INET6)


class BlockedConnectionError(ConnectionRefusedError):
    """Raised by the guard instead of connecting beyond this computer."""


@dataclass(frozen=True)
class Attempt:
    """One refused attempt: which call, to where, from which process, and the code that asked."""

    api: str
    host: str
    port: int | None
    pid: int
    stack: str

    def __str__(self) -> str:
        return f"{self.api} {self.host}:{self.port} (pid {self.pid})\n{self.stack}"


def is_local_host(host: object) -> bool:
    """True for a host that is this computer (loopback, unspecified, ``localhost``, empty)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    name = str(host).strip().strip("[]").split("%")[0].lower()
    if name in ("", "localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _is_numeric(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return False
    return True


class NetGuard:
    """Records and refuses non-loopback connections in this process while installed.

    ``log``: a file to append each attempt to (one JSON object per line), as well as
    :attr:`attempts`. Installing twice nests (only the outermost patches).
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _active: ClassVar[list[NetGuard]] = []
    _originals: ClassVar[dict[str, Any]] = {}

    def __init__(self, log: Path | str | None = None) -> None:
        self.log = Path(log) if log else None
        self.attempts: list[Attempt] = []

    # --- installing -----------------------------------------------------------------------------

    def install(self) -> NetGuard:
        with NetGuard._lock:
            if not NetGuard._active:
                _patch()
            NetGuard._active.append(self)
        return self

    def uninstall(self) -> None:
        with NetGuard._lock:
            if self in NetGuard._active:
                NetGuard._active.remove(self)
            if not NetGuard._active:
                _unpatch()

    def __enter__(self) -> NetGuard:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def clear(self) -> None:
        """Forget the attempts recorded so far (not the log file)."""
        self.attempts.clear()

    # --- recording ------------------------------------------------------------------------------

    def _record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self.log is not None:
            _append(self.log, json.dumps(asdict(attempt)) + "\n")


def _refuse(api: str, host: object, port: object) -> None:
    attempt = Attempt(api, str(host), port if isinstance(port, int) else None, os.getpid(),
                      "".join(traceback.format_stack(limit=40)[:-2]))
    for guard in list(NetGuard._active):
        guard._record(attempt)


def _address_allowed(family: int, address: Any) -> tuple[bool, object, object]:
    """Whether a connect/sendto to ``address`` stays on this computer (and the host and port)."""
    if family not in _INET or not isinstance(address, tuple) or not address:
        return True, address, None  # Unix sockets, netlink …: local by nature
    host, port = address[0], address[1] if len(address) > 1 else None
    return is_local_host(host), host, port


def _patch() -> None:
    originals = NetGuard._originals
    originals.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex,
                     sendto=socket.socket.sendto, create_connection=socket.create_connection,
                     getaddrinfo=socket.getaddrinfo)

    def connect(self: socket.socket, address: Any) -> None:
        allowed, host, port = _address_allowed(self.family, address)
        if not allowed:
            _refuse("connect", host, port)
            raise BlockedConnectionError(errno.ECONNREFUSED,
                                         f"net_guard: blocked a connection to {host}:{port}")
        originals["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        allowed, host, port = _address_allowed(self.family, address)
        if not allowed:
            _refuse("connect_ex", host, port)
            return errno.ECONNREFUSED
        return int(originals["connect_ex"](self, address))

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        address = args[-1] if args else None
        allowed, host, port = _address_allowed(self.family, address)
        if not allowed:
            _refuse("sendto", host, port)
            raise BlockedConnectionError(errno.ECONNREFUSED,
                                         f"net_guard: blocked a datagram to {host}:{port}")
        return int(originals["sendto"](self, data, *args))

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        if not is_local_host(host):
            _refuse("create_connection", host, port)
            raise BlockedConnectionError(errno.ECONNREFUSED,
                                         f"net_guard: blocked a connection to {host}:{port}")
        return originals["create_connection"](address, *args, **kwargs)  # type: ignore[no-any-return]

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        # A numeric address needs no lookup (connect() is checked); a name other than this
        # computer's would ask a DNS server.
        if not is_local_host(host) and not _is_numeric(host):
            _refuse("getaddrinfo", host, port)
            raise socket.gaierror(socket.EAI_NONAME,
                                  f"net_guard: blocked a name lookup of {host}")
        return originals["getaddrinfo"](host, port, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]
    socket.socket.sendto = sendto  # type: ignore[method-assign, assignment]
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo


def _unpatch() -> None:
    originals = NetGuard._originals
    if not originals:
        return
    socket.socket.connect = originals["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = originals["connect_ex"]  # type: ignore[method-assign]
    socket.socket.sendto = originals["sendto"]  # type: ignore[method-assign]
    socket.create_connection = originals["create_connection"]
    socket.getaddrinfo = originals["getaddrinfo"]
    originals.clear()


# --- for child processes -------------------------------------------------------------------------

def install_from_env() -> NetGuard | None:
    """Install a guard logging to ``$MIXTRAL_DESK_NET_GUARD_LOG`` when that is set (for
    ``sitecustomize``); it stays installed for the life of the process."""
    log = os.environ.get(LOG_ENV)
    if not log:
        return None
    guard = NetGuard(log).install()
    _append(Path(f"{log}.pids"), f"{os.getpid()}\n")
    return guard


def _append(path: Path, text: str) -> None:
    # One write on an O_APPEND descriptor: lines of several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def guarded_pids(log: Path) -> list[int]:
    """The processes that installed the guard from the environment, logging to ``log``."""
    try:
        return [int(line) for line in Path(f"{log}.pids").read_text().split()]
    except FileNotFoundError:
        return []


def guarded_env(log: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes (and their children) run guarded, logging to
    ``log``."""
    env = dict(os.environ if base is None else base)
    parts = [str(GUARD_PATH)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env[LOG_ENV] = str(log)
    return env


def read_log(log: Path) -> list[dict[str, Any]]:
    """The attempts logged by guarded processes (none when the file does not exist)."""
    try:
        text = log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def format_attempts(attempts: list[Attempt] | list[dict[str, Any]]) -> str:
    """The attempts, readable, for an assertion message."""
    out = []
    for attempt in attempts:
        item = asdict(attempt) if isinstance(attempt, Attempt) else attempt
        out.append(f"{item['api']} {item['host']}:{item['port']} (pid {item['pid']})\n"
                   f"{item['stack']}")
    return "\n".join(out) or "none"


if "pytest" in sys.modules:  # not in a guarded child process: importing pytest there is slow
    import pytest

    @pytest.fixture
    def net_guard() -> Iterator[NetGuard]:
        """This test runs with every non-loopback connection recorded and refused."""
        with NetGuard() as guard:
            yield guard


class Tripwire:
    """A loopback port standing in for the Hub: it counts every connection made to it.

    Point ``HF_ENDPOINT`` (or a client) at :attr:`url` to see whether code *tries* the Hub at all,
    without a packet leaving 127.0.0.1; the guard meanwhile refuses any other host. With
    ``hang_up`` (the default) each connection is closed at once, which a client sees as a dead
    server; otherwise it is held open and never answered (a black-holing proxy), until the
    tripwire closes.
    """

    def __init__(self, *, hang_up: bool = True) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self._hang_up = hang_up
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._count = 0
        self._thread = threading.Thread(target=self._accept, name="tripwire", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    @property
    def connections(self) -> int:
        """How many connections were made so far."""
        with self._lock:
            return self._count

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection = self._server.accept()[0]
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._count += 1
            if self._hang_up:
                connection.close()
            else:
                self._held.append(connection)

    def __enter__(self) -> Tripwire:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self._held:
            connection.close()
        self._server.close()
