"""The downloads list: one row per job with progress, speed, ETA, stalled state and its buttons."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from mixtral_desk.core.units import format_bytes

from ..signals import emit

if TYPE_CHECKING:
    from mixtral_desk.core.downloads.events import JobProgress
    from mixtral_desk.core.downloads.jobs import Job

STATE_TEXT = {"queued": "Waiting", "running": "Downloading", "paused": "Paused",
              "completed": "Done", "failed": "Failed", "cancelled": "Cancelled",
              "interrupted": "Interrupted"}


def format_eta(seconds: float | None) -> str:
    """``3 min left``-style text ('' when unknown)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s left"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min left"
    return f"{seconds / 3600:.1f} h left"


class DownloadRow(QFrame):
    """One job.

    Signals:
        pause_requested(str), resume_requested(str), cancel_requested(str): the job id.
        load_requested(str): load the finished model (its path).
    """

    pause_requested = Signal(str)
    resume_requested = Signal(str)
    cancel_requested = Signal(str)
    load_requested = Signal(str)

    def __init__(self, job: Job, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job_id = job.id
        self.path: str | None = None
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.name = QLabel(f"<b>{escape(title)}</b>")
        self.name.setToolTip(f"{job.repo_id}: {', '.join(job.requested)}")
        self.state = QLabel()
        top.addWidget(self.name, 1)
        top.addWidget(self.state)
        layout.addLayout(top)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        layout.addWidget(self.bar)
        bottom = QHBoxLayout()
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bottom.addWidget(self.detail, 1)
        self.pause_button = QPushButton("Pause")
        self.resume_button = QPushButton("Resume")
        self.cancel_button = QPushButton("Cancel")
        self.load_button = QPushButton("Load")
        for button in (self.pause_button, self.resume_button, self.cancel_button,
                       self.load_button):
            bottom.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(bottom)
        self.pause_button.clicked.connect(lambda: emit(self.pause_requested, self.job_id))
        self.resume_button.clicked.connect(lambda: emit(self.resume_requested, self.job_id))
        self.cancel_button.clicked.connect(lambda: emit(self.cancel_requested, self.job_id))
        self.load_button.clicked.connect(lambda: self.path and emit(self.load_requested, self.path))
        self.update_job(job)

    def update_job(self, job: Job) -> None:
        """Show the job's stored state (after a state change or a refresh)."""
        state = job.display_state
        self.state.setText(STATE_TEXT.get(state, state))
        self._set_bar(job.done, job.total, busy=state in ("queued", "running"))
        if state == "failed":
            self.detail.setText(f"⚠ {job.error or 'The download failed.'}")
            self.resume_button.setText("Retry")
        elif state == "paused" and job.error:
            self.detail.setText(f"Paused: {job.error}")
            self.resume_button.setText("Resume")
        else:
            self.detail.setText(self._bytes_text(job.done, job.total))
            self.resume_button.setText("Resume")
        if state == "completed" and job.files:
            self.path = str(job.dest_dir / job.files[0].path)
        self.pause_button.setVisible(state in ("queued", "running"))
        self.resume_button.setVisible(state in ("paused", "failed", "interrupted"))
        self.cancel_button.setVisible(state not in ("completed", "cancelled"))
        self.load_button.setVisible(state == "completed" and self.path is not None)

    def update_progress(self, progress: JobProgress) -> None:
        """Show live progress: bytes, speed, ETA, stalled."""
        self._set_bar(progress.done, progress.total)
        parts = [self._bytes_text(progress.done, progress.total)]
        if progress.phase == "checking":
            parts.append("checking the bytes already here…")
        elif progress.stalled:
            parts.append("⚠ stalled — no data for a while; reconnecting")
        elif progress.speed_bps > 0:
            parts.append(f"{format_bytes(progress.speed_bps)}/s")
            parts.append(format_eta(progress.eta_s))
        self.detail.setText(" · ".join(p for p in parts if p))
        self.state.setText("Stalled" if progress.stalled else "Downloading")

    def _set_bar(self, done: int, total: int | None, busy: bool = True) -> None:
        if total or not busy:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * done / total) if total else 0)
        else:
            self.bar.setRange(0, 0)  # busy until the size is known

    @staticmethod
    def _bytes_text(done: int, total: int | None) -> str:
        if total:
            return f"{format_bytes(done)} of {format_bytes(total)} ({100 * done / total:.0f} %)"
        return f"{format_bytes(done)}" if done else "Waiting for the Hub…"
