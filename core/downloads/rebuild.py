"""A damaged download list (``downloads.sqlite3``) set aside and rebuilt from the files on disk.

The list is only bookkeeping: the bytes on disk are the truth. Finished models are found through
their ``model.json`` manifests (core/downloads/local.py), whatever the list says, so none is lost.
Partial data keeps a sidecar ``<name>.part.json`` naming its repository, file, size and sha256
(core/downloads/transfer.py): each folder of such parts becomes a paused job again, and resuming
it continues from the bytes on disk. The damaged file is moved aside
(``downloads.sqlite3.damaged-<time>``), never deleted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..store.damage import means_damage, set_aside
from .errors import DownloadError
from .jobs import JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildReport:
    """What :func:`open_job_store` did: where the damaged list is kept, the jobs made again."""

    kept_at: Path
    jobs: list[str]


def _parts_by_folder(models_dir: Path) -> dict[Path, tuple[str, list[str]]]:
    """Folder → (repository, remote paths) for every ``.part`` with a readable sidecar."""
    found: dict[Path, tuple[str, list[str]]] = {}
    for sidecar in sorted(models_dir.glob("*/*.part.json")):
        try:
            identity = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(identity, dict):
            continue
        repo, remote = identity.get("repo"), identity.get("path")
        if not isinstance(repo, str) or not isinstance(remote, str):
            continue
        folder = sidecar.parent
        if folder not in found:
            found[folder] = (repo, [])
        if found[folder][0] == repo:
            found[folder][1].append(remote)
    return found


def rebuild_jobs(store: JobStore, models_dir: Path) -> list[str]:
    """Add a paused job for each folder of partial downloads; return the new job ids."""
    made = []
    for folder, (repo, files) in _parts_by_folder(models_dir).items():
        job = store.create(model_id=folder.name, repo_id=repo, revision=None, requested=files,
                           dest_dir=folder, endpoint=None)
        store.update(job.id, state="paused")
        made.append(job.id)
    return made


def open_job_store(path: Path, models_dir: Path) -> tuple[JobStore, RebuildReport | None]:
    """The download list at ``path``; a damaged one is set aside and rebuilt first.

    Raises:
        DownloadError: the list cannot be opened for another reason (a newer version wrote it,
            a read-only folder).
        StoreError: the damaged file cannot be moved aside.
    """
    if not path.is_dir():
        try:
            store = JobStore(path)
        except DownloadError as error:
            cause = error.__cause__
            if not (isinstance(cause, sqlite3.Error) and means_damage(cause)):
                raise
        else:
            if not store.check():
                return store, None
            store.close()
    kept = set_aside(path)
    log.warning("The download list %s was damaged; it was moved to %s and rebuilt from the "
                "files on disk", path, kept)
    store = JobStore(path)
    return store, RebuildReport(kept, rebuild_jobs(store, models_dir))
