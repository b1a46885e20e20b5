"""The loaded model in the window: Load/Unload in the picker, loading a model when Send needs one,
what the notices and the status bar say about it, the engine's memory, and giving memory back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from mixtral_desk.core.context_size import ContextReason
from mixtral_desk.core.errors import EngineCrashedError
from mixtral_desk.core.i18n import ntr, tr

from ..bridge.idle import IdleUnloader
from ..bridge.session_bridge import SessionBridge
from ..bridge.tasks import TaskQueue
from ..chat.page import ChatPage
from ..errors import Action, ErrorSink
from ..model_picker import ModelPicker
from ..signals import emit
from ..status_bar import StatusBar, engine_memory

if TYPE_CHECKING:
    from mixtral_desk.core.engine import ModelInfo

MEMORY_POLL_MS = 2000


class ModelController(QObject):
    """Loads, unloads and reloads the session's model for the picker and the chat page.

    ``idle_minutes`` says the idle-unload setting (for the notice after an idle unload).

    Signals:
        load_asked(object): a model file (Path) is about to load (the window remembers it as the
            last model).
        model_leaving(): the model is about to go (another one loads, or Unload was pressed):
            stop serving it now.
        model_changed(object): the :class:`ModelInfo` of a model now loaded, or ``None`` when it
            went away (unloaded, crashed, a load failed).
        no_model(): Send was pressed, no model is loaded and none is chosen (the window shows
            where to get one).
    """

    load_asked = Signal(object)
    model_leaving = Signal()
    model_changed = Signal(object)
    no_model = Signal()

    def __init__(self, session: SessionBridge, picker: ModelPicker, status: StatusBar,
                 chat_page: ChatPage, sink: ErrorSink, io: TaskQueue,
                 idle_minutes: Callable[[], int], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self.picker, self.status = session, picker, status
        self.chat_page, self.sink, self.io = chat_page, sink, io
        self._idle_minutes = idle_minutes
        self._send_when_loaded = False  # Send started a load: send the input once it is loaded
        self.idle = IdleUnloader(session, parent=self)
        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(MEMORY_POLL_MS)
        self._memory_timer.timeout.connect(self._poll_memory)

        picker.load_requested.connect(self.load)
        picker.unload_requested.connect(self.unload)
        picker.stop_load_requested.connect(session.stop)
        session.load_progress.connect(picker.set_progress)
        session.planner_said.connect(lambda text: sink.inform(
            tr("Automatic GPU layers: {plan}", plan=text), timeout_ms=None))
        session.model_loaded.connect(self._loaded)
        session.model_unloaded.connect(self._unloaded)
        session.load_failed.connect(self._load_failed)
        session.engine_crashed.connect(self._crashed)
        session.reply_finished.connect(status.show_reply)
        chat_page.need_model.connect(self.model_needed)
        self.idle.unloaded.connect(self._unloaded_when_idle)

    def load(self, path: Path) -> None:
        """Load a model file with the load settings (in the background)."""
        path = Path(path)
        self.picker.add_and_select(path)
        self.picker.set_state("loading")  # now: the engine thread may still be busy
        emit(self.load_asked, path)
        emit(self.model_leaving)
        self.session.load(path)

    def unload(self) -> None:
        """Stop serving and unload the model."""
        emit(self.model_leaving)
        self.session.unload()

    def reload(self) -> None:
        """Load the chosen model again (new load settings, or after a crash)."""
        path = self.picker.selected() or self.session.last_model
        if path is not None:
            self.load(path)

    def model_needed(self) -> None:
        """Send was pressed with no model loaded: load the chosen one (after an idle unload, the
        one that was in use) and send the message once it is ready; with none chosen, say how
        to get one."""
        if self.session.model_info is not None:
            return
        path = self.picker.selected()
        if path is None:
            self.sink.inform(tr("No model is loaded yet. Pick one in the toolbar and press "
                                "Load."), level="warning")
            if not self.picker.combo.count():
                emit(self.no_model)
            return
        self._send_when_loaded = True
        if self.picker.state != "loading":
            self.load(path)
        self.sink.inform(tr("Loading {name}; your message is sent when it is ready.",
                            name=path.name), timeout_ms=None)

    def _loaded(self, info: ModelInfo) -> None:
        self.picker.set_state("loaded")
        report = self.session.load_report
        self.status.show_model(info, report.n_cpu_moe if report is not None else 0)
        self._memory_timer.start()
        self._poll_memory()
        emit(self.model_changed, info)
        self._say_loaded(info)
        if self._send_when_loaded:
            self._send_when_loaded = False
            text = self.chat_page.typed_text()
            if text:
                self.chat_page.send(text)

    def _say_loaded(self, info: ModelInfo) -> None:
        """The load, why the context has its length (when it was chosen automatically), and the
        automatic plan, which stays visible (a difference from it: a warning)."""
        report = self.session.load_report
        seconds, n_ctx = f"{info.load_seconds:.1f}", f"{info.n_ctx:,}"
        context = report.context if report is not None else None
        timeout_ms: int | None = 3000
        if context is not None and context.reason is not ContextReason.SET \
                and context.n_ctx == info.n_ctx:
            loaded = tr("Loaded {name} in {seconds} s; {context}.", name=Path(info.path).name,
                        seconds=seconds, context=context.text())
            tight = context.reason in (ContextReason.TIGHT, ContextReason.TOO_LARGE)
            timeout_ms = None if tight else 10_000
        else:
            loaded = tr("Loaded {name} in {seconds} s (context: {n_ctx} tokens).",
                        name=Path(info.path).name, seconds=seconds, n_ctx=n_ctx)
        if report is None or report.plan is None:
            self.sink.inform(loaded, timeout_ms=timeout_ms)
            return
        # The planner's notes are clauses: each becomes a sentence, in the language's way.
        plan = " ".join(tr("{clause}.", clause=note.rstrip(".")) for note in report.notes)
        if report.warnings:
            self.sink.inform(tr("{loaded} Automatic GPU layers: {plan} But llama.cpp did not "
                                "follow the plan: {differences}.", loaded=loaded, plan=plan,
                                differences=tr("; ").join(report.warnings)),
                             level="warning", timeout_ms=None)
        else:
            self.sink.inform(tr("{loaded} Automatic GPU layers: {plan}", loaded=loaded,
                                plan=plan), timeout_ms=10_000)

    def _unloaded(self) -> None:
        self.picker.set_state("empty")
        self.status.clear_model()
        self._memory_timer.stop()
        emit(self.model_changed, None)

    def _load_failed(self, error: BaseException) -> None:
        self._send_when_loaded = False
        info = self.session.model_info
        if info is None:
            self._unloaded()
        else:  # the file or the settings were refused before the model of now was touched
            self.picker.set_state("loaded")
            emit(self.model_changed, info)

    def _crashed(self, error: EngineCrashedError) -> None:
        self.sink.report(error, actions=(Action(tr("Reload model"), self.reload),))

    def _unloaded_when_idle(self, name: str) -> None:
        minutes = self._idle_minutes()
        self.sink.inform(ntr(
            "Unloaded {name} after {count} minute without use, to give its memory back. "
            "Send a message (or press Load) to load it again.",
            "Unloaded {name} after {count} minutes without use, to give its memory back. "
            "Send a message (or press Load) to load it again.", minutes, name=name),
            timeout_ms=None)

    def _poll_memory(self) -> None:
        if not self.session.check_alive():
            return
        pid = self.session.pid
        self.io.submit(lambda: engine_memory(pid), self.status.show_memory)

    def stop(self) -> None:
        """The window closes: no more polling or idle unloading."""
        self._memory_timer.stop()
        self.idle.stop()
