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

from mixtral_desk.core.i18n import N_, tr
from mixtral_desk.core.units import format_bytes

from ..i18n import keep_translated
from ..signals import emit

if TYPE_CHECKING:
    from mixtral_desk.core.downloads.events import JobProgress
    from mixtral_desk.core.downloads.jobs import Job

STATE_TEXT = {"queued": N_("Queued"), "running": N_("Downloading"), "paused": N_("Paused"),
              "completed": N_("Done"), "failed": N_("Failed"), "cancelled": N_("Cancelled"),
              "interrupted": N_("Interrupted")}
#: What a running job shows while it is not transferring bytes (by its progress phase).
PHASE_TEXT = {"checking": N_("Verifying"), "joining": N_("Finishing")}
OFFLINE_RESUME = N_("Offline mode is on: resuming a download needs the network. Turn it off in "
                    "Settings to go on.")


def format_eta(seconds: float | None) -> str:
    """``3 min left``-style text ('' when unknown)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return tr("{seconds} s left", seconds=round(seconds))
    if seconds < 3600:
        return tr("{minutes} min left", minutes=round(seconds / 60))
    hours = f"{seconds / 3600:.1f}"
    return tr("{hours} h left", hours=hours)


class DownloadRow(QFrame):
    """One job. Its buttons are ordinary push buttons: Tab reaches them, Space presses them.

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
        self.title = title
        self.path: str | None = None
        self.offline = False
        self._job = job
        self._progress: JobProgress | None = None
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
        self.pause_button = QPushButton()
        self.resume_button = QPushButton()
        self.cancel_button = QPushButton()
        self.load_button = QPushButton()
        for button in (self.pause_button, self.resume_button, self.cancel_button,
                       self.load_button):
            button.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # Tab reaches them on macOS too
            bottom.addWidget(button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(bottom)
        self.pause_button.clicked.connect(lambda: emit(self.pause_requested, self.job_id))
        self.resume_button.clicked.connect(lambda: emit(self.resume_requested, self.job_id))
        self.cancel_button.clicked.connect(lambda: emit(self.cancel_requested, self.job_id))
        self.load_button.clicked.connect(lambda: self.path and emit(self.load_requested, self.path))
        self.update_job(job)
        keep_translated(self.retranslate)

    def retranslate(self) -> None:
        """Set every text in the current language, from the stored job and progress."""
        self.pause_button.setText(tr("Pause"))
        self.cancel_button.setText(tr("Cancel"))
        self.load_button.setText(tr("Load"))
        self.pause_button.setAccessibleName(tr("Pause {model}", model=self.title))
        self.cancel_button.setAccessibleName(tr("Cancel downloading {model}", model=self.title))
        self.load_button.setAccessibleName(tr("Load {model}", model=self.title))
        self.bar.setAccessibleName(tr("Download progress of {model}", model=self.title))
        self._render()

    def set_offline(self, offline: bool) -> None:
        """Disable Resume/Retry (saying why) while Offline mode is on; Pause and Cancel stay."""
        self.offline = offline
        self._render()

    def update_job(self, job: Job) -> None:
        """Show the job's stored state (after a state change or a refresh)."""
        self._job = job
        self._progress = None
        if job.display_state == "completed" and job.files:
            self.path = str(job.dest_dir / job.files[0].path)
        self._render()

    def update_progress(self, progress: JobProgress) -> None:
        """Show live progress: bytes, speed, ETA, stalled."""
        self._progress = progress
        self._render()

    def _render(self) -> None:
        job, progress = self._job, self._progress
        state = job.display_state
        failed = state == "failed"
        self.resume_button.setText(tr("Retry") if failed else tr("Resume"))
        self.resume_button.setAccessibleName(
            tr("Retry downloading {model}", model=self.title) if failed
            else tr("Resume downloading {model}", model=self.title))
        self.resume_button.setEnabled(not self.offline)
        self.resume_button.setToolTip(tr(OFFLINE_RESUME) if self.offline else "")
        self.pause_button.setVisible(state in ("queued", "running"))
        self.resume_button.setVisible(state in ("paused", "failed", "interrupted"))
        self.cancel_button.setVisible(state not in ("completed", "cancelled"))
        self.load_button.setVisible(state == "completed" and self.path is not None)
        if progress is not None:
            self._render_progress(progress)
            return
        label = STATE_TEXT.get(state)
        self.state.setText(tr(label) if label else state)
        self._set_bar(job.done, job.total, busy=state in ("queued", "running"))
        # The job's error is translated here, when shown (and again on a language switch).
        if failed:
            self.detail.setText("⚠ " + (str(job.error) if job.error is not None
                                        else tr("The download failed.")))
        elif state == "paused" and job.error is not None:
            self.detail.setText(tr("Paused: {reason}", reason=str(job.error)))
        else:
            self.detail.setText(self._bytes_text(job.done, job.total))

    def _render_progress(self, progress: JobProgress) -> None:
        self._set_bar(progress.done, progress.total)
        parts = [self._bytes_text(progress.done, progress.total)]
        if progress.phase == "checking":
            parts.append(tr("checking the bytes already here…"))
        elif progress.phase == "joining":
            parts.append(tr("joining the parts into one file…"))
        elif progress.stalled:
            parts.append(tr("⚠ stalled — no data for a while; reconnecting"))
        elif progress.speed_bps > 0:
            parts.append(f"{format_bytes(progress.speed_bps)}/s")
            parts.append(format_eta(progress.eta_s))
        self.detail.setText(" · ".join(p for p in parts if p))
        phase = PHASE_TEXT.get(progress.phase)
        if phase is not None:
            self.state.setText(tr(phase))
        else:
            self.state.setText(tr("Stalled") if progress.stalled else tr("Downloading"))

    def _set_bar(self, done: int, total: int | None, busy: bool = True) -> None:
        if total or not busy:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * done / total) if total else 0)
        else:
            self.bar.setRange(0, 0)  # busy until the size is known

    @staticmethod
    def _bytes_text(done: int, total: int | None) -> str:
        if total:
            return tr("{done} of {total} ({percent} %)", done=format_bytes(done),
                      total=format_bytes(total), percent=round(100 * done / total))
        return format_bytes(done) if done else tr("Waiting for the Hub…")
