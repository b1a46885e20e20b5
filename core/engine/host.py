"""The host side of the engine: starts the engine process, sends it requests, streams replies.

The host never imports ``llama_cpp``: llama.cpp runs in a separate process started with the
``spawn`` method (so it also works in a frozen app — call ``multiprocessing.freeze_support()`` at
the top of the app's entry point). When llama.cpp aborts, segfaults or the system kills the process
for memory, the host notices (end of file on the event pipe, the exit code) and raises
:class:`~mixtral_desk.core.errors.EngineCrashedError` in plain words; the next :meth:`load`
starts a fresh process. When the host dies, the engine exits by itself (see ``worker``).

Threading: one request runs at a time. :meth:`EngineHost.stop` may be called from any thread
(a GUI button, a SIGINT handler); everything else is meant for one thread at a time.

Why one module of about 500 lines: the process's life (start, crash detection, shutdown) and the
requests it serves share the same pipe and state; the protocol is in :mod:`.protocol`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Literal

from ..errors import (
    ContextOverflowError,
    EngineBusyError,
    EngineCrashedError,
    EngineError,
    GPUOffloadUnavailableError,
    ModelFileNotFoundError,
    ModelLoadError,
    UserText,
)
from ..i18n import N_, current_language
from ..paths import data_paths
from . import worker
from .events import BackendInfo, ChatMessage, DoneEvent, ModelInfo, ReplyStats, TokenEvent
from .logs import tail_lines
from .options import LoadOptions, SamplingOptions
from .protocol import (
    BackendMsg,
    BackendRequest,
    ChatRequest,
    Command,
    CompleteRequest,
    DebugCrashRequest,
    DoneMsg,
    ErrorMsg,
    Event,
    ForgetCacheRequest,
    LoadedMsg,
    LoadRequest,
    ProgressMsg,
    ShutdownRequest,
    StartedMsg,
    StopRequest,
    TokenMsg,
    UnloadRequest,
    WarmRequest,
)

DEBUG_ENV = "MIXTRAL_DESK_ENGINE_DEBUG"  # "1" lets tests crash the engine on purpose
POLL_S = 0.02
STOP_GRACE_S = 0.05

ReplyEvent = TokenEvent | DoneEvent


def _describe_exit(code: int | None) -> UserText:
    """What happened to the engine process, as a sentence."""
    if code is None:
        return UserText(N_("The engine process stopped answering."))
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        if name == "SIGKILL":
            return UserText(N_("The engine process was killed (signal SIGKILL; the system may "
                               "have run out of memory)."))
        return UserText(N_("The engine process crashed (signal {signal})."), signal=name)
    return UserText(N_("The engine process exited unexpectedly (exit code {code})."), code=code)


# When the engine died, as a sentence that follows :func:`_describe_exit`'s.
WHILE_GENERATING = N_("It happened while generating; the reply so far was kept. Reload the model "
                      "to continue.")
WHILE_LOADING = N_("It happened while loading the model. Check the model file and the load "
                   "settings, then try again.")
WHILE_UNLOADING = N_("It happened while unloading the model.")
WHILE_REPORTING = N_("It happened while reporting its backend.")
BEFORE_REQUEST = N_("It happened before it received a request.")


class ReplyStream(Iterator[ReplyEvent]):
    """The events of one reply: :class:`TokenEvent`\\ s, then one :class:`DoneEvent`.

    Iterating raises :class:`EngineCrashedError` when the engine dies, and the request's own
    errors (:class:`ContextOverflowError`, :class:`EngineError`). :meth:`close` (also on garbage
    collection or leaving a ``with`` block) abandons the reply: the engine is told to stop and the
    host is free for the next request at once.
    """

    def __init__(self, host: EngineHost, rid: int) -> None:
        self._host = host
        self.rid = rid
        self._finished = False
        self._prompt_tokens = 0
        self._dropped = 0
        self._tokens = 0
        self._started = time.perf_counter()
        self._first_at = 0.0
        self._last_at = 0.0
        self._deadline: float | None = None

    def __iter__(self) -> ReplyStream:
        return self

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # No pipe I/O from a finalizer (it may run inside another send): the stop goes out with
        # the host's next request instead.
        if not getattr(self, "_finished", True):
            self._finished = True
            self._host._release(self.rid)
            self._host._abandoned = max(self._host._abandoned, self.rid)

    def close(self) -> None:
        """Abandon the reply (stopping the engine's work on it); idempotent."""
        if not self._finished:
            self._finish()
            self._host._send_stop(self.rid)

    def _finish(self) -> None:
        self._finished = True
        self._host._release(self.rid)

    def _cancelled_stats(self) -> DoneEvent:
        now = time.perf_counter()
        rate = ((self._tokens - 1) / (self._last_at - self._first_at)
                if self._tokens > 1 and self._last_at > self._first_at else 0.0)
        return DoneEvent(ReplyStats(
            prompt_tokens=self._prompt_tokens, completion_tokens=self._tokens,
            time_to_first_token_s=(self._first_at or now) - self._started,
            decode_tokens_per_s=rate, total_seconds=now - self._started,
            finish_reason="cancelled", dropped_messages=self._dropped))

    def __next__(self) -> ReplyEvent:
        if self._finished:
            raise StopIteration
        host = self._host
        while True:
            now = time.perf_counter()
            if self._deadline is None and host._stop_upto >= self.rid:
                self._deadline = now + STOP_GRACE_S
            if self._deadline is not None and now >= self._deadline:
                # The engine is inside a slow step (a long prompt, a big model's token): answer
                # now; its own DoneMsg for this rid is skipped later.
                self._finish()
                return self._cancelled_stats()
            timeout = POLL_S if self._deadline is None else min(POLL_S, self._deadline - now)
            try:
                event = host._poll(max(timeout, 0.0), WHILE_GENERATING)
            except BaseException:
                self._finish()
                raise
            if event is None or event.rid != self.rid:
                continue
            if isinstance(event, StartedMsg):
                self._prompt_tokens = event.prompt_tokens
                self._dropped = event.dropped_messages
            elif isinstance(event, TokenMsg):
                stamp = time.perf_counter()
                if not self._first_at:
                    self._first_at = stamp
                self._last_at = stamp
                self._tokens += event.n_tokens
                if event.text:
                    return TokenEvent(event.text)
            elif isinstance(event, DoneMsg):
                self._finish()
                return DoneEvent(event.stats)
            elif isinstance(event, ErrorMsg):
                self._finish()
                raise _error_from(event)


def _error_from(event: ErrorMsg) -> Exception:
    if event.kind == "ModelFileNotFoundError":
        return ModelFileNotFoundError(event.path or event.message)
    classes: dict[str, type[EngineError]] = {
        "ModelLoadError": ModelLoadError,
        "GPUOffloadUnavailableError": GPUOffloadUnavailableError,
        "ContextOverflowError": ContextOverflowError,
    }
    return classes.get(event.kind, EngineError)(event.text or event.message)


class EngineHost:
    """Runs llama.cpp in a child process and talks to it.

    ``log_path``: the engine log (llama.cpp's own lines), by default ``data_paths().engine_log``.
    The process starts on the first :meth:`load` or :meth:`backend_info`.
    """

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = Path(log_path) if log_path is not None else data_paths().engine_log
        self._lock = threading.RLock()  # one request at a time; held through load()
        self._send_lock = threading.Lock()  # request ids and the command pipe
        self._stop_upto = 0  # requests with rid <= this were asked to stop
        self._abandoned = 0  # streams dropped without close(); their stop is sent lazily
        self._process: BaseProcess | None = None
        self._commands: Connection | None = None
        self._events: Connection | None = None
        self._rid = 0
        self._active: int | None = None  # the rid of a reply being streamed
        self._model_info: ModelInfo | None = None
        self._closing = False

    # --- properties ----------------------------------------------------------------------------

    @property
    def model_info(self) -> ModelInfo | None:
        """The loaded model's facts, ``None`` when none is loaded (or the engine died)."""
        return self._model_info

    @property
    def is_alive(self) -> bool:
        """Whether the engine process runs."""
        process = self._process
        return process is not None and process.is_alive()

    @property
    def pid(self) -> int | None:
        """The engine process's id, ``None`` when it does not run."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    # --- process management --------------------------------------------------------------------

    def _ensure_process(self) -> None:
        if self.is_alive:
            return
        self._drop_process()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        context = multiprocessing.get_context("spawn")
        commands_r, commands_w = context.Pipe(duplex=False)
        events_r, events_w = context.Pipe(duplex=False)
        process = context.Process(
            target=worker.run, name="mixtral-desk-engine", daemon=True,
            args=(commands_r, events_w, str(self.log_path), os.getpid(),
                  threading.current_thread() is threading.main_thread(),
                  os.environ.get(DEBUG_ENV) == "1", current_language()))
        try:
            process.start()
        except OSError as error:
            raise EngineError(N_("The engine process could not start: {error}"),
                              error=str(error)) from error
        finally:
            commands_r.close()
            events_w.close()
        self._process, self._commands, self._events = process, commands_w, events_r
        self._closing = False

    def _drop_process(self) -> None:
        for connection in (self._commands, self._events):
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.close()
        self._process = self._commands = self._events = None
        self._model_info = None

    def _send(self, make: Callable[[int], Command]) -> int:
        with self._send_lock:
            self._rid += 1
            rid = self._rid
            assert self._commands is not None
            try:
                if self._abandoned:
                    self._commands.send(StopRequest(self._abandoned))
                    self._abandoned = 0
                self._commands.send(make(rid))
            except (OSError, EOFError):
                self._crashed(BEFORE_REQUEST)
            return rid

    def _send_stop(self, rid: int) -> None:
        with self._send_lock:
            if self._commands is not None:
                with contextlib.suppress(OSError, EOFError):
                    self._commands.send(StopRequest(rid))

    def _release(self, rid: int) -> None:
        if self._active == rid:
            self._active = None

    def _crashed(self, during: str) -> None:
        """Raise EngineCrashedError (or EngineError after close()) for a dead engine.

        ``during``: one of the ``WHILE_…`` sentences, saying when it happened.
        """
        process = self._process
        code: int | None = None
        if process is not None:
            process.join(5)
            code = process.exitcode
        closing = self._closing
        self._drop_process()
        if closing:
            raise EngineError(N_("The engine was closed."))
        what, when = _describe_exit(code), UserText(during)
        lines = [ln for ln in tail_lines(self.log_path, 6) if ln.strip()] \
            if during == WHILE_LOADING else []
        if lines:
            raise EngineCrashedError(N_("{what} {when}\nllama.cpp's last log lines:\n{lines}"),
                                     exit_code=code, what=what, when=when, lines="\n".join(lines))
        raise EngineCrashedError(N_("{what} {when}"), exit_code=code, what=what, when=when)

    def _poll(self, timeout: float, during: str) -> Event | None:
        """The next event, or ``None`` after ``timeout`` seconds; raises when the engine died."""
        events = self._events
        if events is None:
            raise EngineError(N_("The engine is not running."))
        try:
            if not events.poll(timeout):
                return None
            event: Event = events.recv()
            return event
        except (EOFError, OSError):
            self._crashed(during)
            raise AssertionError("unreachable") from None

    def _wait(self, rid: int, during: str) -> Event:
        """Block until an event for ``rid`` arrives (skipping leftovers of older requests)."""
        while True:
            event = self._poll(0.5, during)
            if event is not None and event.rid == rid:
                return event

    def _check_idle(self) -> None:
        if self._active is not None:
            raise EngineBusyError(N_("A reply is being generated; stop it or wait for it to end."))

    # --- requests ------------------------------------------------------------------------------

    def load(self, options: LoadOptions,
             on_progress: Callable[[float], None] | None = None) -> ModelInfo:
        """Load a model (replacing the loaded one), starting the engine process if needed.

        ``on_progress`` gets fractions 0.0 … 1.0 on the calling thread. :meth:`stop` from another
        thread cancels the load (a :class:`ModelLoadError`).

        Raises:
            ModelFileNotFoundError: the path is not a file.
            ModelLoadError: llama.cpp refused the file; the message carries its log lines.
            GPUOffloadUnavailableError: GPU layers were asked of a build that cannot offload.
            EngineCrashedError: the engine process died while loading.
            EngineBusyError: a reply is being generated.
        """
        path = Path(options.model_path)
        if not path.is_file():
            raise ModelFileNotFoundError(path)
        with self._lock:
            self._check_idle()
            self._ensure_process()
            self._model_info = None
            rid = self._send(lambda r: LoadRequest(r, options))
            while True:
                event = self._wait(rid, WHILE_LOADING)
                if isinstance(event, ProgressMsg):
                    if on_progress is not None:
                        on_progress(event.fraction)
                elif isinstance(event, LoadedMsg):
                    self._model_info = event.info
                    return event.info
                elif isinstance(event, ErrorMsg):
                    raise _error_from(event)

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
             cache_tag: str | None = None) -> ReplyStream:
        """Start a reply to ``messages`` (formatted with the model's chat template).

        ``cache_tag``: tags the prompt cache entries this reply leaves, so that they can be
        forgotten with the conversation (:meth:`forget_cached`).

        Older turns that do not fit the context are left out (``ReplyStats.dropped_messages``);
        a template without a system role gets the system prompt merged into the first user turn.
        The reply's leading whitespace is dropped (SentencePiece models start it with a space).
        The request is sent at once; iterate the stream for :class:`TokenEvent`\\ s and a final
        :class:`DoneEvent`.

        Raises:
            EngineBusyError: a reply is already being generated.
            EngineError: no model is loaded.
            (while iterating) ContextOverflowError, EngineCrashedError, EngineError.
        """
        request = tuple(messages)
        if not request:
            raise ValueError("messages is empty")
        return self._start(lambda rid: ChatRequest(rid, request, sampling, cache_tag))

    def complete(self, prompt: str, sampling: SamplingOptions) -> ReplyStream:
        """Start a raw continuation of ``prompt`` (no template); see :meth:`chat`."""
        return self._start(lambda rid: CompleteRequest(rid, prompt, sampling))

    def _start(self, make: Callable[[int], Command]) -> ReplyStream:
        with self._lock:
            self._check_idle()
            if self._model_info is None or not self.is_alive:
                raise EngineError(N_("No model is loaded; load one first."))
            rid = self._send(make)
            self._active = rid
            return ReplyStream(self, rid)

    def stop(self) -> None:
        """Stop the running reply (or load); safe from any thread, a no-op when idle.

        The reply's stream ends within 100 ms with ``finish_reason="cancelled"``.
        """
        with self._send_lock:
            self._stop_upto = self._rid
            if self._commands is not None:
                with contextlib.suppress(OSError, EOFError):
                    self._commands.send(StopRequest(self._rid))

    def warm(self, messages: Sequence[ChatMessage], sampling: SamplingOptions, *,
             cache_tag: str | None = None) -> bool:
        """Start getting a conversation ready in the engine, in the background: its cached state
        is restored, or its history evaluated, so that its next turn starts at once. Returns at
        once; ``False`` when nothing was started (no model, a reply running, no messages).

        Any later request (a reply, a load, an unload …) stops the warm-up first, through the
        same stop mark as :meth:`stop`; what was evaluated by then stays and is reused, so warming
        never makes a turn slower. ``sampling`` decides the room kept for the reply, as in
        :meth:`chat`.
        """
        request = tuple(messages)
        with self._lock:
            if not request or self._active is not None or self._model_info is None \
                    or not self.is_alive:
                return False
            rid = self._send(lambda r: WarmRequest(r, request, sampling, cache_tag))
            with self._send_lock:
                self._abandoned = max(self._abandoned, rid)  # stopped before the next request
        return True

    def forget_cached(self, tag: str) -> None:
        """Have the engine remove the prompt cache entries tagged ``tag`` from RAM and disk, after
        the running reply if any; returns at once (a no-op without an engine process)."""
        with self._send_lock:
            if self._commands is not None:
                with contextlib.suppress(OSError, EOFError):
                    self._commands.send(ForgetCacheRequest(tag))

    def unload(self) -> None:
        """Free the model's memory; the engine process keeps running.

        Raises:
            EngineBusyError: a reply is being generated.
            EngineCrashedError: the engine died meanwhile.
        """
        with self._lock:
            self._check_idle()
            if not self.is_alive:
                self._model_info = None
                return
            rid = self._send(lambda r: UnloadRequest(r))
            self._wait(rid, WHILE_UNLOADING)
            self._model_info = None

    def backend_info(self) -> BackendInfo:
        """What the engine's llama.cpp can do (starts the engine process if needed).

        Raises:
            EngineCrashedError: the engine died while answering.
        """
        with self._lock:
            if self._active is not None and self._model_info is not None:
                return self._model_info.backend
            self._check_idle()
            self._ensure_process()
            rid = self._send(lambda r: BackendRequest(r))
            event = self._wait(rid, WHILE_REPORTING)
            if isinstance(event, ErrorMsg):
                raise _error_from(event)
            assert isinstance(event, BackendMsg)
            return event.info

    def close(self) -> None:
        """Stop the engine process (politely, then by force); idempotent."""
        self._closing = True
        with self._send_lock:
            self._stop_upto = self._rid
        process = self._process
        if process is not None:
            with self._send_lock:
                if self._commands is not None:
                    with contextlib.suppress(OSError, EOFError):
                        self._commands.send(ShutdownRequest())
            process.join(3)
            if process.is_alive():
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)
        self._drop_process()
        self._active = None

    def __enter__(self) -> EngineHost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _debug_crash(self, how: Literal["abort", "segfault"] = "abort") -> None:
        """Tests only (needs ``MIXTRAL_DESK_ENGINE_DEBUG=1`` when the engine started)."""
        with self._send_lock:
            if self._commands is not None:
                self._commands.send(DebugCrashRequest(0, how))


def probe_backend(log_path: Path | None = None) -> BackendInfo:
    """:class:`BackendInfo` from a throwaway engine process (about a second).

    Done out of process on purpose: importing llama_cpp loads llama.cpp's libraries (and a GPU
    driver) into the caller, which the GUI and the CLI's ``doctor`` should not carry around.

    Raises:
        EngineCrashedError: the engine died while starting (e.g. a broken llama.cpp build).
    """
    with EngineHost(log_path) as host:
        return host.backend_info()


__all__ = ["EngineHost", "ReplyEvent", "ReplyStream", "probe_backend"]
