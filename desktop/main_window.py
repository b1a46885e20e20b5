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
from mixtral_desk.core.i18n import N_, ntr, tr
from mixtral_desk.core.paths import DataPaths, data_paths

from .bridge.engine_bridge import EngineBridge
from .bridge.idle import IdleUnloader
from .bridge.server_bridge import DEFAULT_API_PORT, NETWORK_HINT, ServerBridge
from .bridge.store_bridge import StoreBridge
from .bridge.tasks import TaskQueue
from .chat.page import ChatPage
from .errors import Action, ErrorSink
from .i18n import keep_translated
from .model_picker import ModelPicker, find_local_models
from .notification_bar import NotificationBar
from .signals import emit
from .status_bar import StatusBar, engine_memory
from .welcome import Welcome

if TYPE_CHECKING:  # pydantic, numpy and the engine package load after the first paint
    from mixtral_desk.core.catalog import CatalogEntry
    from mixtral_desk.core.downloads.events import JobStateChanged
    from mixtral_desk.core.engine import ModelInfo
    from mixtral_desk.core.recommend import Recommendation
    from mixtral_desk.core.settings import LoadDefaults, Settings

    from .models.page import ModelsPage
    from .settings.page import SettingsPage

log = logging.getLogger(__name__)
MEMORY_POLL_MS = 2000
AUTOMATIC_CONTEXT_PLACEHOLDER = 4096
SERVER_BUSY = N_("The API server is answering a request; send again when it has finished.")


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
        self._welcome_prepared = False
        self._send_when_loaded = False  # Send started a load: send the input once it is loaded
        self.catalog_path: Path | None = None  # None: the packaged models.toml
        self.setWindowTitle("Mixtral Desk")
        self.resize(1100, 720)

        report = self.sink.report
        self.io = TaskQueue("io", on_error=lambda e: report(e), parent=self)
        self.io.setObjectName("io")
        self.store = StoreBridge(self.sink, self.paths.database, parent=self)
        self.engine = EngineBridge(self.sink, self.paths.engine_log, parent=self)
        self.server = ServerBridge(self.sink, parent=self)
        self.server.port_hint = lambda: tr(
            'Stop that program, or choose another port: "server": {{"api_port": 8081}} in '
            "{file} (0 picks a free port each time).", file=self.paths.settings_file)
        self.engine.busy_elsewhere = lambda: tr(SERVER_BUSY) if self.server.busy else None

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
        self.idle = IdleUnloader(self.engine, lambda: self.server.busy or self.server.is_running,
                                 parent=self)
        self.idle.unloaded.connect(self._unloaded_when_idle)
        keep_translated(self.retranslate)
        self.installEventFilter(_AfterFirstPaint(self, self.start))

    def retranslate(self) -> None:
        """Set the window's own texts in the current language."""
        self.chat_action.setText(tr("Chat"))
        self.models_action.setText(tr("Models"))
        self.settings_action.setText(tr("Settings"))
        for action, key in ((self.chat_action, "Ctrl+1"), (self.models_action, "Ctrl+2"),
                            (self.settings_action, "Ctrl+3")):
            action.setToolTip(tr("{page} ({shortcut})", page=action.text(),
                                 shortcut=QKeySequence(key).toString(
                                     QKeySequence.SequenceFormat.NativeText)))
        self.about_action.setText(tr("About"))
        self.about_action.setToolTip(tr("Version, data folders and licences (F1)"))
        self.serve_button.setText(tr("Serve API"))
        self.serve_button.setAccessibleName(tr("Serve the model over an API"))
        if not self.server.is_running:
            self._serve_tooltip()

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
        self.chat_action = QAction(self, checkable=True, checked=True)
        self.models_action = QAction(self, checkable=True)
        self.settings_action = QAction(self, checkable=True)
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
        self.serve_button = QPushButton()
        self.serve_button.setCheckable(True)
        self.serve_button.setEnabled(False)
        self._serve_tooltip()
        bar.addWidget(self.serve_button)
        self.about_action = QAction(self)
        self.about_action.triggered.connect(self.show_about)
        bar.addAction(self.about_action)
        self.addToolBar(bar)

    def _build_shortcuts(self) -> None:
        def shortcut(keys: QKeySequence | QKeySequence.StandardKey | str,
                     slot: Callable[[], None]) -> None:
            item = QShortcut(QKeySequence(keys), self)
            item.setContext(Qt.ShortcutContext.WindowShortcut)
            item.activated.connect(slot)

        shortcut(QKeySequence.StandardKey.New, self.new_chat)
        shortcut("Ctrl+1", self.show_chat)
        shortcut("Ctrl+2", self.show_models)
        shortcut("Ctrl+3", self.show_settings)
        shortcut(QKeySequence.StandardKey.HelpContents, self.show_about)
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
        engine.load_failed.connect(lambda _: setattr(self, "_send_when_loaded", False))
        engine.engine_crashed.connect(self._engine_crashed)
        engine.reply_finished.connect(self.status.show_reply)
        self.store.opened.connect(self._store_opened)
        self.welcome.browse_requested.connect(self.show_models)
        self.welcome.open_requested.connect(picker._browse)
        self.welcome.download_requested.connect(self._download_recommended)
        self.welcome.mirror_chosen.connect(self._use_mirror)
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
        if first_run and not self._welcome_prepared:
            self._welcome_prepared = True
            self._prepare_welcome()

    def _prepare_welcome(self) -> None:
        """Work out, in the background, the catalog entry to recommend and whether to offer the
        Hub mirror (a Chinese-speaking system)."""
        catalog_path, config_dir = self.catalog_path, self.paths.config_dir

        def work() -> tuple[Recommendation | None, int, str]:
            from mixtral_desk.core.catalog import load_catalog
            from mixtral_desk.core.hardware import detect_hardware
            from mixtral_desk.core.planner import machine_from_hardware
            from mixtral_desk.core.recommend import recommend

            from .models.hub_config import load_hub_config

            hardware = detect_hardware()
            choice = recommend(load_catalog(catalog_path), machine_from_hardware(hardware))
            return choice, hardware.ram_available, load_hub_config(config_dir).endpoint
        self.io.submit(work, self._welcome_prepared_now)

    def _welcome_prepared_now(self, result: tuple[Recommendation | None, int, str]) -> None:
        from mixtral_desk.core import i18n

        from .i18n import system_locale_name
        from .welcome import HUB_MIRROR

        choice, ram_available, endpoint = result
        self.welcome.show_recommendation(choice, ram_available)
        if "zh_CN" in (i18n.normalize_language(system_locale_name()), i18n.current_language()):
            self.welcome.offer_mirror(endpoint.rstrip("/") == HUB_MIRROR)

    def _download_recommended(self, entry: CatalogEntry) -> None:
        self.show_models()
        self.models_page.download(entry)

    def _use_mirror(self, on: bool) -> None:
        """Save the Hub endpoint: the mirror (on) or the default (off); the token is kept."""
        from dataclasses import replace

        from .models.hub_config import load_hub_config, save_hub_config
        from .welcome import HUB_MIRROR

        config_dir, endpoint = self.paths.config_dir, HUB_MIRROR if on else ""

        def save() -> None:
            save_hub_config(config_dir, replace(load_hub_config(config_dir), endpoint=endpoint))
        self.io.submit(save, lambda _: self.sink.inform(
            tr("Downloads will use {endpoint}.", endpoint=endpoint or "huggingface.co"),
            timeout_ms=4000))

    def show_models(self) -> None:
        """The Models page (built on first use)."""
        self.models_action.setChecked(True)
        self.pages.setCurrentWidget(self.models_page)

    def show_settings(self) -> None:
        """The Settings page."""
        self.settings_action.setChecked(True)
        self.pages.setCurrentWidget(self.settings_page)

    def show_about(self) -> None:
        """The About dialog (version, licences), window-modal; returns at once."""
        from .about import AboutDialog

        dialog = AboutDialog(self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    @property
    def models_page(self) -> ModelsPage:
        """The Models page, created on first use (it reads the catalog and the hardware)."""
        if self._models_page is None:
            from .models.page import ModelsPage

            page = ModelsPage(self.paths, self.io, self.sink, self.catalog_path)
            page.models_changed.connect(self.refresh_models)
            page.load_requested.connect(self._load_from_models_page)
            from mixtral_desk.core import network

            page.set_offline(network.is_offline())
            page.downloads.state_changed.connect(self._download_state_changed)
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
        self.apply_settings(settings)
        if self._settings_page is not None:
            self._settings_page.set_settings(settings)
        if not self.server.is_running:
            self._serve_tooltip()
        self._settings_read = True
        self.refresh_models()

    def apply_settings(self, settings: Settings) -> None:
        """Put the interface settings into effect: language, theme, Offline mode, idle unload."""
        from mixtral_desk.core import i18n, network

        from .i18n import apply_language, system_locale_name
        from .theme import apply_theme

        interface = settings.interface
        if i18n.resolve_language(interface.language, system_locale_name()) != \
                i18n.current_language():
            apply_language(interface.language)
        apply_theme(interface.theme)
        was_offline = network.is_offline()
        network.apply_offline_setting(settings.network.offline)  # --offline/HF_HUB_OFFLINE stay
        offline = network.is_offline()
        self._show_network("offline" if offline else "online")
        if self._models_page is not None:
            self._models_page.set_offline(offline)
            if offline and not was_offline:  # running transfers stop now, their bytes are kept
                self._models_page.downloads.pause_running()
        self.idle.set_minutes(settings.load.idle_unload_minutes)

    def _show_network(self, state: str) -> None:
        """The status bar's quiet network indicator (``online`` shows nothing)."""
        self.status.show_network(state)

    def _download_state_changed(self, event: JobStateChanged) -> None:
        """A download that could not reach the Hub shows the "unreachable" indicator; one that
        completes clears it (Offline mode keeps its own)."""
        from mixtral_desk.core import network

        if network.is_offline():
            return
        if isinstance(event.error, network.UnreachableError):
            self._show_network("unreachable")
        elif event.state in ("running", "completed") and self.status.network == "unreachable":
            self._show_network("online")

    def _unloaded_when_idle(self, name: str) -> None:
        minutes = self.settings.load.idle_unload_minutes
        self.sink.inform(ntr(
            "Unloaded {name} after {count} minute without use, to give its memory back. "
            "Send a message (or press Load) to load it again.",
            "Unloaded {name} after {count} minutes without use, to give its memory back. "
            "Send a message (or press Load) to load it again.", minutes, name=name),
            timeout_ms=None)

    def _settings_failed(self, error: BaseException) -> None:
        self.sink.report(error, tr("while reading the settings (the defaults are used; the "
                                   "file is left as it is)"))
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
                                  n_cpu_moe=load.n_cpu_moe,
                                  # automatic: replaced on the engine thread before loading
                                  n_ctx=load.n_ctx or AUTOMATIC_CONTEXT_PLACEHOLDER,
                                  n_threads=load.n_threads, n_batch=load.n_batch,
                                  flash_attn=load.flash_attn,
                                  kv_type=load.kv_type, use_mmap=load.use_mmap,
                                  use_mlock=load.use_mlock)
        except ValueError as error:
            self.sink.report(error, tr("in the load settings"))
            return
        self._loaded_with = load
        self.idle.set_minutes(load.idle_unload_minutes)
        self.engine.load(options, auto=load.gpu_layers_auto, fit_context=load.n_ctx is None)
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
        """Send was pressed with no model loaded: load the chosen one (after an idle unload, the
        one that was in use) and send the message once it is ready; with none chosen, say how
        to get one."""
        if self.engine.model_info is not None:
            return
        path = self.picker.selected()
        if path is None:
            self.sink.inform(tr("No model is loaded yet. Pick one in the toolbar and press "
                                "Load."), level="warning")
            if not self.picker.combo.count():
                self.show_models()
            return
        self._send_when_loaded = True
        if self.picker.state != "loading":
            self.load_model(path)
        self.sink.inform(tr("Loading {name}; your message is sent when it is ready.",
                            name=path.name), timeout_ms=None)

    def _send_waiting_message(self) -> None:
        """After a load that Send started, send what is in the input."""
        if not self._send_when_loaded:
            return
        self._send_when_loaded = False
        text = self.chat_page.view.composer.toPlainText().strip()
        if text:
            self.chat_page.send(text)

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
        seconds, n_ctx = f"{info.load_seconds:.1f}", f"{info.n_ctx:,}"
        loaded = tr("Loaded {name} in {seconds} s (context: {n_ctx} tokens).",
                    name=Path(info.path).name, seconds=seconds, n_ctx=n_ctx)
        if report is None or report.plan is None:
            self.sink.inform(loaded, timeout_ms=3000)
        else:  # the plan (and any fallback) stays visible; a difference from it is a warning
            # The planner's notes are clauses: each becomes a sentence, in the language's way.
            plan = " ".join(tr("{clause}.", clause=note.rstrip(".")) for note in report.notes)
            if report.warnings:
                text = tr("{loaded} Automatic GPU layers: {plan} But llama.cpp did not follow "
                          "the plan: {differences}.", loaded=loaded, plan=plan,
                          differences=tr("; ").join(report.warnings))
            else:
                text = tr("{loaded} Automatic GPU layers: {plan}", loaded=loaded, plan=plan)
            self.sink.inform(text, level="warning" if report.warnings else "info",
                             timeout_ms=None if report.warnings else 10_000)
        if self.pages.currentWidget() is self.welcome:
            self.show_chat()
        self._send_waiting_message()

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
        where = url or (f"http://127.0.0.1:{port}/v1" if port
                        else tr("http://127.0.0.1:(a free port)/v1"))
        self.serve_button.setToolTip(tr(
            "Serve the loaded model over an OpenAI-compatible API at {url}, for programs on "
            "this computer only (no key needed). {hint}", url=where, hint=tr(NETWORK_HINT)))

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
        self.sink.inform(tr("Serving the model at {url} (this computer only).", url=url),
                         timeout_ms=6000)

    def _not_serving(self) -> None:
        self.status.show_api(None)
        self._serve_tooltip()
        self._server_busy(False)
        self._set_serve_button(enabled=self._serve_allowed, checked=False)

    def _server_busy(self, busy: bool) -> None:
        send = self.chat_page.view.send_button
        send.setEnabled(not busy)
        send.setToolTip(tr(SERVER_BUSY) if busy else "")

    def _engine_crashed(self, error: EngineCrashedError) -> None:
        self.sink.report(error, actions=(Action(tr("Reload model"), self.reload_model),))

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
            self.apply_settings(settings)
            emit(self.settings_saved, settings)
            if not quiet:
                self.sink.inform(tr("Settings saved."), timeout_ms=2500)

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
        self.idle.stop()
        self.chat_page.sidebar.commit_all()
        if self._models_page is not None:
            self._models_page.shutdown()
        self.server.close()
        self.engine.close()
        self.store.close()
        self.io.close()
