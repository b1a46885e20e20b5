"""The Settings screen: how models load and the default sampling, saved through core.settings."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.engine import ModelInfo, SamplingOptions
from mixtral_desk.core.settings import LoadDefaults, Settings

from ..signals import emit

DEFAULT_MAX_LAYERS = 99


class SettingsPage(QWidget):
    """Edits :class:`Settings`; :meth:`settings` reads the form back.

    Signals:
        save_requested(object): the user pressed Save; carries the new :class:`Settings`.
        reload_requested(): the user asked to reload the model with the new load settings.
    """

    save_requested = Signal(object)
    reload_requested = Signal()

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self._loaded_with: LoadDefaults | None = None
        self._max_layers = DEFAULT_MAX_LAYERS
        self._slider_note = ""

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        body.setMaximumWidth(720)
        column = QVBoxLayout(body)
        column.setContentsMargins(24, 16, 24, 16)
        title = QLabel("<h2>Settings</h2>")
        column.addWidget(title)

        load_box = QGroupBox("Loading models")
        load = QFormLayout(load_box)
        load.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        gpu_row = QHBoxLayout()
        self.gpu_slider = QSlider(Qt.Orientation.Horizontal)
        self.gpu_slider.setMinimumWidth(320)
        self.gpu_label = QLabel()
        self.gpu_label.setMinimumWidth(120)
        self.gpu_slider.valueChanged.connect(self._gpu_text)
        gpu_row.addWidget(self.gpu_slider, 1)
        gpu_row.addWidget(self.gpu_label)
        load.addRow("GPU layers", gpu_row)
        self.gpu_auto = QCheckBox("Automatic (plan for this machine)")
        self.gpu_auto.setToolTip(
            "At each load, choose the GPU layers and which layers keep their experts in RAM "
            "from the model file and this machine's free memory. Takes effect when the model "
            "is (re)loaded.")
        self.gpu_auto.toggled.connect(self._auto_changed)
        load.addRow("", self.gpu_auto)
        self.gpu_note = QLabel()
        self.gpu_note.setWordWrap(True)
        self.gpu_note.setMinimumWidth(420)
        self.gpu_note.setStyleSheet("color: palette(placeholder-text);")
        load.addRow("", self.gpu_note)
        self.cpu_moe = QSpinBox(minimum=0, maximum=DEFAULT_MAX_LAYERS)
        self.cpu_moe.setSpecialValueText("none")
        self.cpu_moe.setToolTip(
            "Mixture-of-experts models: keep the expert tensors of the first N layers in RAM "
            "(llama.cpp's --n-cpu-moe), so that more layers fit on the GPU. Takes effect when "
            "the model is (re)loaded.")
        load.addRow("Expert layers kept in RAM (MoE)", self.cpu_moe)
        self.n_ctx = QSpinBox(minimum=256, maximum=1_048_576, singleStep=1024)
        load.addRow("Context length (tokens)", self.n_ctx)
        self.n_threads = QSpinBox(minimum=0, maximum=1024)
        self.n_threads.setSpecialValueText("automatic (physical cores)")
        self.n_threads.setMinimumWidth(220)
        load.addRow("CPU threads", self.n_threads)
        self.n_batch = QSpinBox(minimum=1, maximum=16384, singleStep=64)
        load.addRow("Batch size", self.n_batch)
        self.flash_attn = QCheckBox("Flash attention")
        load.addRow("", self.flash_attn)
        self.kv_type = QComboBox()
        self.kv_type.addItems(["f16", "q8_0", "q4_0"])
        self.kv_type.setToolTip("A quantized KV cache saves memory and needs flash attention.")
        load.addRow("KV cache type", self.kv_type)
        self.flash_attn.toggled.connect(self._kv_enabled)
        self.use_mmap = QCheckBox("Map the model file into memory (mmap)")
        self.use_mlock = QCheckBox("Lock the model in RAM (mlock)")
        load.addRow("", self.use_mmap)
        load.addRow("", self.use_mlock)
        column.addWidget(load_box)

        sampling_box = QGroupBox("Default generation settings (each conversation can override)")
        sampling = QFormLayout(sampling_box)
        sampling.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.05)
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1.0, singleStep=0.05)
        self.top_k = QSpinBox(minimum=0, maximum=1000)
        self.min_p = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, singleStep=0.01)
        self.repeat_penalty = QDoubleSpinBox(decimals=2, minimum=0.5, maximum=2.0, singleStep=0.05)
        self.max_tokens = QSpinBox(minimum=1, maximum=131072)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1)
        self.seed.setSpecialValueText("random")
        for label, widget in (("Temperature", self.temperature), ("Top-p", self.top_p),
                              ("Top-k", self.top_k), ("Min-p", self.min_p),
                              ("Repeat penalty", self.repeat_penalty),
                              ("Max tokens per reply", self.max_tokens), ("Seed", self.seed)):
            sampling.addRow(label, widget)
        column.addWidget(sampling_box)

        self.reload_note = QWidget()
        note = QHBoxLayout(self.reload_note)
        note.setContentsMargins(0, 0, 0, 0)
        note.addWidget(QLabel("⚠ The loaded model uses the old load settings. Reload it to apply "
                              "the new ones."), 1)
        self.reload_button = QPushButton("Reload model")
        self.reload_button.clicked.connect(self.reload_requested)
        note.addWidget(self.reload_button)
        self.reload_note.hide()
        column.addWidget(self.reload_note)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.revert_button = QPushButton("Revert")
        self.revert_button.clicked.connect(lambda: self.set_settings(self._settings))
        self.save_button = QPushButton("Save")
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
        self.set_settings(settings)
        self.model_changed(None, None, True)

    # --- form <-> settings ---------------------------------------------------------------------

    def set_settings(self, settings: Settings) -> None:
        """Fill the form from ``settings`` (the saved ones)."""
        self._settings = settings
        load, sampling = settings.load, settings.sampling
        self._set_gpu_range(self._max_layers)
        self.gpu_slider.setValue(self._max_layers + 1 if load.n_gpu_layers < 0
                                 else min(load.n_gpu_layers, self._max_layers + 1))
        self._gpu_text(self.gpu_slider.value())
        self.cpu_moe.setValue(min(load.n_cpu_moe, self.cpu_moe.maximum()))
        self.gpu_auto.setChecked(load.gpu_layers_auto)
        self._auto_changed(load.gpu_layers_auto)
        self.n_ctx.setValue(load.n_ctx)
        self.n_threads.setValue(load.n_threads or 0)
        self.n_batch.setValue(load.n_batch)
        self.flash_attn.setChecked(load.flash_attn)
        self.kv_type.setCurrentText(load.kv_type)
        self._kv_enabled(load.flash_attn)
        self.use_mmap.setChecked(load.use_mmap)
        self.use_mlock.setChecked(load.use_mlock)
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
            n_ctx=self.n_ctx.value(),
            n_threads=self.n_threads.value() or None,
            n_batch=self.n_batch.value(),
            flash_attn=self.flash_attn.isChecked(),
            kv_type=self.kv_type.currentText() if self.flash_attn.isChecked() else "f16",  # type: ignore[arg-type]
            use_mmap=self.use_mmap.isChecked(),
            use_mlock=self.use_mlock.isChecked(),
        )
        old = self._settings.sampling
        sampling = SamplingOptions(
            temperature=round(self.temperature.value(), 2), top_p=round(self.top_p.value(), 2),
            top_k=self.top_k.value(), min_p=round(self.min_p.value(), 2),
            repeat_penalty=round(self.repeat_penalty.value(), 2),
            max_tokens=self.max_tokens.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(),
            stop=old.stop, ignore_eos=old.ignore_eos)
        return self._settings.model_copy(update={"load": load, "sampling": sampling})

    def saved(self, settings: Settings) -> None:
        """The settings were written: they are the new baseline."""
        self._settings = settings
        self._update_reload_note()

    # --- the loaded model ----------------------------------------------------------------------

    def model_changed(self, info: ModelInfo | None, loaded_with: LoadDefaults | None,
                      gpu_offload: bool) -> None:
        """Adapt the GPU slider to the loaded model and remember its load settings."""
        self._loaded_with = loaded_with if info is not None else None
        value = self.gpu_slider.value()
        was_all = value > self._max_layers
        self._max_layers = info.n_layers if info is not None else DEFAULT_MAX_LAYERS
        self._set_gpu_range(self._max_layers)
        self.gpu_slider.setValue(self._max_layers + 1 if was_all else min(value, self._max_layers))
        self._gpu_text(self.gpu_slider.value())
        self.cpu_moe.setMaximum(self._max_layers)
        note = "" if gpu_offload else ("This llama.cpp build runs on the CPU only; GPU layers "
                                       "need a CUDA, Metal or Vulkan build (see the README).")
        if info is None:
            note = ("Slide to the right end to put all layers on the GPU. " + note).strip()
        else:
            note = (f"The loaded model has {info.n_layers} layers; {info.n_gpu_layers} are on "
                    f"the GPU now. " + note).strip()
        self._slider_note = note
        self._update_gpu_note()
        self._update_reload_note()

    def _update_reload_note(self) -> None:
        loaded = self._loaded_with
        self.reload_note.setVisible(loaded is not None and loaded != self._settings.load)

    def _set_gpu_range(self, layers: int) -> None:
        self.gpu_slider.setRange(0, layers + 1)

    def _gpu_text(self, value: int) -> None:
        if value == 0:
            text = "0 (CPU only)"
        elif value > self._max_layers:
            text = "all layers"
        else:
            text = f"{value} of {self._max_layers}"
        self.gpu_label.setText(text)

    def _auto_changed(self, auto: bool) -> None:
        self.gpu_slider.setEnabled(not auto)
        self.gpu_label.setEnabled(not auto)
        self.cpu_moe.setEnabled(not auto)
        self._update_gpu_note()

    def _update_gpu_note(self) -> None:
        note = self._slider_note
        if self.gpu_auto.isChecked():
            note = ("GPU layers and expert layers in RAM are planned at each load from the model "
                    "file and this machine's free memory; the plan is shown when the model loads.")
        self.gpu_note.setText(note)
        self.gpu_note.setVisible(bool(note))

    def _kv_enabled(self, flash: bool) -> None:
        self.kv_type.setEnabled(flash)
        if not flash:
            self.kv_type.setCurrentText("f16")
