"""Convert in the window: a Mixtral file from before April 2024 becomes one llama.cpp loads.

When a load is refused with :class:`~mixtral_desk.core.errors.PerExpertModelError`, the error
notice carries a **Convert** button (:meth:`ExpertMergeController.actions_for`). The conversion
(:func:`mixtral_desk.core.gguf.merge_experts.merge_experts`) runs on its own queue, shows its
progress in the notification bar with a **Stop** button, and loads the new file when it is done.
A conversion made earlier is loaded at once instead of written again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from mixtral_desk.core.errors import PerExpertModelError
from mixtral_desk.core.gguf.merge_experts import MergeCancelledError, merge_experts, merged_path
from mixtral_desk.core.i18n import tr
from mixtral_desk.core.units import format_bytes

from ..bridge.tasks import TaskQueue
from ..errors import Action, ErrorSink
from ..signals import emit

PROGRESS_STEP = 5  # percent between two progress notices


class ExpertMergeController(QObject):
    """Runs one conversion at a time in the background; ``load(path)`` loads the result.

    Signals:
        progress(object, object): bytes copied and bytes in all (emitted on the worker thread,
            delivered queued on the GUI thread); Python ints, as a file passes 2 GiB.
        converted(object): the :class:`~pathlib.Path` of the new file, once it is complete.
    """

    progress = Signal(object, object)
    converted = Signal(object)

    def __init__(self, sink: ErrorSink, load: Callable[[Path], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sink, self._load = sink, load
        self.tasks = TaskQueue("convert", on_error=self._failed, parent=self)
        self._stop = threading.Event()
        self._source: Path | None = None
        self._shown = -1
        self.progress.connect(self._show_progress)

    @property
    def running(self) -> bool:
        """Whether a conversion is under way."""
        return self._source is not None

    def actions_for(self, error: BaseException) -> tuple[Action, ...]:
        """The buttons for a load error: **Convert** for a file with one tensor per expert."""
        if isinstance(error, PerExpertModelError):
            path = error.path
            return (Action(tr("Convert"), lambda: self.convert(path)),)
        return ()

    def convert(self, source: Path) -> None:
        """Convert ``source`` in the background, then load the new file (an earlier conversion
        found beside it is loaded at once)."""
        if self._source is not None:
            self.sink.inform(tr("A conversion is already running."), level="warning")
            return
        target = merged_path(source)
        if target.is_file():
            self.sink.inform(tr("{name} was converted before; loading {new}.", name=source.name,
                                new=target.name))
            self._load(target)
            return
        self._stop.clear()
        self._source, self._shown = source, -1
        self.sink.inform(tr("Converting {name}…", name=source.name), timeout_ms=None,
                         actions=(Action(tr("Stop"), self.stop),))
        self.tasks.submit(lambda: merge_experts(source, target, on_progress=self._report,
                                                should_stop=self._stop.is_set),
                          self._done, self._failed)

    def stop(self) -> None:
        """Stop the conversion; its partial file is removed."""
        self._stop.set()

    def close(self) -> None:
        """The window closes: stop a conversion and end the queue."""
        self._stop.set()
        self.tasks.close()

    def _report(self, done: int, total: int) -> None:  # on the worker thread
        percent = done * 100 // max(total, 1)
        if percent // PROGRESS_STEP != self._shown // PROGRESS_STEP:
            self._shown = percent
            emit(self.progress, done, total)

    def _show_progress(self, done: int, total: int) -> None:
        if self._source is None:
            return
        self.sink.inform(tr("Converting {name}: {percent} % of {total}…", name=self._source.name,
                            percent=done * 100 // max(total, 1), total=format_bytes(total)),
                         timeout_ms=None, actions=(Action(tr("Stop"), self.stop),))

    def _done(self, target: Path) -> None:
        source, self._source = self._source, None
        self.sink.inform(tr("Converted {name} into {new}; loading it. The original file is kept: "
                            "delete it once the new one works.",
                            name=source.name if source else "", new=target.name),
                         timeout_ms=None)
        emit(self.converted, target)
        self._load(target)

    def _failed(self, error: BaseException) -> None:
        self._source = None
        if isinstance(error, MergeCancelledError):
            self.sink.inform(tr("The conversion was stopped; nothing was written."))
        else:
            self.sink.report(error, tr("while converting the model"))
