"""What the Hub says about files, through huggingface_hub: commit, sizes, sha256, redirect URLs.

Every call names the endpoint explicitly (the user's mirror setting, else ``HF_ENDPOINT`` at call
time, else huggingface.co) and the token explicitly (``token=False`` when there is none, so
huggingface_hub never picks one up behind our back). Errors become the typed errors of
:mod:`.errors` with distinct messages: licence not accepted (with the repo URL), no token, bad
token, token without access, repo / file / revision not found, Hub unreachable or offline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFoundError
from huggingface_hub.utils._headers import build_hf_headers

from .errors import (
    DownloadError,
    HubUnavailableError,
    InvalidTokenError,
    LicenceNotAcceptedError,
    RemoteFileNotFoundError,
    RepoNotFoundError,
    RevisionNotFoundError,
    TokenAccessError,
    TokenRequiredError,
)
from .naming import expand_files

DEFAULT_ENDPOINT = "https://huggingface.co"
METADATA_TIMEOUT_S = 20.0


def default_endpoint() -> str:
    """``HF_ENDPOINT`` as it is now (not as it was when huggingface_hub was imported)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class RemoteFileInfo:
    """One file of a repository at a commit. ``sha256`` is None for a non-LFS file."""

    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class ResolvedFiles:
    """The files of one job, pinned to a commit."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFileInfo, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class FileLocation:
    """Where the bytes of one file are now (a signed URL that may expire) and how to ask."""

    url: str
    headers: dict[str, str]
    size: int | None
    sha256: str | None


class HubClient:
    """Metadata calls for one endpoint and one token (or none).

    ``token=None`` uses the token stored by ``hf auth login`` / ``HF_TOKEN``
    (``huggingface_hub.get_token``) when ``use_stored_token`` is true. The token is only sent to
    the endpoint's own origin, never to a CDN it redirects to, and never logged.
    """

    def __init__(self, endpoint: str | None = None, token: str | None = None, *,
                 use_stored_token: bool = True) -> None:
        self.endpoint = (endpoint or default_endpoint()).rstrip("/")
        self._token = token or (get_token() if use_stored_token else None)
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False)

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def repo_url(self, repo_id: str) -> str:
        """The repository's page (where a gated licence is accepted)."""
        return f"{self.endpoint}/{repo_id}"

    def resolve(self, repo_id: str, files: Sequence[str], revision: str | None = None,
                ) -> ResolvedFiles:
        """Pin ``revision`` (default ``main``) to a commit and get each file's size and sha256.

        Any part of a split model brings all its parts. The first file's download URL is asked
        for too, so a gated repository fails here, before anything is written.

        Raises:
            RepoNotFoundError, RevisionNotFoundError, RemoteFileNotFoundError,
            LicenceNotAcceptedError, TokenRequiredError, InvalidTokenError, TokenAccessError,
            HubUnavailableError: as their names say; each message names the repository.
        """
        rev = revision or constants.DEFAULT_REVISION
        try:
            info = self._api.model_info(repo_id, revision=rev, files_metadata=True,
                                        token=self._token or False, timeout=METADATA_TIMEOUT_S)
        except Exception as error:
            raise self.map_error(error, repo_id, revision=rev) from error
        if not info.sha:
            raise HubUnavailableError(f"{self.endpoint} gave no commit for {repo_id}@{rev}.")
        siblings = {s.rfilename: s for s in info.siblings or []}
        wanted = expand_files(files, list(siblings), repo_id)
        out: list[RemoteFileInfo] = []
        for path in wanted:
            sib = siblings[path]
            sha = sib.lfs.sha256 if sib.lfs is not None else None
            size = sib.lfs.size if sib.lfs is not None else sib.size
            if size is None or sha is None:
                where = self.locate(repo_id, info.sha, path)
                size = size if size is not None else where.size
                sha = sha or where.sha256
            if size is None:
                raise HubUnavailableError(f"{self.endpoint} did not say how large {path} is.")
            out.append(RemoteFileInfo(path, size, sha))
        if out:
            self.locate(repo_id, info.sha, out[0].path)
        return ResolvedFiles(repo_id, rev, info.sha, tuple(out))

    def locate(self, repo_id: str, commit: str, path: str) -> FileLocation:
        """Ask again where ``path`` is (the signed URL of a CDN expires; call on every resume).

        Raises:
            the same errors as :meth:`resolve`.
        """
        url = hf_hub_url(repo_id, path, revision=commit, endpoint=self.endpoint)
        try:
            meta = get_hf_file_metadata(url, token=self._token or False,
                                        timeout=METADATA_TIMEOUT_S, endpoint=self.endpoint,
                                        retry_on_errors=True)
        except Exception as error:
            raise self.map_error(error, repo_id, revision=commit, filename=path) from error
        target = urljoin(url, meta.location)
        same_origin = _origin(target) == _origin(self.endpoint)
        headers = build_hf_headers(token=self._token if same_origin and self._token else False)
        headers["Accept-Encoding"] = "identity"
        sha = meta.etag if meta.etag and len(meta.etag) == 64 else None
        return FileLocation(target, headers, meta.size, sha)

    def map_error(self, error: Exception, repo_id: str, *, revision: str | None = None,
                  filename: str | None = None) -> Exception:
        """Our typed error for an exception from huggingface_hub or httpx2 (others unchanged)."""
        page = self.repo_url(repo_id)
        if isinstance(error, DownloadError):
            return error
        if isinstance(error, GatedRepoError):
            if not self._token:
                return TokenRequiredError(
                    f"{repo_id} is a gated model: it needs a Hugging Face token. Sign in "
                    f"(`hf auth login`, or in Settings) and accept its licence at {page}.",
                    repo_id, page)
            return LicenceNotAcceptedError(
                f"You have not accepted the licence of {repo_id} with this account yet (or your "
                f"request is still pending). Open {page}, accept it, then try again.",
                repo_id, page)
        if isinstance(error, HfRevisionNotFoundError):
            return RevisionNotFoundError(
                f"Revision {revision!r} does not exist in {repo_id} (check the branch, tag or "
                "commit).")
        if isinstance(error, EntryNotFoundError):
            return RemoteFileNotFoundError(
                f"File {filename!r} is not in {repo_id} at revision {revision!r}.")
        if isinstance(error, RepositoryNotFoundError):
            hint = ("" if self._token else
                    " If it is private, sign in with a Hugging Face token that can read it.")
            return RepoNotFoundError(f"Repository {repo_id} was not found on {self.endpoint}."
                                     f"{hint}")
        if isinstance(error, OfflineModeIsEnabled):
            return HubUnavailableError(
                "Offline mode is on (HF_HUB_OFFLINE=1): downloads need it turned off.")
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            status = error.response.status_code
            if status == 401:
                return InvalidTokenError(
                    f"The Hub rejected your Hugging Face token while opening {repo_id}: it is "
                    "invalid, expired or revoked. Sign in again with a new token.", repo_id, page)
            if status == 403:
                return TokenAccessError(
                    f"Your Hugging Face token does not grant access to {repo_id} (a fine-grained "
                    "token needs read access to public gated repos, or to this repo).",
                    repo_id, page)
            return HubUnavailableError(
                f"{self.endpoint} answered {status} for {repo_id}; try again later.")
        if isinstance(error, httpx2.TransportError | OSError):
            return HubUnavailableError(f"Cannot reach {self.endpoint}: {error}")
        return error


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port
