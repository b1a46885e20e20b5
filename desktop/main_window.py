"""The main window: toolbar (pages, model picker), notification bar, pages, status bar."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QMainWindow,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.errors import EngineCrashedError
from mixtral_desk.core.paths import DataPaths, data_paths

from .bridge.engine_bridge import EngineBridge
from .bridge.server_bridge import DEFAULT_API_PORT, NETWORK_HINT, ServerBridge
from .bridge.store_bridge import StoreBridge
from .bridge.tasks import TaskQueue
from .chat.page import ChatPage
from .errors import Action, ErrorSink
from .model_picker import ModelPicker, find_local_models
from .notification_bar import NotificationBar
from .signals import emit
from .status_bar import StatusBar, engine_memory
from .welcome import Welcome

if TYPE_CHECKING:  # pydantic, numpy and the engine package load after the first paint
    from mixtral_desk.core.engine import ModelInfo
    from mixtral_desk.core.settings import LoadDefaults, Settings

    from .models.page import ModelsPage
    from .settings.page import SettingsPage

log = logging.getLogger(__name__)
MEMORY_POLL_MS = 2000
SERVER_BUSY = "The API server is answering a request"


def warm_up() -> None:
    """Import and exercise the Markdown renderer off the GUI thread, so the first message shown
    does not pay for importing markdown-it, Pygments and a lexer (100-200 ms) on the GUI thread."""
    import mixtral_desk.core.chat  # noqa: F401 - the engine package, for the first Load click

    from .chat import markdown

    markdown.render("*warm* `up`\n\n```python\nx = 1\n```\n")


class _AfterFirstPaint(QObject):
    """Calls ``callback`` once, right after the watched widget's first paint, then leaves.

    (An event filter rather than an ``event()`` override: afterwards no event of the window
    passes through Python.)

    Signals: none.
    """

    def __init__(self, watched: QWidget, callback: Callable[[], None]) -> None:
        super().__init__(watched)
        self._callback = callback

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Paint:
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self._callback)
        return False


class MainWindow(QMainWindow):
    """The app's window. Everything slow runs in the bridges' worker threads.

    Signals:
        ready(): the store is open, the settings are read and the local models are listed.
        settings_saved(object): the settings were written (carries them).
        models_listed(object): the model picker was filled (the list of (name, path, size)).
    """

    ready = Signal()
    settings_saved = Signal(object)
    models_listed = Signal(object)

    def __init__(self, paths: DataPaths | None = None, sink: ErrorSink | None = None) -> None:
        super().__init__()
        self.paths = paths or data_paths()
        self.sink = sink or ErrorSink(self)
        self._settings: Settings | None = None
        self._started = False
        self._settings_read = False
        self._store_open = False
        self._models_listed = False
        self._conversation_count = 0
        self._closed = False
        self._loaded_with: LoadDefaults | None = None
        self._serve_allowed = False  # a model is loaded and not on its way out
        self._extra_models: list[Path] = []
        self.catalog_path: Path | None = None  # None: the packaged models.toml
        self.setWindowTitle("Mixtral Desk")
        self.resize(1100, 720)

        report = self.sink.report
        self.io = TaskQueue("io", on_error=lambda e: report(e), parent=self)
        self.io.setObjectName("io")
        self.store = StoreBridge(self.sink, self.paths.database, parent=self)
        self.engine = EngineBridge(self.sink, self.paths.engine_log, parent=self)
        self.server = ServerBridge(self.sink, parent=self)
        self.server.port_hint = (
            'Stop that program, or choose another port: "server": {"api_port": 8081} in '
            f"{self.paths.settings_file} (0 picks a free port each time).")
        self.engine.busy_elsewhere = lambda: (
            f"{SERVER_BUSY}; send again when it has finished." if self.server.busy else None)

        self._build_toolbar()
        self.notifications = NotificationBar()
        self.sink.notice.connect(self.notifications.show_notice)
        self.pages = QStackedWidget()
        self.welcome = Welcome()
        self.chat_page = ChatPage(self.store, self.engine, self.sink,
                                  lambda: self.settings.sampling)
        self._models_page: ModelsPage | None = None
        self._settings_page: SettingsPage | None = None
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.chat_page)
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.notifications)
        column.addWidget(self.pages, 1)
        self.setCentralWidget(central)
        self.status = StatusBar()
        self.setStatusBar(self.status)
        self._build_shortcuts()
        self._connect()
        self.pages.setCurrentWidget(self.chat_page)

        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(MEMORY_POLL_MS)
        self._memory_timer.timeout.connect(self._poll_memory)
        self.installEventFilter(_AfterFirstPaint(self, self.start))

    @property
    def settings(self) -> Settings:
        """The settings in effect (the defaults until the file was read)."""
        if self._settings is None:
            from mixtral_desk.core.settings import Settings

            self._settings = Settings()
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self._settings = value

    def start(self) -> None:
        """Open the store, read the settings, list the models — in workers; idempotent."""
        if self._started:
            return
        self._started = True
        path = self.paths.settings_file

        def read() -> Settings:
            from mixtral_desk.core.settings import load_settings

            return load_settings(path)
        self.store.open()
        self.io.submit(read, self._settings_loaded, self._settings_failed)
        self.io.submit(warm_up)

    # --- building ------------------------------------------------------------------------------

    def _build_toolbar(self) -> None:
        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        group = QActionGroup(self)
        self.chat_action = QAction("Chat", self, checkable=True, checked=True)
        self.models_action = QAction("Models", self, checkable=True)
        self.settings_action = QAction("Settings", self, checkable=True)
        for action in (self.chat_action, self.models_action, self.settings_action):
            group.addAction(action)
            bar.addAction(action)
        self.chat_action.triggered.connect(self.show_chat)
        self.models_action.triggered.connect(self.show_models)
        self.settings_action.triggered.connect(self.show_settings)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        bar.addWidget(spacer)
        self.picker = ModelPicker()
        bar.addWidget(self.picker)
        self.serve_button = QPushButton("Serve API")
        self.serve_button.setCheckable(True)
        self.serve_button.setEnabled(False)
        self._serve_tooltip()
        bar.addWidget(self.serve_button)
        self.addToolBar(bar)

    def _build_shortcuts(self) -> None:
        def shortcut(keys: QKeySequence | QKeySequence.StandardKey | str,
                     slot: Callable[[], None]) -> None:
            item = QShortcut(QKeySequence(keys), self)
            item.setContext(Qt.ShortcutContext.WindowShortcut)
            item.activated.connect(slot)

        shortcut(QKeySequence.StandardKey.New, self.new_chat)
        shortcut("Ctrl+F", self.focus_search)
        shortcut("Ctrl+L", self.focus_input)
        shortcut("Esc", self.escape)

    def _connect(self) -> None:
        engine, picker = self.engine, self.picker
        picker.load_requested.connect(self.load_model)
        picker.unload_requested.connect(self.unload_model)
        picker.stop_load_requested.connect(engine.stop)
        engine.load_started.connect(lambda _: picker.set_state("loading"))
        engine.load_started.connect(lambda _: self._stop_serving())
        engine.load_progress.connect(picker.set_progress)
        engine.model_loaded.connect(self._model_loaded)
        engine.model_unloaded.connect(self._model_unloaded)
        engine.load_failed.connect(lambda _: self._model_unloaded())
        engine.engine_crashed.connect(self._engine_crashed)
        engine.reply_finished.connect(self.status.show_reply)
        self.store.opened.connect(self._store_opened)
        self.welcome.browse_requested.connect(self.show_models)
        self.welcome.open_requested.connect(picker._browse)
        self.chat_page.need_model.connect(lambda: self._model_needed())
        server = self.server
        self.serve_button.clicked.connect(self._serve_clicked)
        server.started.connect(self._serving)
        server.stopped.connect(self._not_serving)
        server.failed.connect(lambda _: self._not_serving())
        server.busy_changed.connect(self._server_busy)

    # --- pages ---------------------------------------------------------------------------------

    def show_chat(self) -> None:
        """The chat page (or the welcome screen on a first run)."""
        self.chat_action.setChecked(True)
        first_run = (self.engine.model_info is None and not self.picker.combo.count()
                     and not self._conversation_count
                     and not self.chat_page.sidebar.conversations)
        self.pages.setCurrentWidget(self.welcome if first_run else self.chat_page)

    def show_models(self) -> None:
        """The Models page (built on first use)."""
        self.models_action.setChecked(True)
        self.pages.setCurrentWidget(self.models_page)

    def show_settings(self) -> None:
        """The Settings page."""
        self.settings_action.setChecked(True)
        self.pages.setCurrentWidget(self.settings_page)

    @property
    def models_page(self) -> ModelsPage:
        """The Models page, created on first use (it reads the catalog and the hardware)."""
        if self._models_page is None:
            from .models.page import ModelsPage

            page = ModelsPage(self.paths, self.io, self.sink, self.catalog_path)
            page.models_changed.connect(self.refresh_models)
            page.load_requested.connect(self._load_from_models_page)
            self._models_page = page
            self.pages.addWidget(page)
        return self._models_page

    @property
    def settings_page(self) -> SettingsPage:
        """The Settings page, created on first use."""
        if self._settings_page is None:
            from .settings.page import SettingsPage

            page = SettingsPage(self.settings)
            page.save_requested.connect(self.save_settings)
            page.reload_requested.connect(self.reload_model)
            info = self.engine.model_info
            page.model_changed(info, self._loaded_with, self._gpu_offload(info))
            self._settings_page = page
            self.pages.addWidget(page)
        return self._settings_page

    # --- start-up ------------------------------------------------------------------------------

    def _settings_loaded(self, settings: Settings) -> None:
        self.settings = settings
        if self._settings_page is not None:
            self._settings_page.set_settings(settings)
        if not self.server.is_running:
            self._serve_tooltip()
        self._settings_read = True
        self.refresh_models()

    def _settings_failed(self, error: BaseException) -> None:
        self.sink.report(error, "while reading the settings (the defaults are used; the file "
                                "is left as it is)")
        self._settings_read = True
        self.refresh_models()

    def _store_opened(self, store: object) -> None:
        self._store_open = True
        self.chat_page.sidebar.refresh()
        self.store.call(lambda s: s.count_conversations(), self._counted)

    def _counted(self, count: int) -> None:
        self._conversation_count = count
        self._check_ready()

    def refresh_models(self) -> None:
        """List the local models again (in the background) and fill the picker."""
        extra = list(self._extra_models)
        if self.settings.last_model:
            extra.append(Path(self.settings.last_model))
        models_dir = self.paths.models_dir
        self.io.submit(lambda: find_local_models(models_dir, extra), self._models_found)

    def _models_found(self, models: list[tuple[str, Path, int]]) -> None:
        info = self.engine.model_info
        current = Path(info.path) if info is not None else (
            Path(self.settings.last_model) if self.settings.last_model else None)
        self.picker.set_models(models, current)
        self._models_listed = True
        emit(self.models_listed, models)
        self._check_ready()

    def _check_ready(self) -> None:
        if self._store_open and self._settings_read and self._models_listed:
            if self.pages.currentWidget() in (self.welcome, self.chat_page):
                self.show_chat()
            emit(self.ready)

    # --- the model -----------------------------------------------------------------------------

    def load_model(self, path: Path) -> None:
        """Load a model file with the saved load settings."""
        from mixtral_desk.core.engine import LoadOptions

        path = Path(path)
        if path not in self._extra_models:
            self._extra_models.append(path)
        self.picker.add_and_select(path)
        load = self.settings.load
        try:
            options = LoadOptions(model_path=path, n_gpu_layers=load.n_gpu_layers,
                                  n_cpu_moe=load.n_cpu_moe, n_ctx=load.n_ctx,
                                  n_threads=load.n_threads, n_batch=load.n_batch,
                                  flash_attn=load.flash_attn,
                                  kv_type=load.kv_type, use_mmap=load.use_mmap,
                                  use_mlock=load.use_mlock)
        except ValueError as error:
            self.sink.report(error, "in the load settings")
            return
        self._loaded_with = load
        self.engine.load(options, auto=load.gpu_layers_auto)
        if self.settings.last_model != str(path):
            self.settings = self.settings.model_copy(update={"last_model": str(path)})
            self.save_settings(self.settings, quiet=True)

    def reload_model(self) -> None:
        """Load the current model again (new load settings, or after a crash)."""
        path = self.picker.selected() or (self.engine.last_options.model_path
                                          if self.engine.last_options else None)
        if path is not None:
            self.load_model(Path(path))

    def _load_from_models_page(self, path: Path) -> None:
        self.picker.add_and_select(path)
        self.load_model(path)
        self.show_chat()

    def _model_needed(self) -> None:
        if not self.picker.combo.count():
            self.show_models()

    @staticmethod
    def _gpu_offload(info: ModelInfo | None) -> bool:
        return True if info is None else info.backend.gpu_offload

    def unload_model(self) -> None:
        """Stop the API server (if it serves), then unload the model."""
        self._serve_allowed = False
        self._set_serve_button(enabled=False, checked=False)
        self.server.stop(then=self.engine.unload)

    def _model_loaded(self, info: ModelInfo) -> None:
        self.picker.set_state("loaded")
        self._serve_allowed = True
        self._set_serve_button(enabled=True, checked=False)
        report = self.engine.load_report
        self.status.show_model(info, report.n_cpu_moe if report is not None else 0)
        self._memory_timer.start()
        self._poll_memory()
        if self._settings_page is not None:
            self._settings_page.model_changed(info, self._loaded_with, info.backend.gpu_offload)
        text = f"Loaded {Path(info.path).name} in {info.load_seconds:.1f} s."
        if report is None or report.plan is None:
            self.sink.inform(text, timeout_ms=3000)
        else:  # the plan (and any fallback) stays visible; a difference from it is a warning
            text += " Automatic GPU layers: " + " ".join(
                note if note.endswith(".") else note + "." for note in report.notes)
            if report.warnings:
                text += (" But llama.cpp did not follow the plan: " + "; ".join(report.warnings)
                         + ".")
            self.sink.inform(text, level="warning" if report.warnings else "info",
                             timeout_ms=None if report.warnings else 10_000)
        if self.pages.currentWidget() is self.welcome:
            self.show_chat()

    def _model_unloaded(self) -> None:
        self.picker.set_state("empty")
        self._stop_serving()
        self.status.clear_model()
        self._memory_timer.stop()
        if self._settings_page is not None:
            self._settings_page.model_changed(None, None, True)

    # --- the API server --------------------------------------------------------------------------

    def _serve_tooltip(self, url: str | None = None) -> None:
        port = (self.settings.server.api_port if self._settings is not None
                else DEFAULT_API_PORT)
        where = url or f"http://127.0.0.1:{port or 'a free port'}/v1"
        self.serve_button.setToolTip(
            f"Serve the loaded model over an OpenAI-compatible API at {where}, for programs on "
            f"this computer only (no key needed). {NETWORK_HINT}")

    def _set_serve_button(self, *, enabled: bool, checked: bool) -> None:
        self.serve_button.setEnabled(enabled)
        self.serve_button.setChecked(checked)

    def _serve_clicked(self, checked: bool) -> None:
        """The Serve API toggle: start the server on 127.0.0.1 (port from the settings) or stop
        it; the button is disabled until that is done."""
        self.serve_button.setEnabled(False)
        if not checked:
            self.server.stop()
            return
        name = self.engine.model_name()
        if not self._serve_allowed or name is None:
            self._set_serve_button(enabled=False, checked=False)
            return
        self.server.start(self.engine.host, name, self.settings.server.api_port,
                          sampling=self.settings.sampling)

    def _stop_serving(self) -> None:
        """The model goes away (unloaded, crashed, another one loads): stop serving it."""
        self._serve_allowed = False
        self._set_serve_button(enabled=False, checked=False)
        if not self._closed:
            self.server.stop()

    def _serving(self, url: str) -> None:
        self.status.show_api(url)
        self._serve_tooltip(url)
        self._set_serve_button(enabled=self._serve_allowed, checked=True)
        self.sink.inform(f"Serving the model at {url} (this computer only).", timeout_ms=6000)

    def _not_serving(self) -> None:
        self.status.show_api(None)
        self._serve_tooltip()
        self._server_busy(False)
        self._set_serve_button(enabled=self._serve_allowed, checked=False)

    def _server_busy(self, busy: bool) -> None:
        send = self.chat_page.view.send_button
        send.setEnabled(not busy)
        send.setToolTip(SERVER_BUSY if busy else "")

    def _engine_crashed(self, error: EngineCrashedError) -> None:
        self.sink.report(error, actions=(Action("Reload model", self.reload_model),))

    def _poll_memory(self) -> None:
        if not self.engine.check_alive():
            return
        pid = self.engine.pid
        self.io.submit(lambda: engine_memory(pid), self.status.show_memory)

    # --- settings ------------------------------------------------------------------------------

    def save_settings(self, settings: Settings, quiet: bool = False) -> None:
        """Write the settings in the background; say so when done."""
        def saved(_: None) -> None:
            self.settings = settings
            if self._settings_page is not None:
                self._settings_page.saved(settings)
            emit(self.settings_saved, settings)
            if not quiet:
                self.sink.inform("Settings saved.", timeout_ms=2500)

        def write() -> None:
            from mixtral_desk.core.settings import save_settings

            save_settings(settings, self.paths.settings_file)
        self.settings = settings
        self.io.submit(write, saved)

    # --- shortcuts -----------------------------------------------------------------------------

    def new_chat(self) -> None:
        """Ctrl+N."""
        self.show_chat()
        if self.pages.currentWidget() is self.chat_page:
            self.chat_page.new_chat()

    def focus_search(self) -> None:
        """Ctrl+F."""
        self.show_chat()
        self.chat_page.sidebar.focus_search()

    def focus_input(self) -> None:
        """Ctrl+L."""
        self.show_chat()
        self.chat_page.view.composer.setFocus()

    def escape(self) -> None:
        """Esc: stop the reply, else leave edit mode."""
        if self.engine.busy:
            self.engine.stop()
        else:
            self.chat_page.view.cancel_edit()

    # --- shutdown ------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        """Stop the engine and the worker threads (waits for a running reply to stop)."""
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Finish pending deletions, stop the engine, close the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._memory_timer.stop()
        self.chat_page.sidebar.commit_all()
        if self._models_page is not None:
            self._models_page.shutdown()
        self.server.close()
        self.engine.close()
        self.store.close()
        self.io.close()
