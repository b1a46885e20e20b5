"""A first-come, first-served turnstile in front of the one loaded model.

The engine generates one reply at a time. Every API request waits here for its turn; turns are
handed over strictly in arrival order (a plain lock may let a newcomer overtake a waiter), and a
request whose client leaves while waiting gives up its place without disturbing the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from mixtral_desk.core.errors import DeskError


class QueueFullError(DeskError, RuntimeError):
    """Raised when more requests wait than the queue admits (the API answers 503)."""


class FairQueue:
    """An asyncio FIFO queue of turns; use ``async with queue.turn(): ...``.

    Belongs to one event loop (the server's). ``max_waiting`` bounds the requests waiting behind
    the running one; a request beyond it is refused at once rather than left hanging.
    """

    def __init__(self, max_waiting: int = 64) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self._busy = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def busy(self) -> bool:
        """Whether a request holds the turn."""
        return self._busy

    @property
    def waiting(self) -> int:
        """How many requests wait for their turn."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        """Wait for this request's turn (in arrival order).

        Raises:
            QueueFullError: ``max_waiting`` requests already wait.
            asyncio.CancelledError: the request was cancelled while waiting (its place is freed).
        """
        if not self._busy and not self._waiters:
            self._busy = True
            return
        if self.waiting >= self.max_waiting:
            raise QueueFullError(
                f"The server is busy: {self.waiting} requests are already waiting for the model."
                " Try again shortly.")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn arrived just as we left: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """End the current turn and hand it to the longest-waiting request, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes on; _busy stays True
                return
        self._busy = False

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the model for the duration of the ``async with`` block.

        Raises:
            QueueFullError: see :meth:`acquire`.
        """
        await self.acquire()
        try:
            yield
        finally:
            self.release()
