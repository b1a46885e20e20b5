"""The Settings screen: the interface, the network, how models load, the prompt cache and the
default sampling, saved through core.settings."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.engine import ModelInfo, SamplingOptions
from mixtral_desk.core.i18n import LANGUAGES, N_, SYSTEM, tr
from mixtral_desk.core.settings import InterfaceSettings, LoadDefaults, NetworkSettings, Settings

from ..bridge.tasks import TaskQueue
from ..i18n import keep_translated
from ..signals import emit
from .prompt_cache_box import PromptCacheBox

DEFAULT_MAX_LAYERS = 99
#: The longest idle time the settings accept (a week), in minutes.
MAX_IDLE_MINUTES = 10_080
#: The shortest context length the settings accept (a shorter one typed in is raised to it).
MIN_CONTEXT = 256
#: The theme setting's values and their names, in the combo box's order.
THEMES = {"system": N_("Follow the system"), "light": N_("Light"), "dark": N_("Dark")}


def _quiet(label: QLabel) -> QLabel:
    """A word-wrapped note in the palette's muted text colour (follows light and dark themes)."""
    label.setWordWrap(True)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


def _add_row(form: QFormLayout, field: QWidget) -> QLabel:
    """Add ``field`` to ``form`` under a label (its text set later) that names it (buddy)."""
    label = QLabel()
    label.setBuddy(field)
    form.addRow(label, field)
    return label


def _needs_reload(loaded: LoadDefaults, saved: LoadDefaults) -> bool:
    """Whether a model loaded with ``loaded`` misses something of ``saved`` (the idle unload time
    is not part of the load: it applies at once; nor is the prompt cache's budget)."""
    keep = {"idle_unload_minutes": 0, "prompt_cache_gib": None}
    return loaded.model_copy(update=keep) != saved.model_copy(update=keep)


class SettingsPage(QWidget):
    """Edits :class:`Settings`; :meth:`settings` reads the form back. ``io``: the task queue
    that measures and clears the prompt cache folder.

    Every text is set in :meth:`retranslate`, which changes no value: a language switch keeps the
    user's unsaved edits and saves nothing.

    Signals:
        save_requested(object): the user pressed Save; carries the new :class:`Settings`.
        reload_requested(): the user asked to reload the model with the new load settings.
    """

    save_requested = Signal(object)
    reload_requested = Signal()

    def __init__(self, settings: Settings, io: TaskQueue, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._loaded_with: LoadDefaults | None = None
        self._max_layers = DEFAULT_MAX_LAYERS
        self._model_info: ModelInfo | None = None
        self._gpu_offload = True

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        body.setMaximumWidth(720)
        column = QVBoxLayout(body)
        column.setContentsMargins(24, 16, 24, 16)
        # Never squeeze the fields below their minimum height (word-wrapped hints otherwise make
        # the scroll area's page shorter than its content); scroll instead.
        column.setSizeConstraint(QLayout.SizeConstraint.SetMinimumSize)
        self.title = QLabel()
        column.addWidget(self.title)

        # --- the interface and the network ---
        self.interface_box = QGroupBox()
        interface = QFormLayout(self.interface_box)
        interface.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.language = QComboBox()
        self.language.addItem("", SYSTEM)
        for code, name in LANGUAGES.items():
            self.language.addItem(name, code)  # each language's name in that language
        self.language_label = _add_row(interface, self.language)
        self.theme = QComboBox()
        for value in THEMES:
            self.theme.addItem("", value)
        self.theme_label = _add_row(interface, self.theme)
        column.addWidget(self.interface_box)

        self.network_box = QGroupBox()
        network = QVBoxLayout(self.network_box)
        self.offline_mode = QCheckBox()
        network.addWidget(self.offline_mode)
        self.offline_note = _quiet(QLabel())
        network.addWidget(self.offline_note)
        column.addWidget(self.network_box)

        # --- loading models ---
        self.load_box = QGroupBox()
        load = QFormLayout(self.load_box)
        load.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        gpu_row = QHBoxLayout()
        self.gpu_slider = QSlider(Qt.Orientation.Horizontal)
        self.gpu_slider.setMinimumWidth(320)
        self.gpu_label = QLabel()
        self.gpu_label.setMinimumWidth(120)
        self.gpu_slider.valueChanged.connect(self._gpu_text)
        gpu_row.addWidget(self.gpu_slider, 1)
        gpu_row.addWidget(self.gpu_label)
        self.gpu_layers_label = QLabel()
        self.gpu_layers_label.setBuddy(self.gpu_slider)  # the field is a layout: tie it by hand
        load.addRow(self.gpu_layers_label, gpu_row)
        self.gpu_auto = QCheckBox()
        self.gpu_auto.toggled.connect(self._auto_changed)
        load.addRow("", self.gpu_auto)
        self.gpu_note = _quiet(QLabel())
        self.gpu_note.setMinimumWidth(420)
        load.addRow("", self.gpu_note)
        self.cpu_moe = QSpinBox(minimum=0, maximum=DEFAULT_MAX_LAYERS)
        self.cpu_moe_label = _add_row(load, self.cpu_moe)
        # 0 (shown as "Automatic") is no length: chosen at each load (core.context_size).
        self.n_ctx = QSpinBox(minimum=0, maximum=1_048_576, singleStep=1024)
        self.n_ctx.setMinimumWidth(220)
        self.n_ctx_label = _add_row(load, self.n_ctx)
        self.n_threads = QSpinBox(minimum=0, maximum=1024)
        self.n_threads.setMinimumWidth(220)
        self.n_threads_label = _add_row(load, self.n_threads)
        self.n_batch = QSpinBox(minimum=1, maximum=16384, singleStep=64)
        self.n_batch_label = _add_row(load, self.n_batch)
        self.flash_attn = QCheckBox()
        load.addRow("", self.flash_attn)
        self.kv_type = QComboBox()
        self.kv_type.addItems(["f16", "q8_0", "q4_0"])
        self.kv_type_label = _add_row(load, self.kv_type)
        self.flash_attn.toggled.connect(self._kv_enabled)
        self.use_mmap = QCheckBox()
        self.use_mlock = QCheckBox()
        load.addRow("", self.use_mmap)
        load.addRow("", self.use_mlock)
        self.idle_unload = QSpinBox(minimum=0, maximum=MAX_IDLE_MINUTES, singleStep=5)
        self.idle_unload.setMinimumWidth(160)
        self.idle_unload_label = _add_row(load, self.idle_unload)
        column.addWidget(self.load_box)

        # --- the prompt cache (its folder is measured and cleared on ``io``) ---
        self.prompt_cache = PromptCacheBox(io)
        column.addWidget(self.prompt_cache)

        # --- default sampling ---
        self.sampling_box = QGroupBox()
        sampling = QFormLayout(self.sampling_box)
        sampling.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.05)
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1.0, singleStep=0.05)
        self.top_k = QSpinBox(minimum=0, maximum=1000)
        self.min_p = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, singleStep=0.01)
        self.repeat_penalty = QDoubleSpinBox(decimals=2, minimum=0.5, maximum=2.0, singleStep=0.05)
        self.max_tokens = QSpinBox(minimum=1, maximum=131072)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1)
        self._sampling_labels: list[QLabel] = []
        for widget in (self.temperature, self.top_p, self.top_k, self.min_p,
                       self.repeat_penalty, self.max_tokens, self.seed):
            self._sampling_labels.append(_add_row(sampling, widget))
        column.addWidget(self.sampling_box)

        self.reload_note = QWidget()
        note = QHBoxLayout(self.reload_note)
        note.setContentsMargins(0, 0, 0, 0)
        self.reload_text = QLabel()
        self.reload_text.setWordWrap(True)
        note.addWidget(self.reload_text, 1)
        self.reload_button = QPushButton()
        self.reload_button.clicked.connect(self.reload_requested)
        note.addWidget(self.reload_button)
        self.reload_note.hide()
        column.addWidget(self.reload_note)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.revert_button = QPushButton()
        self.revert_button.clicked.connect(lambda: self.set_settings(self._settings))
        self.save_button = QPushButton()
        self.save_button.setDefault(True)
        self.save_button.clicked.connect(lambda: emit(self.save_requested, self.settings()))
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.save_button)
        column.addLayout(buttons)
        column.addStretch(1)

        holder = QWidget()
        row = QHBoxLayout(holder)
        row.addWidget(body, 1)
        row.addStretch(0)
        scroll.setWidget(holder)
        outer.addWidget(scroll)
        keep_translated(self.retranslate)
        self.set_settings(settings)
        self.model_changed(None, None, True)

    def retranslate(self) -> None:
        """Set every text in the current language; no value changes and nothing is saved."""
        self.title.setText("<h2>" + escape(tr("Settings")) + "</h2>")

        self.interface_box.setTitle(tr("Interface"))
        self.language_label.setText(tr("Language"))
        self.language.setItemText(0, tr("Follow the system"))
        self.language.setToolTip(tr("Takes effect when the settings are saved."))
        self.theme_label.setText(tr("Theme"))
        for index, name in enumerate(THEMES.values()):
            self.theme.setItemText(index, tr(name))
        self.theme.setToolTip(tr("Takes effect when the settings are saved."))

        self.network_box.setTitle(tr("Network"))
        self.offline_mode.setText(tr("Offline mode"))
        self.offline_note.setText(tr("No downloads, Hub search or remote model headers; chat, "
                                     "search and export work as always."))
        self.offline_mode.setAccessibleDescription(self.offline_note.text())

        self.load_box.setTitle(tr("Loading models"))
        self.gpu_layers_label.setText(tr("GPU layers"))
        self.gpu_slider.setAccessibleName(tr("GPU layers"))
        self.gpu_slider.setToolTip(tr("How many layers to put on the GPU; the right end puts all "
                                      "of them there."))
        self.gpu_auto.setText(tr("Automatic (plan for this machine)"))
        self.gpu_auto.setToolTip(tr(
            "At each load, choose the GPU layers and which layers keep their experts in RAM "
            "from the model file and this machine's free memory. Takes effect when the model "
            "is (re)loaded."))
        self.cpu_moe_label.setText(tr("Expert layers kept in RAM (MoE)"))
        self.cpu_moe.setSpecialValueText(tr("none"))
        self.cpu_moe.setToolTip(tr(
            "Mixture-of-experts models: keep the expert tensors of the first N layers in RAM "
            "(llama.cpp's --n-cpu-moe), so that more layers fit on the GPU. Takes effect when "
            "the model is (re)loaded."))
        self.n_ctx_label.setText(tr("Context length (tokens)"))
        self.n_ctx.setSpecialValueText(tr("Automatic (8,192, more if memory is plentiful)"))
        self.n_ctx.setToolTip(tr(
            "Automatic picks, at each load, 8,192 tokens; a longer context when memory is "
            "plentiful (twice the room kept for the system stays free), a shorter one when it "
            "is tight. It always leaves room for the rest of the system (at least 2 GiB, more "
            "on machines with more RAM), and the load says why it chose the length."))
        self.n_threads_label.setText(tr("CPU threads"))
        self.n_threads.setSpecialValueText(tr("automatic (physical cores)"))
        self.n_batch_label.setText(tr("Batch size"))
        self.flash_attn.setText(tr("Flash attention"))
        self.kv_type_label.setText(tr("KV cache type"))
        self.kv_type.setToolTip(tr("A quantized KV cache saves memory and needs flash attention."))
        self.use_mmap.setText(tr("Map the model file into memory (mmap)"))
        self.use_mlock.setText(tr("Lock the model in RAM (mlock)"))
        self.idle_unload_label.setText(tr("Unload an idle model after"))
        self.idle_unload.setSuffix(tr(" min"))
        self.idle_unload.setSpecialValueText(tr("Never"))
        self.idle_unload.setToolTip(tr("Unload the model when it has not been used for this long, "
                                       "giving its memory back. 0 keeps it loaded."))

        self.sampling_box.setTitle(tr("Default generation settings (each conversation can "
                                      "override)"))
        names = (tr("Temperature"), tr("Top-p"), tr("Top-k"), tr("Min-p"), tr("Repeat penalty"),
                 tr("Max tokens per reply"), tr("Seed"))
        for label, name in zip(self._sampling_labels, names, strict=True):
            label.setText(name)
        self.seed.setSpecialValueText(tr("random"))

        self.reload_text.setText(tr("⚠ The loaded model uses the old load settings. Reload it "
                                    "to apply the new ones."))
        self.reload_button.setText(tr("Reload model"))
        self.revert_button.setText(tr("Revert"))
        self.revert_button.setToolTip(tr("Show the saved settings again, dropping the changes."))
        self.save_button.setText(tr("Save"))
        self._gpu_text(self.gpu_slider.value())
        self._update_gpu_note()

    # --- form <-> settings ---------------------------------------------------------------------

    def set_settings(self, settings: Settings) -> None:
        """Fill the form from ``settings`` (the saved ones)."""
        self._settings = settings
        load, sampling = settings.load, settings.sampling
        self.language.setCurrentIndex(max(0, self.language.findData(settings.interface.language)))
        self.theme.setCurrentIndex(max(0, self.theme.findData(settings.interface.theme)))
        self.offline_mode.setChecked(settings.network.offline)
        self._set_gpu_range(self._max_layers)
        self.gpu_slider.setValue(self._max_layers + 1 if load.n_gpu_layers < 0
                                 else min(load.n_gpu_layers, self._max_layers + 1))
        self._gpu_text(self.gpu_slider.value())
        self.cpu_moe.setValue(min(load.n_cpu_moe, self.cpu_moe.maximum()))
        self.gpu_auto.setChecked(load.gpu_layers_auto)
        self._auto_changed(load.gpu_layers_auto)
        self.n_ctx.setValue(load.n_ctx or 0)
        self.n_threads.setValue(load.n_threads or 0)
        self.n_batch.setValue(load.n_batch)
        self.flash_attn.setChecked(load.flash_attn)
        self.kv_type.setCurrentText(load.kv_type)
        self._kv_enabled(load.flash_attn)
        self.use_mmap.setChecked(load.use_mmap)
        self.use_mlock.setChecked(load.use_mlock)
        self.idle_unload.setValue(load.idle_unload_minutes)
        self.prompt_cache.set_value(load.prompt_cache_gib)
        self.temperature.setValue(sampling.temperature)
        self.top_p.setValue(sampling.top_p)
        self.top_k.setValue(sampling.top_k)
        self.min_p.setValue(sampling.min_p)
        self.repeat_penalty.setValue(sampling.repeat_penalty)
        self.max_tokens.setValue(sampling.max_tokens or 1024)
        self.seed.setValue(-1 if sampling.seed is None else sampling.seed)
        self._update_reload_note()

    def settings(self) -> Settings:
        """The settings the form shows.

        Raises:
            ValueError (pydantic's ValidationError): a value is out of range.
        """
        layers = self.gpu_slider.value()
        load = LoadDefaults(
            n_gpu_layers=-1 if layers > self._max_layers else layers,
            gpu_layers_auto=self.gpu_auto.isChecked(),
            n_cpu_moe=self.cpu_moe.value(),
            n_ctx=max(self.n_ctx.value(), MIN_CONTEXT) if self.n_ctx.value() else None,
            n_threads=self.n_threads.value() or None,
            n_batch=self.n_batch.value(),
            flash_attn=self.flash_attn.isChecked(),
            kv_type=self.kv_type.currentText() if self.flash_attn.isChecked() else "f16",  # type: ignore[arg-type]
            use_mmap=self.use_mmap.isChecked(),
            use_mlock=self.use_mlock.isChecked(),
            idle_unload_minutes=self.idle_unload.value(),
            prompt_cache_gib=self.prompt_cache.value(),
        )
        old = self._settings.sampling
        sampling = SamplingOptions(
            temperature=round(self.temperature.value(), 2), top_p=round(self.top_p.value(), 2),
            top_k=self.top_k.value(), min_p=round(self.min_p.value(), 2),
            repeat_penalty=round(self.repeat_penalty.value(), 2),
            max_tokens=self.max_tokens.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(),
            stop=old.stop, ignore_eos=old.ignore_eos)
        interface = InterfaceSettings(language=self.language.currentData(),
                                      theme=self.theme.currentData())
        network = NetworkSettings(offline=self.offline_mode.isChecked())
        return self._settings.model_copy(update={"load": load, "sampling": sampling,
                                                 "interface": interface, "network": network})

    def saved(self, settings: Settings) -> None:
        """The settings were written: they are the new baseline."""
        self._settings = settings
        self._update_reload_note()

    # --- the loaded model ----------------------------------------------------------------------

    def model_changed(self, info: ModelInfo | None, loaded_with: LoadDefaults | None,
                      gpu_offload: bool) -> None:
        """Adapt the GPU slider to the loaded model and remember its load settings."""
        self._loaded_with = loaded_with if info is not None else None
        self._model_info, self._gpu_offload = info, gpu_offload
        value = self.gpu_slider.value()
        was_all = value > self._max_layers
        self._max_layers = info.n_layers if info is not None else DEFAULT_MAX_LAYERS
        self._set_gpu_range(self._max_layers)
        self.gpu_slider.setValue(self._max_layers + 1 if was_all else min(value, self._max_layers))
        self._gpu_text(self.gpu_slider.value())
        self.cpu_moe.setMaximum(self._max_layers)
        self._update_gpu_note()
        self._update_reload_note()

    def _slider_note(self) -> str:
        """What the GPU slider means now (from the loaded model and the llama.cpp build)."""
        info = self._model_info
        if self._gpu_offload:
            if info is None:
                return tr("Slide to the right end to put all layers on the GPU.")
            return tr("The loaded model has {layers} layers; {gpu_layers} are on the GPU now.",
                      layers=info.n_layers, gpu_layers=info.n_gpu_layers)
        if info is None:
            return tr("Slide to the right end to put all layers on the GPU. This llama.cpp build "
                      "runs on the CPU only; GPU layers need a CUDA, Metal or Vulkan build (see "
                      "the README).")
        return tr("The loaded model has {layers} layers; {gpu_layers} are on the GPU now. This "
                  "llama.cpp build runs on the CPU only; GPU layers need a CUDA, Metal or Vulkan "
                  "build (see the README).", layers=info.n_layers, gpu_layers=info.n_gpu_layers)

    def _update_reload_note(self) -> None:
        loaded = self._loaded_with
        self.reload_note.setVisible(loaded is not None
                                    and _needs_reload(loaded, self._settings.load))

    def _set_gpu_range(self, layers: int) -> None:
        self.gpu_slider.setRange(0, layers + 1)

    def _gpu_text(self, value: int) -> None:
        if value == 0:
            text = tr("0 (CPU only)")
        elif value > self._max_layers:
            text = tr("all layers")
        else:
            text = tr("{layers} of {total}", layers=value, total=self._max_layers)
        self.gpu_label.setText(text)
        self.gpu_slider.setAccessibleDescription(text)

    def _auto_changed(self, auto: bool) -> None:
        self.gpu_slider.setEnabled(not auto)
        self.gpu_label.setEnabled(not auto)
        self.cpu_moe.setEnabled(not auto)
        self._update_gpu_note()

    def _update_gpu_note(self) -> None:
        if self.gpu_auto.isChecked():
            note = tr("GPU layers and expert layers in RAM are planned at each load from the "
                      "model file and this machine's free memory; the plan is shown when the "
                      "model loads.")
        else:
            note = self._slider_note()
        self.gpu_note.setText(note)
        self.gpu_note.setVisible(bool(note))

    def _kv_enabled(self, flash: bool) -> None:
        self.kv_type.setEnabled(flash)
        if not flash:
            self.kv_type.setCurrentText("f16")
