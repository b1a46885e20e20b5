"""Byte sizes as people read and write them."""

from __future__ import annotations

import re

from .errors import DeskError
from .i18n import N_, tr

GiB = 1024**3
MiB = 1024**2

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2,
          "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class SizeError(DeskError, ValueError):
    """Raised when a text is not a size (``parse_size``); the message says what is accepted."""


def format_bytes(n: int | float) -> str:
    """``26_440_000_000`` → ``"26.4 GB"`` (decimal units, as disks and the Hub show them)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_memory(count: int | None) -> str:
    """``25.0 GiB``-style text (binary units, as systems show RAM); ``unknown`` for None."""
    if count is None:
        return tr("unknown")
    if count >= GiB:
        return f"{count / GiB:.1f} GiB"
    return f"{count / MiB:.0f} MiB"


def format_count(value: int) -> str:
    """A count as the Hub shows one: ``9800``, ``412.0k``, ``1.2M``."""
    if value >= 1_000_000:
        return f"{value / 1e6:.1f}M"
    return f"{value / 1e3:.1f}k" if value >= 10_000 else str(value)


def format_parameters(value: int | None) -> str:
    """A parameter count in billions (``46.7B``), or "–" when unknown."""
    return f"{value / 1e9:.1f}B" if value else "–"


def parse_size(text: str) -> int:
    """``"24GiB"``, ``"8 GB"``, ``"512M"`` or plain bytes → a number of bytes.

    Raises:
        SizeError: the text is not a size (a ``ValueError``); the message says what is accepted.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise SizeError(N_("{text} is not a size; use bytes or a unit like 24GiB, 16GB, 512MiB"),
                        text=repr(text))
    return int(float(match.group(1)) * _UNITS[unit])
