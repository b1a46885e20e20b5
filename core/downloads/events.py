"""What the download manager tells its listener. Delivered on worker threads: a GUI must hand
them to its own thread (a Qt signal does that); the CLI draws a progress bar from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .transfer import TransferNotice

Phase = Literal["resolving", "checking", "downloading", "joining", "done"]


@dataclass(frozen=True)
class FileProgress:
    """One file (one part of a split model): bytes on disk of ``total``."""

    path: str
    done: int
    total: int | None


@dataclass(frozen=True)
class JobProgress:
    """A job's progress, sent a few times a second while it runs.

    ``done``/``total``: bytes of all parts (``total`` is None until the Hub answered).
    ``speed_bps``: bytes per second over the last few seconds (0 when nothing arrives).
    ``eta_s``: seconds left at that speed, None when unknown. ``stalled``: no byte for a few
    seconds while downloading (the watchdog reconnects after the stall timeout). ``phase`` says
    what the job does now (``checking`` = re-reading bytes on disk to resume the hash).
    """

    job_id: str
    files: tuple[FileProgress, ...]
    done: int
    total: int | None
    speed_bps: float
    eta_s: float | None
    stalled: bool
    phase: Phase


@dataclass(frozen=True)
class JobStateChanged:
    """A job changed state (``queued``, ``running``, ``paused``, ``completed``, ``failed``,
    ``cancelled``). ``path`` is the model file to open once ``completed`` (part 1 of a split
    model).

    ``error`` is the exception that made a job ``failed`` (or stopped a ``paused`` job by itself:
    network gone, disk full). A :class:`~mixtral_desk.core.errors.DeskError` (typed: test it with
    ``isinstance``) is a known problem whose ``str()`` is the message to show, translated when it
    is shown; anything else is a bug. Known errors pickle with their message, so the event may
    cross threads and processes.
    """

    job_id: str
    state: str
    error: Exception | None = None
    path: Path | None = None


@dataclass(frozen=True)
class JobNotice:
    """A transfer hiccup worth showing: retrying, stalled, restarted (see TransferNotice)."""

    job_id: str
    file: str
    notice: TransferNotice


DownloadEvent = JobProgress | JobStateChanged | JobNotice
