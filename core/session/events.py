"""Plain events for the session layer: a list of callbacks, called in order.

The Qt-free core reports through these; the window's bridges connect Qt signals to them (so that a
callback run on a worker thread reaches the GUI thread as a queued signal), and the CLI connects
functions that print.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Event(Generic[T]):
    """Something that happened, with one value of type ``T``.

    Callbacks run on the thread that emits, in the order they were connected; one that raises
    stops the emission (the error reaches the emitter).
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[T], object]] = []

    def connect(self, callback: Callable[[T], object]) -> None:
        """Call ``callback(value)`` on every :meth:`emit`."""
        self._callbacks.append(callback)

    def emit(self, value: T) -> None:
        """Call every connected callback with ``value``."""
        for callback in tuple(self._callbacks):
            callback(value)
