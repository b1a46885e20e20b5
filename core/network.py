"""Whether this process may use the network, and the short timeouts that background calls use.

Offline mode comes from the user's setting (``Settings.network.offline``), the ``--offline`` CLI
flag or the environment (``HF_HUB_OFFLINE=1``, huggingface_hub's own switch); any of them turns
every network path off. Features that need the network call :func:`require_network` first and so
fail at once with a message that says so, instead of waiting on a connection.
"""

from __future__ import annotations

import os

from .errors import DeskError
from .i18n import tr

_TRUE = {"1", "on", "yes", "true"}
_offline_override: bool | None = None


class OfflineError(DeskError):
    """A feature needs the network and Offline mode is on."""


def is_offline() -> bool:
    """True when Offline mode is on (set here, or ``HF_HUB_OFFLINE`` in the environment)."""
    if _offline_override is not None:
        return _offline_override
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def set_offline(offline: bool) -> None:
    """Turn Offline mode on or off for this process (and for huggingface_hub in it)."""
    global _offline_override
    _offline_override = offline
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    else:
        os.environ.pop("HF_HUB_OFFLINE", None)
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency
        return
    constants.HF_HUB_OFFLINE = offline


def require_network(feature: str) -> None:
    """Raise :class:`OfflineError` naming ``feature`` (already translated) when Offline mode is on.

    Raises:
        OfflineError: Offline mode is on.
    """
    if is_offline():
        raise OfflineError(tr("{feature} needs the network, and Offline mode is on. Turn it off "
                              "in Settings (or drop --offline / HF_HUB_OFFLINE) to go online.",
                              feature=feature))
