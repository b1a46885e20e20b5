"""The few settings needed before anything else starts: language, theme and Offline mode.

The CLI needs them before it builds its parser, the window before its first paint — long before
the settings file is validated (pydantic, in :mod:`mixtral_desk.core.settings`, is not imported
that early). So they are read here from the JSON as it is, under the limits of
:mod:`mixtral_desk.core.untrusted_json` (a hostile file — 100,000 nested brackets, a 5,000-digit
number, a byte that is not UTF-8 — must not stop ``--help`` or the window); anything unreadable or
of the wrong type gives the default, and whoever loads the settings properly reports the real
problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .i18n import SYSTEM
from .untrusted_json import MAX_SETTINGS_BYTES, load_limited_json


@dataclass(frozen=True)
class EarlySettings:
    """``language``/``theme``: a setting value (``"system"`` by default); ``offline``: Offline
    mode is on in the settings."""

    language: str = SYSTEM
    theme: str = SYSTEM
    offline: bool = False


def read_early_settings(settings_file: Path) -> EarlySettings:
    """The early settings of ``settings_file`` (the defaults when it is missing or unreadable).
    Raises nothing."""
    try:
        with settings_file.open("rb") as file:
            raw: Any = load_limited_json(file.read(MAX_SETTINGS_BYTES + 1),
                                         max_bytes=MAX_SETTINGS_BYTES)
    except (OSError, ValueError):  # LimitError and JSONDecodeError are ValueErrors
        return EarlySettings()
    if not isinstance(raw, dict):
        return EarlySettings()
    interface, network = raw.get("interface"), raw.get("network")
    interface = interface if isinstance(interface, dict) else {}
    network = network if isinstance(network, dict) else {}
    language, theme = interface.get("language"), interface.get("theme")
    return EarlySettings(language=language if isinstance(language, str) else SYSTEM,
                         theme=theme if isinstance(theme, str) else SYSTEM,
                         offline=network.get("offline") is True)
