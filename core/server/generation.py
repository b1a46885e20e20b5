"""From the blocking engine to async responses: one reply at a time, tokens bridged to the loop.

Each reply runs on its own thread (the engine's calls block); its events are handed to the event
loop with ``call_soon_threadsafe``, so the loop never waits on the engine. When the consumer
leaves early (the client disconnected), the engine is told to stop and the next request gets the
engine as soon as the engine has ended the reply (within about 100 ms for the local engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from mixtral_desk.core.engine.interface import ChatEngine, ReplyEvent, ReplyEvents
from mixtral_desk.core.server.errors import ApiError
from mixtral_desk.core.server.queue import FairQueue

StartReply = Callable[[ChatEngine], ReplyEvents]


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _End:
    pass


_END = _End()


class Replies:
    """Runs replies on ``engine`` one at a time, in arrival order (see :class:`FairQueue`)."""

    def __init__(self, engine: ChatEngine, max_waiting: int = 64) -> None:
        self.engine = engine
        self.queue = FairQueue(max_waiting)
        self._closed = False

    def shutdown(self) -> None:
        """Refuse new replies and stop the running one (safe from any thread)."""
        self._closed = True
        if self.queue.busy:
            self.engine.stop()

    def reopen(self) -> None:
        """Accept replies again (after :meth:`shutdown`)."""
        self._closed = False

    async def events(self, start: StartReply) -> AsyncGenerator[ReplyEvent, None]:
        """Wait for the engine, start a reply with ``start(engine)`` and yield its events.

        Yields :class:`TokenEvent`\\ s and a last :class:`DoneEvent` (with the reply's
        :class:`ReplyStats`). Closing the iterator early (``aclose()``, cancellation) stops the
        generation and frees the engine before it returns.

        Raises:
            QueueFullError: too many requests wait already.
            ApiError: 503, the server is shutting down.
            EngineError (and its subclasses): raised by the engine, re-raised here.
        """
        async with self.queue.turn():
            if self._closed:
                raise ApiError(503, "The server is shutting down.", "server_error",
                               code="server_shutting_down")
            loop = asyncio.get_running_loop()
            inbox: asyncio.Queue[ReplyEvent | _Failure | _End] = asyncio.Queue()
            cancel = threading.Event()

            def put(item: ReplyEvent | _Failure | _End) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed (server shutdown)
                    loop.call_soon_threadsafe(inbox.put_nowait, item)

            def produce() -> None:
                try:
                    if cancel.is_set():
                        return
                    stream = start(self.engine)
                    try:
                        for event in stream:
                            put(event)
                            if cancel.is_set() or self._closed:
                                break
                    finally:
                        stream.close()  # frees the engine at once
                except BaseException as error:
                    put(_Failure(error))
                finally:
                    put(_END)

            thread = threading.Thread(target=produce, name="mixtral-desk-api-reply",
                                      daemon=True)
            thread.start()
            try:
                while True:
                    item = await inbox.get()
                    if isinstance(item, _End):
                        return
                    if isinstance(item, _Failure):
                        raise item.error
                    yield item
            finally:
                if thread.is_alive():
                    cancel.set()
                    self.engine.stop()
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(thread.join)
