"""Run the API server (uvicorn) on a background thread, start and stop it from any thread.

::

    server = ApiServer(engine, model_id="mixtral-8x7b-instruct", port=8080)  # engine loaded
    server.start()          # returns once it listens; ServerStartError when it cannot
    print(server.base_url)  # http://127.0.0.1:8080/v1
    server.stop()           # ends running replies, closes the port; the engine stays loaded

The socket is bound here (not by uvicorn), so a taken port is a clear :class:`ServerStartError`
instead of uvicorn exiting the process, and ``port=0`` picks a free port (tests).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import threading
import time
from types import TracebackType

import uvicorn

from mixtral_desk.core.engine import SamplingOptions
from mixtral_desk.core.engine.interface import ChatEngine
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.server.app import OpenAIApi, create_app
from mixtral_desk.core.server.auth import check_bind
from mixtral_desk.core.server.errors import ServerStartError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
SHUTDOWN_GRACE_S = 3

log = logging.getLogger("mixtral_desk.server")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as error:
        sock.close()
        reason = str(error.strerror or error)
        if error.errno == errno.EADDRINUSE:
            raise ServerStartError(N_("Cannot listen on {host}:{port}: {error}. Another program "
                                      "uses this port; choose another with --port."),
                                   host=host, port=port, error=reason) from error
        raise ServerStartError(N_("Cannot listen on {host}:{port}: {error}."),
                               host=host, port=port, error=reason) from error
    return sock


class ApiServer:
    """An OpenAI-compatible server for one already-loaded engine.

    ``engine``: an :class:`~mixtral_desk.core.engine.EngineHost` with a model loaded (or any
    :class:`ChatEngine`); while the server runs, its replies queue on it with other users of the
    engine getting :class:`EngineBusyError` when they collide. ``model_id``: the name in
    ``/v1/models`` and in answers. ``sampling``: defaults that requests override.

    Raises:
        ServerConfigError: ``host`` is not a loopback address and there is no ``api_key``.
    """

    def __init__(self, engine: ChatEngine, model_id: str, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, api_key: str | None = None,
                 sampling: SamplingOptions | None = None, max_waiting: int = 64,
                 log_level: str = "warning") -> None:
        check_bind(host, api_key)
        self.engine = engine
        self.model_id = model_id
        self.host = host
        self.requested_port = port
        self.api_key = api_key or None
        self.app = create_app(engine, model_id, api_key=self.api_key, sampling=sampling,
                              max_waiting=max_waiting)
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._lock = threading.Lock()

    @property
    def api(self) -> OpenAIApi:
        """The endpoints' state (queue length, model id)."""
        api: OpenAIApi = self.app.state.api
        return api

    @property
    def is_running(self) -> bool:
        """Whether the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when started with ``port=0``)."""
        return self._port if self._port is not None else self.requested_port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") \
            else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL clients need: ``http://HOST:PORT/v1``."""
        return self.url + "/v1"

    def start(self, timeout_s: float = 10.0) -> None:
        """Listen and serve on a background thread; returns once the server accepts requests.

        Raises:
            ServerStartError: the address or port cannot be used, or the server did not start.
            RuntimeError: it is already running.
        """
        with self._lock:
            if self.is_running:
                raise RuntimeError("The server is already running.")
            sock = _bind(self.host, self.requested_port)
            self._port = sock.getsockname()[1]
            self.api.replies.reopen()
            config = uvicorn.Config(self.app, lifespan="off", log_config=None,
                                    log_level=self._log_level, access_log=False,
                                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
            server = uvicorn.Server(config)
            thread = threading.Thread(target=self._serve, args=(server, sock),
                                      name="mixtral-desk-api-server", daemon=True)
            self._server, self._thread = server, thread
            thread.start()
            deadline = time.monotonic() + timeout_s
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    server.should_exit = True
                    thread.join(2)
                    sock.close()
                    raise ServerStartError(N_("The API server did not start on {url}; see the "
                                              "log for details."), url=self.url)
                time.sleep(0.01)
            log.info("API server listening on %s", self.base_url)

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except Exception:
            log.exception("The API server stopped with an error")
        finally:
            sock.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (any thread): running replies end, waiting requests get 503; idempotent.

        The engine stays loaded. Returns once the port is closed (or ``timeout_s`` passed).
        """
        with self._lock:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            server.should_exit = True
            self.api.replies.shutdown()
            thread.join(timeout_s)
            if thread.is_alive():
                server.force_exit = True
                thread.join(2)
            self._server = self._thread = None

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops (``True``) or ``timeout_s`` passes (``False``)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        with contextlib.suppress(Exception):
            self.stop()
