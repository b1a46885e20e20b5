"""The main window: toolbar (pages, model picker), notification bar, pages, status bar.

It builds the widgets, reads and applies the settings at start-up, and assembles the controllers
of :mod:`.controllers` (the model, the API toggle, the first run, the network indicator, the
backups); the use cases themselves live in the core session (:mod:`mixtral_desk.core.session`).
"""

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

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.paths import DataPaths, data_paths

from .bridge.server_bridge import DEFAULT_API_PORT, ServerBridge
from .bridge.session_bridge import SessionBridge
from .bridge.store_bridge import StoreBridge
from .bridge.tasks import TaskQueue
from .chat.page import ChatPage
from .controllers.expert_merge import ExpertMergeController
from .controllers.first_run import FirstRunController
from .controllers.model_control import ModelController
from .controllers.network_status import NetworkIndicator
from .controllers.serve_control import ServeController
from .controllers.store_recovery import StoreRecoveryController
from .errors import ErrorSink
from .i18n import keep_translated
from .model_picker import ModelPicker
from .notification_bar import NotificationBar
from .signals import emit
from .status_bar import StatusBar
from .welcome import Welcome

if TYPE_CHECKING:  # pydantic, numpy and the engine package load after the first paint
    from mixtral_desk.core.catalog import CatalogEntry
    from mixtral_desk.core.downloads.local import LocalModel
    from mixtral_desk.core.engine import ModelInfo
    from mixtral_desk.core.settings import Settings

    from .models.page import ModelsPage
    from .settings.page import SettingsPage

log = logging.getLogger(__name__)


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
        models_listed(object): the model picker was filled (the list of
            :class:`~mixtral_desk.core.downloads.local.LocalModel`).
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
        self._models_listed = False
        self._conversation_count: int | None = None
        self._closed = False
        self._extra_models: list[Path] = []
        self.catalog_path: Path | None = None  # None: the packaged models.toml
        self.setWindowTitle("Mixtral Desk")
        self.resize(1100, 720)

        report = self.sink.report
        self.io = TaskQueue("io", on_error=lambda e: report(e), parent=self)
        self.store = StoreBridge(self.sink, self.paths.database, parent=self)
        self.store_recovery = StoreRecoveryController(self.sink, self.store, self)
        self.session = SessionBridge(self.sink, self.store, self.paths.engine_log, parent=self)
        self.server = ServerBridge(self.sink, parent=self)

        self._build_toolbar()
        self.notifications = NotificationBar()
        self.sink.notice.connect(self.notifications.show_notice)
        self.pages = QStackedWidget()
        self.welcome = Welcome()
        self.chat_page = ChatPage(self.store, self.session, self.sink)
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

        self.models = ModelController(self.session, self.picker, self.status, self.chat_page,
                                      self.sink, self.io,
                                      lambda: self.settings.load.idle_unload_minutes, parent=self)
        self.idle = self.models.idle
        self.expert_merge = ExpertMergeController(self.sink, self.models.load, parent=self)
        self.session.load_error_actions = self.expert_merge.actions_for
        self.serving = ServeController(self.server, self.session, self.serve_button, self.status,
                                       self.chat_page, self.sink, self._api_port,
                                       self.paths.settings_file, parent=self)
        self.first_run = FirstRunController(self.welcome, self.paths, self.io, self.sink,
                                            lambda: self.catalog_path, parent=self)
        self.network = NetworkIndicator(self.status, parent=self)
        self._build_shortcuts()
        self._connect()
        self.pages.setCurrentWidget(self.chat_page)
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
        self.serving.show_tooltip()

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
        self.session.use_settings(value)

    def _api_port(self) -> int:
        return self.settings.server.api_port if self._settings is not None else DEFAULT_API_PORT

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
        self.models.load_asked.connect(self._remember_model)
        self.models.model_leaving.connect(self.serving.model_going)
        self.models.model_changed.connect(self.serving.model_changed)
        self.models.model_changed.connect(self._model_changed)
        self.models.no_model.connect(self.show_models)
        self.server.started.connect(lambda _: self.idle.restart())
        self.server.stopped.connect(self.idle.restart)
        self.store.opened.connect(self._store_opened)
        self.welcome.browse_requested.connect(self.show_models)
        self.welcome.open_requested.connect(self.picker.browse)
        self.welcome.download_requested.connect(self._download_recommended)

    # --- pages ---------------------------------------------------------------------------------

    def show_chat(self) -> None:
        """The chat page (or the welcome screen on a first run)."""
        self.chat_action.setChecked(True)
        first_run = (self.session.model_info is None and not self.picker.combo.count()
                     and not self._conversation_count
                     and not self.chat_page.sidebar.conversations)
        self.pages.setCurrentWidget(self.welcome if first_run else self.chat_page)
        if first_run:
            self.first_run.prepare()

    def _download_recommended(self, entry: CatalogEntry) -> None:
        self.show_models()
        self.models_page.download(entry)

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
            from mixtral_desk.core import network

            from .models.page import ModelsPage

            page = ModelsPage(self.paths, self.io, self.sink, self.catalog_path)
            page.models_changed.connect(self.refresh_models)
            page.load_requested.connect(self._load_from_models_page)
            page.set_offline(network.is_offline())
            page.downloads.state_changed.connect(self.network.download_state_changed)
            self._models_page = page
            self.pages.addWidget(page)
        return self._models_page

    @property
    def settings_page(self) -> SettingsPage:
        """The Settings page, created on first use."""
        if self._settings_page is None:
            from .settings.page import SettingsPage

            page = SettingsPage(self.settings, self.io)
            page.save_requested.connect(self.save_settings)
            page.reload_requested.connect(self.models.reload)
            self._settings_page = page
            self._model_changed(self.session.model_info)
            self.pages.addWidget(page)
        return self._settings_page

    # --- start-up ------------------------------------------------------------------------------

    def _settings_loaded(self, settings: Settings) -> None:
        self.settings = settings
        self.apply_settings(settings)
        if self._settings_page is not None:
            self._settings_page.set_settings(settings)
        self.serving.show_tooltip()
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
        self.network.show_mode(offline)
        if self._models_page is not None:
            self._models_page.set_offline(offline)
            if offline and not was_offline:  # running transfers stop now, their bytes are kept
                self._models_page.downloads.pause_running()
        self.idle.restart()

    def _settings_failed(self, error: BaseException) -> None:
        self.sink.report(error, tr("while reading the settings (the defaults are used; the "
                                   "file is left as it is)"))
        self._settings_read = True
        self.refresh_models()

    def _store_opened(self, store: object) -> None:
        self.chat_page.sidebar.refresh()
        self.store.call(lambda s: s.count_conversations(), self._counted)

    def _counted(self, count: int) -> None:
        self._conversation_count = count
        self._check_ready()

    def refresh_models(self) -> None:
        """List the local models again (in the background) and fill the picker."""
        from mixtral_desk.core.downloads.local import models_to_offer

        extra = list(self._extra_models)
        if self.settings.last_model:
            extra.append(Path(self.settings.last_model))
        models_dir = self.paths.models_dir
        self.io.submit(lambda: models_to_offer(models_dir, extra), self._models_found)

    def _models_found(self, models: list[LocalModel]) -> None:
        info = self.session.model_info
        current = Path(info.path) if info is not None else (
            Path(self.settings.last_model) if self.settings.last_model else None)
        self.picker.set_models(models, current)
        self._models_listed = True
        emit(self.models_listed, models)
        self._check_ready()

    def _check_ready(self) -> None:
        if self._conversation_count is not None and self._settings_read and self._models_listed:
            if self.pages.currentWidget() in (self.welcome, self.chat_page):
                self.show_chat()
            emit(self.ready)

    # --- the model -----------------------------------------------------------------------------

    def load_model(self, path: Path) -> None:
        """Load a model file with the saved load settings."""
        self.models.load(path)

    def _remember_model(self, path: Path) -> None:
        """A model is loading: offer it in the picker from now on and remember it as the last."""
        if path not in self._extra_models:
            self._extra_models.append(path)
        if self.settings.last_model != str(path):
            self.save_settings(self.settings.model_copy(update={"last_model": str(path)}),
                               quiet=True)

    def _load_from_models_page(self, path: Path) -> None:
        self.load_model(path)
        self.show_chat()

    def _model_changed(self, info: ModelInfo | None) -> None:
        if self._settings_page is not None:
            report = self.session.load_report
            self._settings_page.model_changed(
                info, report.settings if report is not None else None,
                True if info is None else info.backend.gpu_offload)
        if info is not None and self.pages.currentWidget() is self.welcome:
            self.show_chat()

    # --- settings ------------------------------------------------------------------------------

    def save_settings(self, settings: Settings, quiet: bool = False) -> None:
        """Write the settings in the background; say so when done."""
        def saved(_: None) -> None:
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
        self.chat_page.focus_input()

    def escape(self) -> None:
        """Esc: stop the reply, else leave edit mode."""
        if self.session.busy:
            self.session.stop()
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
        self.models.stop()
        self.expert_merge.close()
        self.chat_page.sidebar.commit_all()
        if self._models_page is not None:
            self._models_page.shutdown()
        self.serving.close()
        self.session.close()
        self.store.close()
        self.io.close()
