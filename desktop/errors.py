"""The one path every problem takes to the user: log it, then show it (qutebrowser's message sink).

:class:`ErrorSink` receives errors from anywhere (any thread): known ones (a
:class:`~mixtral_desk.core.errors.DeskError`, whose text is a sentence fit to show) are logged
without a traceback and shown kindly; anything else is a bug, logged with its traceback and shown
with the details. :func:`install_excepthooks` routes uncaught exceptions of every thread here.
:func:`setup_logging` writes the rotating log file in the data folder.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from PySide6.QtCore import QObject, Signal

from mixtral_desk.core.errors import DeskError
from mixtral_desk.core.i18n import tr

from .signals import emit

log = logging.getLogger("mixtral_desk.desktop")

Level = Literal["info", "warning", "error"]
LOG_BYTES = 1_000_000
LOG_BACKUPS = 3


@dataclass(frozen=True)
class Action:
    """A button on a notification: its label and what it does (runs on the GUI thread)."""

    label: str
    run: Callable[[], None]


@dataclass(frozen=True)
class Notice:
    """One thing to tell the user. ``details``: a traceback or log lines, behind "Details…"."""

    text: str
    level: Level = "error"
    details: str | None = None
    actions: tuple[Action, ...] = field(default=())
    timeout_ms: int | None = None


class ErrorSink(QObject):
    """Logs and forwards everything the user must see; safe to call from any thread.

    Signals:
        notice(Notice): a message to show; delivered on the GUI thread (queued when emitted
            from a worker).
    """

    notice = Signal(object)

    def report(self, error: BaseException, context: str | None = None,
               actions: tuple[Action, ...] = ()) -> Notice:
        """Log ``error`` and show it: a :class:`DeskError` is a known problem, the rest bugs.

        ``context`` says what was being done, as a translated phrase that fits
        "Something went wrong {context}" (``tr("while reading the settings")``).
        """
        if isinstance(error, DeskError):
            log.warning("%s%s", f"{context}: " if context else "", error.english)  # logs: English
            text, details = str(error), None
        else:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            log.error("Unexpected error%s:\n%s", f" ({context})" if context else "", trace)
            if context:
                text = tr("Something went wrong {context}: {error_type}: {error}. This is a bug; "
                          "the details are in the log.", context=context,
                          error_type=type(error).__name__, error=error)
            else:
                text = tr("Something went wrong: {error_type}: {error}. This is a bug; the "
                          "details are in the log.", error_type=type(error).__name__,
                          error=error)
            details = trace
        item = Notice(text=text, level="error", details=details, actions=actions)
        emit(self.notice, item)
        return item

    def inform(self, text: str, *, level: Level = "info", actions: tuple[Action, ...] = (),
               timeout_ms: int | None = 6000, details: str | None = None) -> Notice:
        """Show a message that is not an error (``timeout_ms`` None keeps it until closed)."""
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)
        item = Notice(text=text, level=level, details=details, actions=actions,
                      timeout_ms=timeout_ms)
        emit(self.notice, item)
        return item


def setup_logging(log_file: Path) -> logging.Handler | None:
    """Send the app's log records to a rotating file (1 MB × 3); ``None`` if it cannot be opened."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8", delay=True)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mixtral_desk")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def install_excepthooks(sink: ErrorSink) -> Callable[[], None]:
    """Route uncaught exceptions of the main thread and of every other thread to ``sink``.

    Returns a function that puts the previous hooks back.
    """
    old_sys, old_threading = sys.excepthook, threading.excepthook

    def on_exception(kind: type[BaseException], value: BaseException,
                     trace: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            old_sys(kind, value, trace)
            return
        sink.report(value.with_traceback(trace))

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            if args.thread is not None:
                context = tr("in the thread {name}", name=args.thread.name)
            else:
                context = tr("in a worker thread")
            sink.report(args.exc_value, context)

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception

    def restore() -> None:
        sys.excepthook, threading.excepthook = old_sys, old_threading

    return restore
