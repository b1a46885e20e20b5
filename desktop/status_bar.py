"""The status bar: backend (CPU / CUDA / Metal), layers on the GPU, memory in use, last tok/s."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from mixtral_desk.core.units import format_memory

if TYPE_CHECKING:
    from mixtral_desk.core.chat import TurnResult
    from mixtral_desk.core.engine import ModelInfo


def engine_memory(pid: int | None) -> int | None:
    """Resident memory of the engine process in bytes (None when it does not run).

    Reads /proc (or the OS's equivalent): call it on a worker thread.
    """
    if pid is None:
        return None
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


class StatusBar(QStatusBar):
    """Permanent figures about the engine; the window feeds them.

    Signals: none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.backend_label = QLabel("Backend: —")
        self.backend_label.setToolTip("Which llama.cpp backend runs the model")
        self.layers_label = QLabel("No model loaded")
        self.memory_label = QLabel("")
        self.memory_label.setToolTip("Memory used by the engine process")
        self.speed_label = QLabel("")
        self.speed_label.setToolTip("Decoding speed of the last reply")
        self.api_label = QLabel("")
        self.api_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.api_label.hide()
        for label in (self.backend_label, self.layers_label, self.memory_label,
                      self.speed_label, self.api_label):
            label.setContentsMargins(8, 0, 8, 0)
            self.addPermanentWidget(label)

    def show_model(self, info: ModelInfo, n_cpu_moe: int = 0) -> None:
        """A model was loaded; ``n_cpu_moe`` layers were asked to keep their experts in RAM
        (shown when llama.cpp's log confirms expert tensors were kept there)."""
        backend = info.backend.backends[0] if info.backend.backends else "CPU"
        self.backend_label.setText(f"Backend: {backend}")
        # llama.cpp counts the output layer too ("offloaded 33/33 layers" for Mixtral's 32 blocks)
        text = f"{Path(info.path).stem} · {info.n_gpu_layers}/{info.n_layers + 1} layers on GPU"
        experts = min(n_cpu_moe, info.n_layers)
        if experts > 0 and info.overridden_tensors > 0:
            text += f", experts of {experts} layer{'s' if experts > 1 else ''} in RAM"
        self.layers_label.setText(text)
        self.layers_label.setToolTip(
            f"{info.overridden_tensors} expert tensors kept in RAM" if info.overridden_tensors
            else "")

    def clear_model(self) -> None:
        """No model is loaded."""
        self.layers_label.setText("No model loaded")
        self.memory_label.setText("")

    def show_api(self, url: str | None) -> None:
        """The API server's base URL while it serves (``None``: it does not)."""
        self.api_label.setText(f"API: {url}" if url else "")
        self.api_label.setToolTip(
            f"OpenAI-compatible API of the loaded model; clients use the base URL {url}"
            if url else "")
        self.api_label.setVisible(bool(url))

    def show_reply(self, result: TurnResult) -> None:
        """A reply finished: show its decoding speed."""
        if result.stats is not None and result.stats.decode_tokens_per_s:
            self.speed_label.setText(f"Last reply: {result.stats.decode_tokens_per_s:.1f} tok/s")

    def show_memory(self, rss: int | None) -> None:
        """The engine's resident memory (None: not running)."""
        self.memory_label.setText(f"Memory: {format_memory(rss)}" if rss else "")
