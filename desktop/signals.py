"""Emitting Qt signals from Python safely.

PySide6 6.12.0 returns ``True`` from ``SignalInstance.emit()`` without taking a reference to it, so
every emit drops one reference to ``True``; on Python < 3.12 (where ``True`` is not immortal)
a few thousand emits — one per streamed token — end in "Fatal Python error: bool_dealloc".
:func:`emit` gives the reference back when (and only when) this PySide has the bug, which is
measured once at import. Every emit in the desktop layer goes through it, and no signal's bound
``emit`` is used as a slot (a signal is connected to a signal instead).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance


class _Probe(QObject):
    ping = Signal()


def _emit_drops_a_reference() -> bool:
    probe = _Probe()
    before = sys.getrefcount(True)
    result: object = probe.ping.emit()  # type: ignore[func-returns-value]  # it returns a bool
    leaked = sys.getrefcount(True) - before
    del result
    after = sys.getrefcount(True) - before
    # With the bug, holding the result does not raise the count and releasing it lowers it.
    broken = after < 0 or leaked < 0
    if broken:
        _give_back(True)
    return broken


def _give_back(value: object) -> None:
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(value))


EMIT_DROPS_REFERENCE = _emit_drops_a_reference()


def emit(signal: SignalInstance, *args: Any) -> None:
    """``signal.emit(*args)``, without PySide 6.12's lost reference to the returned bool."""
    result: object = signal.emit(*args)  # type: ignore[func-returns-value]  # a bool
    if EMIT_DROPS_REFERENCE and isinstance(result, bool):
        _give_back(result)
