"""Where a job's bytes live on disk, and the file operations around them.

``<models_dir>/<model>/<name>.part`` (+ ``.part.json`` sidecar) while downloading, ``<name>`` once
verified; old-style pieces are joined into one file; cancelling removes what the job wrote.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..i18n import N_
from ..units import format_bytes
from .errors import InsufficientSpaceError
from .jobs import Job, JobFile
from .naming import joined_name, primary_file
from .transfer import remove_part

_JOIN_CHUNK = 16 * 1024 * 1024


def part_path(dest_dir: Path, remote_path: str) -> Path:
    """Where a file's partial data lives while downloading."""
    return dest_dir / (Path(remote_path).name + ".part")


def final_path(dest_dir: Path, remote_path: str) -> Path:
    """Where a file lives once verified."""
    return dest_dir / Path(remote_path).name


def check_free_space(dest_dir: Path, needed: int, margin: int, label: str) -> None:
    """Refuse to start when the disk holding ``dest_dir`` lacks ``needed`` + ``margin`` bytes.

    Raises:
        InsufficientSpaceError: with what is needed and what is free, in words.
    """
    if needed <= 0:
        return
    probe = dest_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + margin:
        raise InsufficientSpaceError(N_(
            "Not enough disk space for {name}: it needs {needed} more (plus {margin} to spare) "
            "but {folder} has only {free} free. Free some space or choose another models "
            "folder."), needed + margin, free, name=label, needed=format_bytes(needed),
            margin=format_bytes(margin), folder=probe, free=format_bytes(free))


def join_pieces(folder: Path, names: list[str]) -> str:
    """Join old-style pieces (``x.gguf.part1of2`` …) into ``x.gguf``; return the model's name.

    For anything else, return the primary file's name and touch nothing.

    Raises:
        OSError: reading or writing failed (e.g. disk full); the pieces are kept and the partly
            joined file is removed.
    """
    target = joined_name(names[0])
    if target is None:
        return primary_file(names)
    joined = folder / (target + ".part")
    try:
        with joined.open("wb") as out:
            for name in names:
                with (folder / name).open("rb") as piece:
                    shutil.copyfileobj(piece, out, _JOIN_CHUNK)
        joined.replace(folder / target)
    except BaseException:
        with contextlib.suppress(OSError):
            joined.unlink()
        raise
    for name in names:
        (folder / name).unlink()
    return target


def discard_job_files(job: Job) -> None:
    """Delete a job's partial data, and the parts it verified unless the job completed."""
    for file in job.files or [JobFile(p) for p in job.requested]:
        remove_part(part_path(job.dest_dir, file.path))
        if job.state != "completed" and file.state == "verified":
            with contextlib.suppress(FileNotFoundError):
                final_path(job.dest_dir, file.path).unlink()
    with contextlib.suppress(OSError):
        job.dest_dir.rmdir()  # only when empty
