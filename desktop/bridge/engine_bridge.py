"""The engine and chat turns behind a worker thread, re-emitted as Qt signals.

The :class:`~mixtral_desk.core.engine.EngineHost` (which runs llama.cpp in its own process) is
driven from the ``engine`` task queue: loading, unloading and every chat turn (through
:mod:`mixtral_desk.core.chat`, which saves the reply as it streams). :meth:`EngineBridge.stop` is
called from the GUI thread directly; the host allows that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal

from mixtral_desk.core.errors import EngineBusyError, EngineCrashedError
from mixtral_desk.core.i18n import tr

from ..errors import ErrorSink
from ..signals import emit
from .tasks import TaskQueue

if TYPE_CHECKING:  # the engine package is imported on first use, after the first paint
    from mixtral_desk.core import chat
    from mixtral_desk.core.engine import EngineHost, LoadOptions, ModelInfo, SamplingOptions
    from mixtral_desk.core.planner import Plan
    from mixtral_desk.core.store import Store

    Turn = Callable[[EngineHost, Callable[[str], None]], chat.TurnResult]


@dataclass(frozen=True)
class LoadReport:
    """How the last model was loaded: ``plan`` when its placement was planned automatically
    (the plan that worked), ``notes`` what the planner said (the plan, a fallback after running
    out of memory), ``warnings`` where llama.cpp did not do what the plan expected, and
    ``n_cpu_moe`` the layers whose experts were kept in RAM.
    """

    n_cpu_moe: int = 0
    plan: Plan | None = None
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())


class EngineBridge(QObject):
    """Owns the engine host; runs loads and chat turns on the ``engine`` thread.

    Signals:
        load_started(str): a model file began loading.
        load_progress(float): loading progress, 0.0 to 1.0.
        model_loaded(object): the :class:`ModelInfo` of the loaded model.
        model_unloaded(): the model was unloaded (or lost in a crash).
        load_failed(object): the exception that stopped a load (already reported to the sink).
        reply_started(str): a turn began in this conversation id.
        token(str): the next piece of the streaming reply: the tokens that arrived since the
            GUI thread last took them (one cross-thread event per batch, not per token).
        tokens_ready(): internal — the worker put text in the buffer while it was empty.
        reply_finished(object): the turn's :class:`~mixtral_desk.core.chat.TurnResult`.
        reply_failed(object): the exception that ended the turn (the partial reply is stored as
            interrupted); for a crash, :attr:`engine_crashed` follows.
        engine_crashed(object): the :class:`EngineCrashedError` (the process died); reload to go on.
        busy_changed(bool): a reply is being generated (True) or not.
    """

    load_started = Signal(str)
    load_progress = Signal(float)
    model_loaded = Signal(object)
    model_unloaded = Signal()
    load_failed = Signal(object)
    reply_started = Signal(str)
    token = Signal(str)
    tokens_ready = Signal()
    reply_finished = Signal(object)
    reply_failed = Signal(object)
    engine_crashed = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, sink: ErrorSink, log_path: Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink = sink
        self._log_path = log_path
        self._buffer: list[str] = []
        self._buffer_lock = threading.Lock()
        self.tokens_ready.connect(self._drain)
        self._host_object: EngineHost | None = None
        self._busy = False
        self._info: ModelInfo | None = None
        self.last_options: LoadOptions | None = None
        self.last_auto = False
        self.last_fit_context = False
        self.load_report: LoadReport | None = None
        #: Why another user of the same engine host (the API server) keeps it busy, or None;
        #: the window sets it. A turn is not started while it gives a reason.
        self.busy_elsewhere: Callable[[], str | None] = lambda: None
        self.tasks = TaskQueue("engine", on_error=lambda e: sink.report(e), parent=self)

    # --- state ---------------------------------------------------------------------------------

    @property
    def model_info(self) -> ModelInfo | None:
        """The loaded model's facts (as last reported on the GUI thread), or ``None``."""
        return self._info

    @property
    def busy(self) -> bool:
        """Whether a reply is being generated."""
        return self._busy

    @property
    def pid(self) -> int | None:
        """The engine process id while it runs."""
        return self._host_object.pid if self._host_object is not None else None

    @property
    def host(self) -> EngineHost:
        """The engine host (created on first use), for other users of the same engine (the API
        server); they get :class:`EngineBusyError` while a chat turn runs, and vice versa."""
        return self._host

    @property
    def _host(self) -> EngineHost:
        if self._host_object is None:
            from mixtral_desk.core.engine import EngineHost

            self._host_object = EngineHost(self._log_path)
        return self._host_object

    def model_name(self) -> str | None:
        """The loaded model's file name without ``.gguf``."""
        return Path(self._info.path).stem if self._info is not None else None

    # --- loading -------------------------------------------------------------------------------

    def load(self, options: LoadOptions, auto: bool = False, fit_context: bool = False) -> None:
        """Load a model in the background (progress, then :attr:`model_loaded` or load_failed).

        ``auto``: plan the GPU layers and expert placement for this machine first (on the
        engine thread, replacing ``options``' ``n_gpu_layers`` and ``n_cpu_moe``); the plan is
        told to the user as it is made, and :attr:`load_report` holds it when the model is
        loaded. ``fit_context``: replace ``options.n_ctx`` by the longest context that fits this
        machine with the model (:mod:`mixtral_desk.core.context_size`).
        """
        self.last_options = options
        self.last_auto = auto
        self.last_fit_context = fit_context
        self._info = None
        self.load_report = None
        emit(self.load_started, str(options.model_path))
        self.tasks.submit(partial(self._load_now, options, auto, fit_context), self._loaded,
                          self._load_failed)

    def _load_now(self, options: LoadOptions, auto: bool,
                  fit_context: bool) -> tuple[ModelInfo, LoadReport]:
        """On the engine thread: load, with a plan when ``auto``."""
        host = self._host

        def load(load_options: LoadOptions) -> ModelInfo:
            return host.load(load_options, on_progress=partial(emit, self.load_progress))

        if fit_context:
            from mixtral_desk.core.context_size import automatic_context_for_file

            n_ctx = automatic_context_for_file(
                options.model_path, kv_type=options.kv_type, flash_attn=options.flash_attn,
                gpu_offload=host.backend_info().gpu_offload)
            options = options.model_copy(update={"n_ctx": n_ctx})
        if not auto:
            return load(options), LoadReport(n_cpu_moe=options.n_cpu_moe)
        from mixtral_desk.core import planner
        from mixtral_desk.core.gguf.model_file import inspect_model
        from mixtral_desk.core.hardware import detect_hardware

        notes: list[str] = []

        def say(text: str) -> None:
            notes.append(text)
            self._sink.inform(tr("Automatic GPU layers: {plan}", plan=text), timeout_ms=None)

        facts = inspect_model(options.model_path)
        backend = host.backend_info()
        hardware = detect_hardware(probe_gpus=backend.gpu_offload)
        info, plan, warnings = planner.auto_load(load, options, facts, hardware, backend, say)
        return info, LoadReport(plan.n_cpu_moe, plan, tuple(notes), tuple(warnings))

    def reload(self) -> None:
        """Load the last model again with the same options (after a crash or a settings change)."""
        if self.last_options is not None:
            self.load(self.last_options, self.last_auto, self.last_fit_context)

    def unload(self) -> None:
        """Free the model's memory (the engine process stays)."""
        def done(_: None) -> None:
            self._info = None
            emit(self.model_unloaded)
        self.tasks.submit(self._host.unload, done)

    def _loaded(self, result: tuple[ModelInfo, LoadReport]) -> None:
        info, self.load_report = result
        self._info = info
        emit(self.model_loaded, info)

    def _load_failed(self, error: BaseException) -> None:
        self._info = None
        self._sink.report(error, tr("while loading the model"))
        emit(self.load_failed, error)

    # --- chat turns ----------------------------------------------------------------------------

    def send(self, store: Store, conversation_id: str, text: str,
             sampling: SamplingOptions) -> None:
        """Add the user's message and stream the reply."""
        from mixtral_desk.core import chat

        name = self.model_name()
        self._run(conversation_id, lambda host, on_token: chat.send(
            store, host, conversation_id, text, sampling, on_token=on_token, model_name=name))

    def regenerate(self, store: Store, conversation_id: str, sampling: SamplingOptions) -> None:
        """Write a new reply to the last user message (a new branch)."""
        from mixtral_desk.core import chat

        name = self.model_name()
        self._run(conversation_id, lambda host, on_token: chat.regenerate(
            store, host, conversation_id, sampling, on_token=on_token, model_name=name))

    def edit_and_resend(self, store: Store, conversation_id: str, message_id: str, text: str,
                        sampling: SamplingOptions) -> None:
        """Add ``text`` as a sibling of user message ``message_id`` (a new branch) and answer it."""
        from mixtral_desk.core import chat

        name = self.model_name()

        def turn(host: EngineHost, on_token: Callable[[str], None]) -> chat.TurnResult:
            edited = store.get_message(message_id)
            store.add_message(conversation_id, "user", text, parent_id=edited.parent_id)
            return chat.reply(store, host, conversation_id, sampling, on_token=on_token,
                              model_name=name)
        self._run(conversation_id, turn)

    def continue_reply(self, store: Store, conversation_id: str, message_id: str,
                       sampling: SamplingOptions) -> None:
        """Continue an interrupted reply in place."""
        from mixtral_desk.core import chat

        self._run(conversation_id, lambda host, on_token: chat.continue_reply(
            store, host, message_id, sampling, on_token=on_token))

    def stop(self) -> None:
        """Stop the reply being generated (or a load); returns at once."""
        if self._host_object is not None:
            self._host_object.stop()

    def _run(self, conversation_id: str, turn: Turn) -> None:
        self._set_busy(True)
        emit(self.reply_started, conversation_id)
        self.tasks.submit(lambda: turn(self._host, self._buffer_token),
                          self._finished, self._failed)

    def _buffer_token(self, text: str) -> None:  # on the engine thread
        with self._buffer_lock:
            wake = not self._buffer
            self._buffer.append(text)
        if wake:
            emit(self.tokens_ready)

    def _drain(self) -> None:
        with self._buffer_lock:
            text = "".join(self._buffer)
            self._buffer.clear()
        if text:
            emit(self.token, text)

    def _finished(self, result: chat.TurnResult) -> None:
        self._drain()  # the last pieces before the end, whatever order events arrived in
        self._set_busy(False)
        emit(self.reply_finished, result)

    def _failed(self, error: BaseException) -> None:
        self._drain()
        self._set_busy(False)
        if isinstance(error, EngineCrashedError):
            self._info = None
            emit(self.reply_failed, error)
            emit(self.model_unloaded)
            emit(self.engine_crashed, error)
            return
        reason = self.busy_elsewhere() if isinstance(error, EngineBusyError) else None
        if reason:  # the API server took the engine just before this turn
            error = EngineBusyError(reason)
        self._sink.report(error, tr("while generating the reply"))
        emit(self.reply_failed, error)

    def check_alive(self) -> bool:
        """Notice an engine that died while idle (emits the crash signals); False if it did."""
        host = self._host_object
        if self._info is None or self._busy or self.tasks.busy or host is None or host.is_alive:
            return True
        self._info = None
        emit(self.model_unloaded)
        emit(self.engine_crashed, EngineCrashedError(tr(
            "The engine process stopped while idle (it may have run out of memory or been "
            "killed). Reload the model to continue.")))
        return False

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            emit(self.busy_changed, busy)

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop any reply, stop the engine process and the worker thread."""
        host = self._host_object
        if host is not None:
            host.stop()
            self.tasks.submit(host.close)
        self.tasks.close(timeout=15)
        if host is not None:
            host.close()
