"""Downloads: resumable, verified, sharded GGUF downloads from the Hub, and local models.

Modules: :mod:`.manager` (``DownloadManager``: the queue and its controls), :mod:`.events` (what
listeners receive), :mod:`.transfer` (the Range-request loop), :mod:`.hub` (metadata and typed
Hub errors), :mod:`.jobs` (durable job records), :mod:`.local` (import, list, delete, HF cache
scan), :mod:`.naming` (split and piece names), :mod:`.errors`.

Only the errors are imported here: the other modules import huggingface_hub, which costs half a
second, so the CLI imports them when a download command runs.
"""

from __future__ import annotations

from .errors import (
    DiskFullError,
    DownloadError,
    HubAccessError,
    HubOfflineError,
    HubUnavailableError,
    HubUnreachableError,
    InsufficientSpaceError,
    InvalidTokenError,
    JobNotFoundError,
    JobStateError,
    LicenceNotAcceptedError,
    LocalModelNotFoundError,
    NetworkError,
    RemoteFileNotFoundError,
    RepoNotFoundError,
    RevisionNotFoundError,
    TokenAccessError,
    TokenRequiredError,
    VerificationError,
)

__all__ = [
    "DiskFullError", "DownloadError", "HubAccessError", "HubOfflineError", "HubUnavailableError",
    "HubUnreachableError",
    "InsufficientSpaceError", "InvalidTokenError", "JobNotFoundError", "JobStateError",
    "LicenceNotAcceptedError", "LocalModelNotFoundError", "NetworkError",
    "RemoteFileNotFoundError", "RepoNotFoundError", "RevisionNotFoundError", "TokenAccessError",
    "TokenRequiredError", "VerificationError",
]
