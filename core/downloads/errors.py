"""Typed errors of downloads, Hub access and local models.

Each ``str()`` is one sentence (sometimes two) fit to show a person, and each class also inherits
the builtin it resembles, so ``except PermissionError`` or ``except FileNotFoundError`` still work.
Tokens never appear in a message.
"""

from __future__ import annotations

from ..errors import DeskError, NotFoundError, UserText
from ..network import OfflineError, UnreachableError


class DownloadError(DeskError, RuntimeError):
    """Base of every error of the download manager that is not better described below."""


# --- Hub access ----------------------------------------------------------------------------------

class HubAccessError(DownloadError, PermissionError):
    """Base of the errors that mean "the Hub refused us this repository".

    ``message``: an ``N_()``-marked text whose placeholders ``values`` fill (or a
    :class:`UserText`); ``url``: the repository's page.
    """

    def __init__(self, message: str | UserText, repo_id: str, url: str | None = None, /,
                 **values: object) -> None:
        self.repo_id = repo_id
        self.url = url
        super().__init__(message, **values)


class LicenceNotAcceptedError(HubAccessError):
    """Raised when a gated repository's licence has not been accepted with this account yet.

    ``url`` is the repository's page, where the user accepts the licence (or waits for approval).
    """


class TokenRequiredError(HubAccessError):
    """Raised when a gated or private repository needs a Hugging Face token and none is stored."""


class InvalidTokenError(HubAccessError):
    """Raised when the Hub rejects the token itself (revoked, mistyped, expired)."""


class TokenAccessError(HubAccessError):
    """Raised when the token is valid but does not grant access (e.g. a fine-grained token)."""


class RepoNotFoundError(DownloadError, FileNotFoundError):
    """Raised when the repository does not exist (or is private and this token cannot see it)."""


class RemoteFileNotFoundError(DownloadError, FileNotFoundError):
    """Raised when the repository exists but the file is not in it at that revision."""


class RevisionNotFoundError(DownloadError, LookupError):
    """Raised when the branch, tag or commit does not exist in the repository."""


class HubUnavailableError(DownloadError, ConnectionError):
    """Raised when the Hub (or mirror) cannot be reached or keeps failing after retries.

    Its subclasses tell the two cases a background caller degrades on:
    :class:`HubUnreachableError` (no connection) and :class:`HubOfflineError` (Offline mode).
    """


class HubUnreachableError(HubUnavailableError, UnreachableError):
    """Raised when no connection to the Hub (or mirror) could be made within the short timeout,
    or a metadata answer did not come in time; raised at once, never after a retry loop."""


class HubOfflineError(HubUnavailableError, OfflineError):
    """Raised at once, before any connection, when Offline mode is on (the setting,
    ``--offline`` or ``HF_HUB_OFFLINE``)."""


# --- transfer ------------------------------------------------------------------------------------

class NetworkError(DownloadError, ConnectionError):
    """Raised when a file transfer keeps failing (resets, stalls, 5xx) beyond the retry budget.

    The partial data is kept: resuming continues from the bytes on disk.
    """


class VerificationError(DownloadError, ValueError):
    """Raised when a downloaded file's size or sha256 differs from the Hub's.

    The bad data is deleted and the job is marked failed; downloading again starts fresh.
    """

    def __init__(self, message: str | UserText, filename: str, /, **values: object) -> None:
        self.filename = filename
        super().__init__(message, **values)


class InsufficientSpaceError(DownloadError, OSError):
    """Raised before a download starts when the disk has less free space than it needs."""

    def __init__(self, message: str | UserText, needed: int, free: int, /,
                 **values: object) -> None:
        self.needed = needed
        self.free = free
        super().__init__(message, **values)


class DiskFullError(DownloadError, OSError):
    """Raised when the disk fills up while writing; the job is paused, the bytes so far kept."""


class DownloadInterrupted(DownloadError):  # noqa: N818 - a control-flow signal, not a failure
    """Raised inside a transfer when the job was paused or cancelled; never shown to users."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Download {reason}.")


# --- jobs and local models -----------------------------------------------------------------------

class JobNotFoundError(NotFoundError):
    """Raised when no download job has the given id."""


class JobStateError(DownloadError, ValueError):
    """Raised for a control that does not apply (e.g. pausing a finished download)."""


class LocalModelNotFoundError(NotFoundError):
    """Raised when no local model has the given name."""
