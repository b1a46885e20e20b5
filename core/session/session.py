"""The application model: the one place that implements what a user can do with a model.

A :class:`Session` owns the engine and the loaded model (settings → load options, the automatic
plan and context, loading, unloading, giving memory back when idle), the chat use cases (send,
regenerate, edit and resend, continue; titles; each conversation's system prompt and sampling;
deleting a conversation with its prompt cache states) and serving the model over the
OpenAI-compatible API. The window, the CLI and ``serve`` call the same methods, so each rule exists
once; only how the results are shown differs.

Like napari's ``ViewerModel`` it is plain Python: its methods block (a front end runs them on a
worker thread) and it reports through :class:`~.events.Event`\\ s, which the window's bridge turns
into Qt signals and the CLI into printed lines. One reply or load runs at a time; :meth:`stop`
may be called from any thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mixtral_desk.core import chat
from mixtral_desk.core.engine.prompt_cache import conversation_tag
from mixtral_desk.core.errors import DeskError, EngineCrashedError, SamplingError
from mixtral_desk.core.i18n import N_
from mixtral_desk.core.measured_speeds import remember_reply
from mixtral_desk.core.untrusted_json import check_message

from .conversations import delete_conversation, sampling_for, title_from
from .events import Event
from .loading import LoadChoice, LoadReport, load_prepared, prepare_load

if TYPE_CHECKING:
    from mixtral_desk.core.chat import ChatStore, TokenCallback, TurnResult
    from mixtral_desk.core.engine import EngineHost, ModelInfo, SamplingOptions
    from mixtral_desk.core.engine.interface import ChatEngine
    from mixtral_desk.core.server import ApiServer
    from mixtral_desk.core.settings import Settings
    from mixtral_desk.core.store import Conversation, Store

#: The address the window serves on: this computer only.
LOCAL_HOST = "127.0.0.1"


class NoModelError(DeskError, RuntimeError):
    """Raised when a turn, a reload or serving needs a loaded model and none is loaded."""


class Session:
    """One front end's model, engine, chats and server (see the module docstring).

    ``engine``: a remote engine (``chat --remote``) to chat with instead of a local model, serving
    the model ``remote_model``; without one, llama.cpp runs in an engine process started on first
    use (its log goes to ``log_path``).

    Events (emitted on the thread that runs the method):
        load_started(Path): a model file began loading.
        load_progress(float): loading progress, 0.0 to 1.0.
        planner_said(str): a sentence of the automatic plan, as it is made.
        model_unloaded(None): the model was unloaded, or lost when the engine process died.
    """

    def __init__(self, settings: Settings, *, engine: ChatEngine | None = None,
                 remote_model: str | None = None, log_path: Path | None = None) -> None:
        self.settings = settings
        self._remote = engine
        self._remote_model = remote_model
        self._log_path = log_path
        self._host: EngineHost | None = None
        self._lock = threading.Lock()
        self._server_lock = threading.Lock()  # serve() and stop_serving() from any thread
        self._busy = False
        self._last_used = time.monotonic()
        self.model_info: ModelInfo | None = None
        self.load_report: LoadReport | None = None
        self.last_choice: LoadChoice | None = None
        self.server: ApiServer | None = None
        self.load_started: Event[Path] = Event()
        self.load_progress: Event[float] = Event()
        self.planner_said: Event[str] = Event()
        self.model_unloaded: Event[None] = Event()

    # --- the engine ----------------------------------------------------------------------------

    @property
    def host(self) -> EngineHost:
        """The local engine host (its process starts on first use)."""
        if self._host is None:
            from mixtral_desk.core.engine import EngineHost

            self._host = EngineHost(self._log_path)
        return self._host

    @property
    def engine(self) -> ChatEngine:
        """What chat turns and the API server talk to: the remote engine, else the local one."""
        return self._remote if self._remote is not None else self.host

    @property
    def engine_pid(self) -> int | None:
        """The local engine process id while it runs."""
        return self._host.pid if self._host is not None else None

    @property
    def model_name(self) -> str | None:
        """The loaded model's file name without ``.gguf`` (the remote model's name), or None."""
        if self._remote is not None:
            return self._remote_model
        return Path(self.model_info.path).stem if self.model_info is not None else None

    @property
    def busy(self) -> bool:
        """Whether a reply is being generated (by a chat turn; see :attr:`serving_busy`)."""
        return self._busy

    def stop(self) -> None:
        """Stop the reply being generated, or the load in progress; returns at once."""
        if self._remote is not None:
            self._remote.stop()
        elif self._host is not None:
            self._host.stop()

    def engine_died(self) -> bool:
        """Whether the local engine process died while a model was loaded and nothing ran; the
        model then counts as unloaded (:attr:`model_unloaded` is emitted). Raises nothing."""
        host = self._host
        if self.model_info is None or self._busy or host is None or host.is_alive:
            return False
        self._forget_model()
        return True

    # --- loading -------------------------------------------------------------------------------

    def load(self, choice: LoadChoice) -> ModelInfo:
        """Load ``choice`` with the load settings (see :mod:`.loading`); blocks until loaded.

        The file and the settings are checked first: a problem there leaves the model of now
        loaded (and served). Otherwise the new model replaces it, and serving it stops.

        Raises:
            ModelFileNotFoundError, GGUFError: the file is missing or not a usable model.
            SettingsError: the load settings cannot be used together.
            DeskError: the engine cannot load it; no model is loaded afterwards.
        """
        prepared = prepare_load(self.host, self.settings.load, choice)
        self.stop_serving()
        self.last_choice = choice
        self.model_info, self.load_report = None, None
        self.load_started.emit(choice.path)
        try:
            info, report = load_prepared(self.host, prepared, say=self.planner_said.emit,
                                         on_progress=self.load_progress.emit)
        except BaseException:
            self._forget_model()
            raise
        self.model_info, self.load_report = info, report
        self._last_used = time.monotonic()
        return info

    def reload(self) -> ModelInfo:
        """Load the last model again, with the settings of now (after a crash or a change).

        Raises:
            NoModelError: no model was loaded in this session.
            DeskError: as for :meth:`load`.
        """
        if self.last_choice is None:
            raise NoModelError(N_("No model was loaded yet; choose one to load."))
        return self.load(self.last_choice)

    def unload(self) -> None:
        """Stop serving, then free the model's memory (the engine process stays)."""
        self.stop_serving()
        if self._host is not None:
            self._host.unload()
        self._forget_model()

    def _forget_model(self) -> None:
        had_model = self.model_info is not None
        self.model_info, self.load_report = None, None
        if had_model:
            self.model_unloaded.emit(None)

    # --- giving memory back --------------------------------------------------------------------

    def mark_used(self) -> None:
        """The model was used now (a turn, a request): the idle countdown starts again."""
        self._last_used = time.monotonic()

    def idle_deadline(self, idle_seconds: float | None = None) -> float | None:
        """When (``time.monotonic()``) the model may be unloaded for being idle, or None when it
        may not: no model, unloading off, or the model in use (a reply, the API server on).

        ``idle_seconds`` replaces the setting's ``idle_unload_minutes`` (tests, benchmarks).
        """
        if idle_seconds is None:
            idle_seconds = self.settings.load.idle_unload_minutes * 60.0
        if self.model_info is None or idle_seconds <= 0 or self._busy or self.server is not None:
            return None
        return self._last_used + idle_seconds

    def unload_if_idle(self, idle_seconds: float | None = None) -> str | None:
        """Unload the model when its idle time is up; returns its name if it was unloaded."""
        deadline = self.idle_deadline(idle_seconds)
        if deadline is None or time.monotonic() < deadline:
            return None
        name = self.model_name
        self.unload()
        return name

    # --- chat turns ----------------------------------------------------------------------------

    def sampling_for(self, conversation: Conversation | None,
                     overrides: dict[str, Any] | None = None) -> SamplingOptions:
        """The sampling of a turn: the settings' defaults, then the conversation's own, then
        ``overrides`` (a command line's ``--temperature`` …; ``None`` values are ignored).

        Raises:
            SamplingError: an override is out of range.
        """
        base = self.settings.sampling
        if conversation is not None:
            base = sampling_for(base, conversation.settings)
        given = {key: value for key, value in (overrides or {}).items() if value is not None}
        if not given:
            return base
        try:
            return base.model_validate({**base.model_dump(), **given})
        except ValidationError as error:
            first = error.errors()[0]
            name = ".".join(str(part) for part in first["loc"])
            raise SamplingError(N_("Cannot use {name} = {value}: {problem}."), name=name,
                                value=given.get(name, ""),
                                problem=first["msg"]) from error

    def start_conversation(self, store: ChatStore, *, title: str | None = None,
                           system_prompt: str | None = None) -> Conversation:
        """A new, empty conversation with the loaded model's name (and ``system_prompt``)."""
        return store.create_conversation(title, model=self.model_name,
                                         system_prompt=system_prompt)

    def delete_conversation(self, store: Store, conversation_id: str) -> int:
        """Delete a conversation and the prompt cache states made from it, on disk and in the
        local engine's RAM (see :func:`~.conversations.delete_conversation`); the number of cache
        files removed at once. May be called from any thread (the window's store thread): it
        starts no engine and waits for none.

        Raises:
            NotFoundError: no conversation has this id.
        """
        return delete_conversation(store, conversation_id, engine=self._host)

    def send(self, store: ChatStore, conversation_id: str | None, text: str, *,
             on_token: TokenCallback | None = None, system_prompt: str | None = None,
             overrides: dict[str, Any] | None = None,
             on_conversation: Callable[[Conversation], object] | None = None,
             ) -> TurnResult:
        """Send ``text`` in a conversation and stream the reply (into the store as it grows).

        ``conversation_id`` None starts a new conversation (with ``system_prompt``);
        ``on_conversation`` is called with it before the reply starts. A conversation without a
        title takes it from its first message (:func:`~.conversations.title_from`).

        Raises:
            NoModelError: no model is loaded.
            NotFoundError: the conversation does not exist.
            SamplingError: an override is out of range (nothing is stored).
            MessageError: ``text`` is over the message size limit (nothing is stored).
            EngineBusyError: another reply (the API server's) is being generated.
            EngineError: the engine failed; the reply so far is stored as interrupted.
        """
        check_message(text)
        self._require_model()
        if conversation_id is None:
            sampling = self.sampling_for(None, overrides)  # a bad value creates nothing
            conversation = self.start_conversation(store, title=title_from(text),
                                                   system_prompt=system_prompt)
            if on_conversation is not None:
                on_conversation(conversation)
        else:
            conversation = store.get_conversation(conversation_id)
            sampling = self.sampling_for(conversation, overrides)
            if not conversation.title and title_from(text):
                conversation = store.update_conversation(conversation.id,
                                                         title=title_from(text))
        with self._turn():
            return self._remembered(chat.send(store, self.engine, conversation.id, text,
                                              sampling, on_token=on_token,
                                              model_name=self.model_name))

    def regenerate(self, store: ChatStore, conversation_id: str, *,
                   on_token: TokenCallback | None = None,
                   overrides: dict[str, Any] | None = None) -> TurnResult:
        """Write another reply to the last user message (the old one stays as a branch).

        Raises:
            NoModelError, NotFoundError, EngineError: as for :meth:`send`.
            ValueError: the conversation has no user message yet.
        """
        sampling = self._turn_sampling(store, conversation_id, overrides)
        with self._turn():
            return self._remembered(chat.regenerate(store, self.engine, conversation_id, sampling,
                                                    on_token=on_token, model_name=self.model_name))

    def edit_and_resend(self, store: ChatStore, message_id: str, text: str, *,
                        on_token: TokenCallback | None = None,
                        overrides: dict[str, Any] | None = None) -> TurnResult:
        """Send ``text`` as a new version of user message ``message_id`` (a new branch).

        Raises:
            NoModelError, NotFoundError, EngineError: as for :meth:`send`.
            ValueError: the message is not a user message.
            MessageError: ``text`` is over the message size limit (nothing is stored).
        """
        check_message(text)
        edited = store.get_message(message_id)
        sampling = self._turn_sampling(store, edited.conversation_id, overrides)
        with self._turn():
            return self._remembered(chat.edit_and_resend(store, self.engine, message_id, text,
                                                         sampling, on_token=on_token,
                                                         model_name=self.model_name))

    def continue_reply(self, store: ChatStore, message_id: str, *,
                       on_token: TokenCallback | None = None,
                       overrides: dict[str, Any] | None = None) -> TurnResult:
        """Continue an interrupted reply in place.

        Raises:
            NoModelError, NotFoundError, EngineError: as for :meth:`send`.
            ValueError: the message is not an interrupted assistant reply.
        """
        message = store.get_message(message_id)
        sampling = self._turn_sampling(store, message.conversation_id, overrides)
        with self._turn():
            return self._remembered(chat.continue_reply(store, self.engine, message_id, sampling,
                                                        on_token=on_token))

    def warm(self, store: ChatStore, conversation_id: str) -> bool:
        """Get a conversation ready for its next turn while the user reads or types: the local
        engine restores its cached state or evaluates its history in the background (see
        :meth:`EngineHost.warm`; any later request stops it). Returns at once; ``False`` when
        nothing was started (a remote engine, no model, a reply running, an empty chat).

        Raises:
            NotFoundError: the conversation does not exist.
        """
        if self._remote is None and self.model_info is not None and not self._busy \
                and self._host is not None:
            history = chat.history_for(store, conversation_id)
            if any(m.role != "system" for m in history):
                sampling = self.sampling_for(store.get_conversation(conversation_id))
                return self._host.warm(history, sampling,
                                       cache_tag=conversation_tag(conversation_id))
        return False

    def _require_model(self) -> None:
        if self._remote is None and self.model_info is None:
            raise NoModelError(N_("No model is loaded yet. Load one, then send again."))

    def _turn_sampling(self, store: ChatStore, conversation_id: str,
                       overrides: dict[str, Any] | None) -> SamplingOptions:
        """The sampling of a turn in a conversation that exists, once a model is loaded."""
        self._require_model()
        return self.sampling_for(store.get_conversation(conversation_id), overrides)

    def _remembered(self, result: TurnResult) -> TurnResult:
        """``result``, its speeds remembered for the next plan (:mod:`~.measured_speeds`)."""
        if self._remote is None:
            remember_reply(self.model_info, self.load_report, self.last_choice, result.stats)
        return result

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """A reply runs: busy meanwhile; a dead engine process takes the model with it."""
        with self._lock:
            self._busy = True
        try:
            yield
        except EngineCrashedError:
            self._forget_model()
            raise
        finally:
            with self._lock:
                self._busy = False
            self._last_used = time.monotonic()

    # --- serving -------------------------------------------------------------------------------

    def serve(self, *, port: int, host: str = LOCAL_HOST, api_key: str | None = None,
              model_id: str | None = None) -> ApiServer:
        """Serve the loaded model over the OpenAI-compatible API; returns once it listens.

        The settings' sampling are the defaults that requests override. Serving keeps the
        model in use (it is not unloaded for being idle).

        Raises:
            NoModelError: no model is loaded.
            ServerConfigError: ``host`` is not loopback and there is no ``api_key``.
            ServerStartError: the address or port cannot be used.
        """
        from mixtral_desk.core.server import ApiServer

        with self._server_lock:
            if self.server is not None:
                return self.server
            name = model_id or self.model_name
            if name is None:
                raise NoModelError(N_("No model is loaded; load one to serve it."))
            server = ApiServer(self.engine, name, host=host, port=port, api_key=api_key,
                               sampling=self.settings.sampling)
            server.start()
            self.server = server
            return server

    @property
    def serving_busy(self) -> bool:
        """Whether the API server is answering (or has waiting) requests."""
        server = self.server
        return server is not None and server.api.replies.queue.busy

    def stop_serving(self) -> bool:
        """Stop the API server; returns whether one ran."""
        with self._server_lock:
            server, self.server = self.server, None
            if server is None:
                return False
            server.stop()
        self._last_used = time.monotonic()
        return True

    # --- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop any reply and the server, and end the engine process; idempotent."""
        self.stop()
        self.stop_serving()
        if self._host is not None:
            self._host.close()
        if self._remote is not None:
            self._remote.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
