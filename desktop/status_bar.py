"""The status bar: backend (CPU / CUDA / Metal), layers on the GPU, memory in use, last tok/s,
the API server's address, and a quiet note when the app is offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from mixtral_desk.core.i18n import ntr, tr
from mixtral_desk.core.units import format_memory

from .i18n import keep_translated

if TYPE_CHECKING:
    from mixtral_desk.core.chat import TurnResult
    from mixtral_desk.core.engine import ModelInfo

#: The states :meth:`StatusBar.show_network` takes.
NETWORK_STATES = ("online", "offline", "unreachable")


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

    Every text is rendered from the state the window last gave (:meth:`show_model`,
    :meth:`show_memory`, …), so a language switch re-renders it.

    Signals: none.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._info: ModelInfo | None = None
        self._n_cpu_moe = 0
        self._backend: str | None = None
        self._rss: int | None = None
        self._rate: float | None = None
        self._url: str | None = None
        self._network = "online"
        self.network_label = QLabel()
        self.network_label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.network_label.hide()
        self.backend_label = QLabel()
        self.layers_label = QLabel()
        self.memory_label = QLabel()
        self.speed_label = QLabel()
        self.api_label = QLabel()
        self.api_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.api_label.hide()
        for label in (self.network_label, self.backend_label, self.layers_label,
                      self.memory_label, self.speed_label, self.api_label):
            label.setContentsMargins(8, 0, 8, 0)
            self.addPermanentWidget(label)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Render every text from the stored state, in the current language."""
        self.setAccessibleName(tr("Status bar"))
        self.backend_label.setToolTip(tr("Which llama.cpp backend runs the model"))
        self.memory_label.setToolTip(tr("Memory used by the engine process"))
        self.speed_label.setToolTip(tr("Decoding speed of the last reply"))
        self._render_model()
        self._render_memory()
        self._render_speed()
        self._render_api()
        self._render_network()

    # --- the model -------------------------------------------------------------------------------

    def show_model(self, info: ModelInfo, n_cpu_moe: int = 0) -> None:
        """A model was loaded; ``n_cpu_moe`` layers were asked to keep their experts in RAM
        (shown when llama.cpp's log confirms expert tensors were kept there)."""
        self._info, self._n_cpu_moe = info, n_cpu_moe
        self._backend = info.backend.backends[0] if info.backend.backends else "CPU"
        self._render_model()

    def clear_model(self) -> None:
        """No model is loaded."""
        self._info = None
        self._rss = None
        self._render_model()
        self._render_memory()

    def _render_model(self) -> None:
        if self._backend is None:
            self.backend_label.setText(tr("Backend: —"))
        else:
            self.backend_label.setText(tr("Backend: {backend}", backend=self._backend))
        info = self._info
        if info is None:
            self.layers_label.setText(tr("No model loaded"))
            self.layers_label.setToolTip("")
            return
        # llama.cpp counts the output layer too ("offloaded 33/33 layers" for Mixtral's 32 blocks)
        values = {"model": Path(info.path).stem, "gpu": info.n_gpu_layers,
                  "total": info.n_layers + 1}
        experts = min(self._n_cpu_moe, info.n_layers)
        if experts > 0 and info.overridden_tensors > 0:
            text = ntr("{model} · {gpu}/{total} layers on GPU, experts of {count} layer in RAM",
                       "{model} · {gpu}/{total} layers on GPU, experts of {count} layers in RAM",
                       experts, **values)
        else:
            text = tr("{model} · {gpu}/{total} layers on GPU", **values)
        self.layers_label.setText(text)
        self.layers_label.setToolTip(
            ntr("{count} expert tensor kept in RAM", "{count} expert tensors kept in RAM",
                info.overridden_tensors) if info.overridden_tensors else "")

    # --- memory, speed ---------------------------------------------------------------------------

    def show_memory(self, rss: int | None) -> None:
        """The engine's resident memory (None: not running)."""
        self._rss = rss
        self._render_memory()

    def _render_memory(self) -> None:
        self.memory_label.setText(tr("Memory: {memory}", memory=format_memory(self._rss))
                                  if self._rss else "")

    def show_reply(self, result: TurnResult) -> None:
        """A reply finished: show its decoding speed."""
        if result.stats is not None and result.stats.decode_tokens_per_s:
            self._rate = result.stats.decode_tokens_per_s
            self._render_speed()

    def _render_speed(self) -> None:
        rate = f"{self._rate:.1f}" if self._rate else ""
        self.speed_label.setText(tr("Last reply: {rate} tok/s", rate=rate) if rate else "")

    # --- the API server --------------------------------------------------------------------------

    def show_api(self, url: str | None) -> None:
        """The API server's base URL while it serves (``None``: it does not)."""
        self._url = url
        self._render_api()

    def _render_api(self) -> None:
        url = self._url
        self.api_label.setText(tr("API: {url}", url=url) if url else "")
        self.api_label.setToolTip(
            tr("OpenAI-compatible API of the loaded model; clients use the base URL {url}",
               url=url) if url else "")
        self.api_label.setVisible(bool(url))

    # --- the network -----------------------------------------------------------------------------

    def show_network(self, state: str) -> None:
        """How the app stands with the internet: ``online`` (nothing shown), ``offline``
        (offline mode is on) or ``unreachable`` (the Hugging Face Hub could not be reached).

        Raises:
            ValueError: ``state`` is none of these.
        """
        if state not in NETWORK_STATES:
            raise ValueError(f"unknown network state {state!r}")
        self._network = state
        self._render_network()

    @property
    def network(self) -> str:
        """The network state shown (see :meth:`show_network`)."""
        return self._network

    def _render_network(self) -> None:
        label = self.network_label
        if self._network == "offline":
            label.setText(tr("Offline"))
            label.setAccessibleName(tr("Offline mode is on"))
            label.setToolTip(tr("Offline mode is on: nothing is downloaded and the Hugging Face "
                                "Hub is not contacted. Local models and chats work as usual."))
        elif self._network == "unreachable":
            label.setText(tr("Hub unreachable"))
            label.setAccessibleName(tr("The Hugging Face Hub cannot be reached"))
            label.setToolTip(tr("The Hugging Face Hub could not be reached. Local models and "
                                "chats work as usual; downloads wait until it can be reached."))
        else:
            label.setText("")
            label.setAccessibleName("")
            label.setToolTip("")
        label.setAccessibleDescription(label.toolTip())
        label.setVisible(self._network != "online")
