"""Whether this process may use the network, and the short timeouts that background calls use.

Offline mode comes from the user's setting (``Settings.network.offline``), the ``--offline`` CLI
flag or the environment (``HF_HUB_OFFLINE=1``, huggingface_hub's own switch); any of them turns
every network path off. Features that need the network call :func:`require_network` first and so
fail at once with a message that says so, instead of waiting on a connection.

What never touches the network: starting the app, listing and loading local models, chatting with
a local model, searching and exporting conversations. What does (downloads, Hub metadata, reading
a remote model's header, a remote engine that is not on this computer) connects with
:data:`CONNECT_TIMEOUT_S` and answers small requests within :data:`METADATA_TIMEOUT_S`, without
huggingface_hub's retry loop (which would wait ~23 s for an unreachable host). Background callers
tell "no network" from other failures with :func:`network_problem` and show cached data instead.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from typing import Any, Final, Literal

from .errors import DeskError, UserText
from .i18n import N_, tr

_TRUE = {"1", "on", "yes", "true"}
_offline_override: bool | None = None
_forced_offline = False  # --offline was given (force_offline)
#: ``HF_HUB_OFFLINE`` as the process started (restored by ``set_offline(None)``).
_ENV_AT_START: Final = os.environ.get("HF_HUB_OFFLINE")

#: Seconds to wait for a TCP (and TLS) connection before calling a host unreachable.
CONNECT_TIMEOUT_S: float = 4.0
#: Seconds to wait for a small answer (Hub metadata) once connected.
METADATA_TIMEOUT_S: float = 10.0
#: Attempts for a metadata request the server answers with 429 or 5xx (never for no connection).
METADATA_ATTEMPTS: int = 3

Problem = Literal["offline", "unreachable"]

_UNREACHABLE_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT,
    errno.ENETDOWN, errno.EHOSTDOWN, errno.ECONNRESET, errno.ECONNABORTED,
})
# Transport-level errors of httpx / httpx2 / httpcore, known by class name so that this module
# imports none of them (it is imported at start-up).
_TRANSPORT_ERRORS = frozenset({"TransportError", "TimeoutException", "NetworkError",
                               "ConnectError", "ConnectTimeout", "ProxyError"})


class OfflineError(DeskError):
    """A feature needs the network and Offline mode is on."""


class UnreachableError(DeskError, ConnectionError):
    """A host could not be reached in time (no route, refused, name not found, timed out)."""


def _env_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_offline() -> bool:
    """True when Offline mode is on.

    Set here (:func:`set_offline`) it wins; otherwise huggingface_hub's own switch decides once
    that library is loaded (it read ``HF_HUB_OFFLINE`` then), else ``HF_HUB_OFFLINE`` in the
    environment.
    """
    if _offline_override is not None:
        return _offline_override
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    return _env_offline()


def set_offline(offline: bool | None) -> None:
    """Turn Offline mode on or off for this process (and for huggingface_hub and the processes it
    starts); ``None`` goes back to what the environment said when the process started."""
    global _offline_override
    _offline_override = offline
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    elif offline is None and _ENV_AT_START is not None:
        os.environ["HF_HUB_OFFLINE"] = _ENV_AT_START
    else:
        os.environ.pop("HF_HUB_OFFLINE", None)
    constants: Any = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = _env_offline() if offline is None else offline


def force_offline() -> None:
    """``--offline``: Offline mode for the rest of this process, whatever a setting says later."""
    global _forced_offline
    _forced_offline = True
    set_offline(True)


def apply_offline_setting(enabled: bool) -> None:
    """Follow the user's Offline mode setting: on forces it on; off leaves the environment's
    choice (``HF_HUB_OFFLINE``) and ``--offline`` (:func:`force_offline`) in force."""
    set_offline(True if enabled or _forced_offline else None)


def offline_message(feature: str | UserText) -> UserText:
    """The sentence shown when ``feature`` is refused in Offline mode (translated where shown).

    ``feature``: an ``N_()``-marked phrase, or a :class:`UserText` when it has values.
    """
    return UserText(N_("{feature} needs the network, and Offline mode is on. Turn it off "
                       "in Settings (or drop --offline / HF_HUB_OFFLINE) to go online."),
                    feature=feature if isinstance(feature, UserText) else UserText(feature))


def require_network(feature: str | UserText, error: type[OfflineError] = OfflineError) -> None:
    """Raise ``error`` (an :class:`OfflineError`) naming ``feature`` (an ``N_()``-marked phrase,
    or a :class:`UserText`) when Offline mode is on; return at once otherwise.

    Raises:
        OfflineError: Offline mode is on.
    """
    if is_offline():
        raise error(offline_message(feature))


#: Host names that always mean the loopback interface (``/etc/hosts`` of common systems).
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost",
                                   "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """True when ``host`` is this computer's loopback interface and nothing else: ``localhost``
    (and :data:`LOOPBACK_NAMES`), 127.0.0.0/8, ``::1`` (also IPv4-mapped, ``[::1]``, ``::1%lo``).

    False for the unspecified addresses ``0.0.0.0`` and ``::``: a server bound there listens on
    every interface (so it needs an API key, :func:`~.server.auth.check_bind`), and as an address
    to connect to they are no portable way to say "this computer" (Offline mode refuses a remote
    engine there). False for any other name too: it could resolve to anything.
    """
    name = host.strip().strip("[]").split("%")[0].lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not e for e in seen) and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def network_problem(error: BaseException) -> Problem | None:
    """``"offline"`` when ``error`` (or what caused it) is Offline mode refusing the network,
    ``"unreachable"`` when a host could not be reached (no route, refused, DNS, timed out), else
    None (the server answered: not found, refused access, a 5xx …).

    For background callers: on a problem, keep showing cached data and say so quietly.
    """
    found: Problem | None = None
    for item in _chain(error):
        names = {cls.__name__ for cls in type(item).__mro__}
        if isinstance(item, OfflineError) or "OfflineModeIsEnabled" in names:
            return "offline"
        if found is None and (
                isinstance(item, UnreachableError | TimeoutError | socket.gaierror
                           | ConnectionRefusedError)
                or (isinstance(item, OSError) and item.errno in _UNREACHABLE_ERRNOS)
                or names & _TRANSPORT_ERRORS):
            found = "unreachable"
    return found


def problem_message(problem: Problem) -> str:
    """A short status text for an indicator: "Offline mode" or "No connection to the Hub"."""
    return tr("Offline mode") if problem == "offline" else tr("No connection")
