"""The core :class:`~mixtral_desk.core.session.Session` behind a worker thread, as Qt signals.

The session's methods block (loading a model, a chat turn), so they run on the ``engine`` task
queue; its events, emitted there, are re-emitted as Qt signals that reach the GUI thread queued.
A turn's SQL runs on the store thread (through :class:`~.store_bridge.QueuedStore`), so the
store queue saves the streaming reply. :meth:`SessionBridge.stop` is called from the GUI thread
directly; the session allows that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtCore import QObject, Signal

from mixtral_desk.core.errors import EngineBusyError, EngineCrashedError
from mixtral_desk.core.i18n import N_, tr

from ..errors import Action, ErrorSink
from ..signals import emit
from .store_bridge import QueuedStore, StoreBridge
from .tasks import TaskQueue

_log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the session package (pydantic, the engine) is imported after the first paint
    from mixtral_desk.core.chat import TokenCallback, TurnResult
    from mixtral_desk.core.engine import ModelInfo
    from mixtral_desk.core.session import LoadReport, Session
    from mixtral_desk.core.settings import Settings
    from mixtral_desk.core.store import Store

    Turn = Callable[[Session, TokenCallback], TurnResult]

T = TypeVar("T")

#: Why Send waits while the API server answers (the same engine generates one reply at a time).
SERVER_BUSY = N_("The API server is answering a request; send again when it has finished.")


class SessionBridge(QObject):
    """Owns the session; runs its loads and chat turns on the ``engine`` thread.

    Signals:
        load_started(str): a model file began loading (its path).
        load_progress(float): loading progress, 0.0 to 1.0.
        planner_said(str): a sentence of the automatic plan, as it is made.
        model_loaded(object): the :class:`ModelInfo` of the loaded model.
        model_unloaded(): the model was unloaded (or lost in a crash).
        load_failed(object): the exception that stopped a load (already reported to the sink).
        conversation_created(object): a new chat's first message created this
            :class:`~mixtral_desk.core.store.Conversation` (its reply follows).
        token(str): the next piece of the streaming reply: the tokens that arrived since the
            GUI thread last took them (one cross-thread event per batch, not per token).
        tokens_ready(): internal — the worker put text in the buffer while it was empty.
        reply_finished(object): the turn's :class:`~mixtral_desk.core.chat.TurnResult`.
        reply_failed(object): the exception that ended the turn (the partial reply is stored as
            interrupted; reported to the sink, except NoModelError); for a crash,
            :attr:`engine_crashed` follows.
        engine_crashed(object): the :class:`EngineCrashedError` (the process died); reload to go on.
        busy_changed(bool): a turn was started (True) or ended (False).
    """

    load_started = Signal(str)
    load_progress = Signal(float)
    planner_said = Signal(str)
    model_loaded = Signal(object)
    model_unloaded = Signal()
    load_failed = Signal(object)
    conversation_created = Signal(object)
    token = Signal(str)
    tokens_ready = Signal()
    reply_finished = Signal(object)
    reply_failed = Signal(object)
    engine_crashed = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, sink: ErrorSink, store: StoreBridge, log_path: Path | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink = sink
        self._store = QueuedStore(store)
        self._log_path = log_path
        self._session: Session | None = None
        self._settings: Settings | None = None
        self._buffer: list[str] = []
        self._buffer_lock = threading.Lock()
        self._turn_running = False  # the GUI thread's view: a turn was submitted, not yet ended
        self.tokens_ready.connect(self._drain)
        self.tasks = TaskQueue("engine", on_error=lambda e: sink.report(e), parent=self)
        # The buttons a load error's notice offers (the window sets it: Convert for an old file).
        self.load_error_actions: Callable[[BaseException], tuple[Action, ...]] = lambda _: ()

    # --- the session ---------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        """The session (created on first use, with the settings given so far)."""
        if self._session is None:
            from mixtral_desk.core.session import Session
            from mixtral_desk.core.settings import Settings

            session = Session(self._settings or Settings(), log_path=self._log_path)
            session.load_started.connect(lambda path: emit(self.load_started, str(path)))
            session.load_progress.connect(partial(emit, self.load_progress))
            session.planner_said.connect(partial(emit, self.planner_said))
            session.model_unloaded.connect(lambda _: emit(self.model_unloaded))
            self._session = session
        return self._session

    def use_settings(self, settings: Settings) -> None:
        """The settings changed: the next load and turn use them."""
        self._settings = settings
        if self._session is not None:
            self._session.settings = settings

    @property
    def model_info(self) -> ModelInfo | None:
        """The loaded model's facts, or ``None``."""
        return self._session.model_info if self._session is not None else None

    @property
    def load_report(self) -> LoadReport | None:
        """How the loaded model was loaded, or ``None``."""
        return self._session.load_report if self._session is not None else None

    @property
    def model_name(self) -> str | None:
        """The loaded model's file name without ``.gguf``."""
        return self._session.model_name if self._session is not None else None

    @property
    def last_model(self) -> Path | None:
        """The model file loaded last (it may have been unloaded since)."""
        choice = self._session.last_choice if self._session is not None else None
        return choice.path if choice is not None else None

    @property
    def busy(self) -> bool:
        """Whether a turn is running or about to (as seen on the GUI thread)."""
        return self._turn_running

    @property
    def serving_busy(self) -> bool:
        """Whether the API server is answering a request (read live)."""
        return self._session is not None and self._session.serving_busy

    def idle_deadline(self, idle_seconds: float | None = None) -> float | None:
        """When the model may be unloaded for being idle (``time.monotonic()``), or None (see
        :meth:`~mixtral_desk.core.session.Session.idle_deadline`)."""
        return self._session.idle_deadline(idle_seconds) if self._session is not None else None

    def delete_conversation(self, store: Store, conversation_id: str) -> int:
        """Delete a conversation and its prompt cache states, the engine's copies in RAM
        included (:meth:`~mixtral_desk.core.session.Session.delete_conversation`). Called on the
        store thread (with the store it owns); starts no engine and waits for none.

        Raises:
            NotFoundError: no conversation has this id.
        """
        session = self._session
        if session is not None:
            return session.delete_conversation(store, conversation_id)
        from mixtral_desk.core.session import delete_conversation

        return delete_conversation(store, conversation_id)  # no session yet: no engine either

    def report(self, error: BaseException) -> None:
        """Report an error of the session's work to the error sink."""
        self._sink.report(error)

    @property
    def pid(self) -> int | None:
        """The engine process id while it runs."""
        return self._session.engine_pid if self._session is not None else None

    def run(self, work: Callable[[Session], T], on_done: Callable[[T], object] | None = None,
            on_error: Callable[[BaseException], object] | None = None) -> None:
        """Run ``work(session)`` on the engine thread (serving, unloading when idle…);
        ``on_done(result)`` or ``on_error(exc)`` on the GUI thread (errors: the sink)."""
        session = self.session
        self.tasks.submit(lambda: work(session), on_done, on_error)

    # --- loading -------------------------------------------------------------------------------

    def load(self, path: Path) -> None:
        """Load a model file with the load settings, in the background (progress, then
        :attr:`model_loaded` or :attr:`load_failed`)."""
        from mixtral_desk.core.session import LoadChoice

        self.run(lambda s: s.load(LoadChoice(path)), partial(emit, self.model_loaded),
                 self._load_failed)

    def unload(self) -> None:
        """Stop serving and free the model's memory (the engine process stays)."""
        self.run(lambda s: s.unload())

    def _load_failed(self, error: BaseException) -> None:
        self._sink.report(error, tr("while loading the model"),
                          actions=self.load_error_actions(error))
        emit(self.load_failed, error)

    # --- chat turns ----------------------------------------------------------------------------

    def send(self, conversation_id: str | None, text: str) -> None:
        """Send ``text`` in a conversation (``None``: a new one, see
        :attr:`conversation_created`) and stream the reply."""
        created = partial(emit, self.conversation_created)
        self._run(lambda s, on_token: s.send(self._store, conversation_id, text,
                                             on_token=on_token, on_conversation=created))

    def regenerate(self, conversation_id: str) -> None:
        """Write a new reply to the last user message (a new branch)."""
        self._run(lambda s, on_token: s.regenerate(self._store, conversation_id,
                                                   on_token=on_token))

    def edit_and_resend(self, message_id: str, text: str) -> None:
        """Send ``text`` as a new version of user message ``message_id`` (a new branch)."""
        self._run(lambda s, on_token: s.edit_and_resend(self._store, message_id, text,
                                                        on_token=on_token))

    def continue_reply(self, message_id: str) -> None:
        """Continue an interrupted reply in place."""
        self._run(lambda s, on_token: s.continue_reply(self._store, message_id,
                                                       on_token=on_token))

    def warm(self, conversation_id: str) -> None:
        """Get a conversation ready in the engine while the user reads or types
        (:meth:`Session.warm`): nothing when no model is loaded, a reply runs or the server is
        answering. Any later request stops the warm-up; a failure to start one is only logged at
        debug level (it is an optimisation, and the next turn does the work anyway)."""
        if self._session is None or self.model_info is None or self.busy or self.serving_busy:
            return
        self.run(lambda s: s.warm(self._store, conversation_id),
                 on_error=lambda error: _log.debug("no warm-up: %s", error))

    def stop(self) -> None:
        """Stop the reply being generated (or a load); returns at once."""
        if self._session is not None:
            self._session.stop()

    def _run(self, turn: Turn) -> None:
        self._set_busy(True)
        self.run(lambda s: turn(s, self._buffer_token), self._finished, self._failed)

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

    def _finished(self, result: TurnResult) -> None:
        self._drain()  # the last pieces before the end, whatever order events arrived in
        self._set_busy(False)
        emit(self.reply_finished, result)

    def _failed(self, error: BaseException) -> None:
        self._drain()
        self._set_busy(False)
        if isinstance(error, EngineCrashedError):
            emit(self.reply_failed, error)
            emit(self.engine_crashed, error)
            return
        from mixtral_desk.core.session import NoModelError

        if isinstance(error, EngineBusyError) and self.serving_busy:
            error = EngineBusyError(SERVER_BUSY)  # the API server took the engine just now
        if not isinstance(error, NoModelError):  # the chat page loads one and sends then
            self._sink.report(error, tr("while generating the reply"))
        emit(self.reply_failed, error)

    def check_alive(self) -> bool:
        """Notice an engine that died while idle (emits the crash signals); False if it did."""
        if self._session is None or self._turn_running or self.tasks.busy:
            return True
        if not self._session.engine_died():
            return True
        emit(self.engine_crashed, EngineCrashedError(N_(
            "The engine process stopped while idle (it may have run out of memory or been "
            "killed). Reload the model to continue.")))
        return False

    def _set_busy(self, busy: bool) -> None:
        if busy != self._turn_running:
            self._turn_running = busy
            emit(self.busy_changed, busy)

    # --- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop any reply and the server, end the engine process and the worker thread."""
        session = self._session
        if session is not None:
            session.stop()
            self.tasks.submit(session.close)
        self.tasks.close(timeout=15)
        if session is not None:
            session.close()
