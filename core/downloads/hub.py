"""What the Hub says about files, through huggingface_hub: commit, sizes, sha256, redirect URLs.

Every call fails at once in Offline mode (:class:`HubOfflineError`, before any connection) and
otherwise connects with :data:`~..network.CONNECT_TIMEOUT_S` and waits
:data:`~..network.METADATA_TIMEOUT_S` for an answer: no connection is :class:`HubUnreachableError`
at once, never huggingface_hub's retry loop; only 429/5xx answers are tried again, briefly.

Every call names the endpoint explicitly (the user's mirror setting, else ``HF_ENDPOINT`` at call
time, else huggingface.co) and the token explicitly (``token=False`` when there is none, so
huggingface_hub never picks one up behind our back). Errors become the typed errors of
:mod:`.errors` with distinct messages: licence not accepted (with the repo URL), no token, bad
token, token without access, repo / file / revision not found, Hub unreachable or offline.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
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

from .. import network
from ..errors import UserText
from ..i18n import N_
from .errors import (
    DownloadError,
    HubOfflineError,
    HubUnavailableError,
    HubUnreachableError,
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
# huggingface_hub's user agent ("telemetry") fetches a list of AI-agent harnesses from
# huggingface.co once a day — whatever endpoint or mirror is in use, and with a 3 s timeout on the
# first request of a process. A connection nobody asked for, to a host a mirror's user may not
# reach: off in this process.
constants.HF_HUB_DISABLE_TELEMETRY = True
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_T = TypeVar("_T")
#: What Offline mode refuses here (the subject of :func:`network.offline_message`).
HUB_FEATURE = N_("Downloading from the Hugging Face Hub")


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
    def api(self) -> HfApi:
        """The ``HfApi`` of this endpoint and token (for calls this class does not wrap)."""
        return self._api

    @property
    def token(self) -> str | None:
        """The token sent to the endpoint (the given one, else the stored one), if any."""
        return self._token

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
        self.require_online()
        rev = revision or constants.DEFAULT_REVISION
        try:
            info = with_retries(lambda: self._api.model_info(
                repo_id, revision=rev, files_metadata=True, token=self._token or False,
                timeout=metadata_timeout()))
        except Exception as error:
            raise self.map_error(error, repo_id, revision=rev) from error
        if not info.sha:
            raise HubUnavailableError(N_("{endpoint} gave no commit for {repo}@{revision}."),
                                      endpoint=self.endpoint, repo=repo_id, revision=rev)
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
                raise HubUnavailableError(N_("{endpoint} did not say how large {file} is."),
                                          endpoint=self.endpoint, file=path)
            out.append(RemoteFileInfo(path, size, sha))
        if out:
            self.locate(repo_id, info.sha, out[0].path)
        return ResolvedFiles(repo_id, rev, info.sha, tuple(out))

    def locate(self, repo_id: str, commit: str, path: str) -> FileLocation:
        """Ask again where ``path`` is (the signed URL of a CDN expires; call on every resume).

        Raises:
            the same errors as :meth:`resolve`.
        """
        self.require_online()
        url = hf_hub_url(repo_id, path, revision=commit, endpoint=self.endpoint)
        try:
            meta = with_retries(lambda: get_hf_file_metadata(
                url, token=self._token or False, timeout=metadata_timeout(),
                endpoint=self.endpoint, retry_on_errors=False))
        except Exception as error:
            raise self.map_error(error, repo_id, revision=commit, filename=path) from error
        target = urljoin(url, meta.location)
        same_origin = _origin(target) == _origin(self.endpoint)
        headers = build_hf_headers(token=self._token if same_origin and self._token else False)
        headers["Accept-Encoding"] = "identity"
        sha = meta.etag if meta.etag and len(meta.etag) == 64 else None
        return FileLocation(target, headers, meta.size, sha)

    def require_online(self) -> None:
        """Raise :class:`HubOfflineError` at once when Offline mode is on.

        Raises:
            HubOfflineError: Offline mode is on.
        """
        network.require_network(HUB_FEATURE, HubOfflineError)

    def map_error(self, error: Exception, repo_id: str, *, revision: str | None = None,
                  filename: str | None = None) -> Exception:
        """Our typed error for an exception from huggingface_hub or httpx2 (others unchanged)."""
        page = self.repo_url(repo_id)
        if isinstance(error, DownloadError):
            return error
        if isinstance(error, GatedRepoError):
            if not self._token:
                return TokenRequiredError(N_(
                    "{repo} is a gated model: it needs a Hugging Face token. Sign in "
                    "(`hf auth login`, or in Settings) and accept its licence at {url}."),
                    repo_id, page, repo=repo_id, url=page)
            return LicenceNotAcceptedError(N_(
                "You have not accepted the licence of {repo} with this account yet (or your "
                "request is still pending). Open {url}, accept it, then try again."),
                repo_id, page, repo=repo_id, url=page)
        if isinstance(error, HfRevisionNotFoundError):
            return RevisionNotFoundError(N_(
                "Revision {revision!r} does not exist in {repo} (check the branch, tag or "
                "commit)."), revision=revision, repo=repo_id)
        if isinstance(error, EntryNotFoundError):
            return RemoteFileNotFoundError(N_(
                "File {file!r} is not in {repo} at revision {revision!r}."),
                file=filename, repo=repo_id, revision=revision)
        if isinstance(error, RepositoryNotFoundError):
            if self._token:
                return RepoNotFoundError(N_("Repository {repo} was not found on {endpoint}."),
                                         repo=repo_id, endpoint=self.endpoint)
            return RepoNotFoundError(N_(
                "Repository {repo} was not found on {endpoint}. If it is private, sign in with "
                "a Hugging Face token that can read it."), repo=repo_id, endpoint=self.endpoint)
        if isinstance(error, OfflineModeIsEnabled):
            return HubOfflineError(network.offline_message(HUB_FEATURE))
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            status = error.response.status_code
            if status == 401:
                return InvalidTokenError(N_(
                    "The Hub rejected your Hugging Face token while opening {repo}: it is "
                    "invalid, expired or revoked. Sign in again with a new token."),
                    repo_id, page, repo=repo_id)
            if status == 403:
                return TokenAccessError(N_(
                    "Your Hugging Face token does not grant access to {repo} (a fine-grained "
                    "token needs read access to public gated repos, or to this repo)."),
                    repo_id, page, repo=repo_id)
            return HubUnavailableError(N_("{endpoint} answered {status} for {repo}; try again "
                                          "later."), endpoint=self.endpoint, status=status,
                                       repo=repo_id)
        if isinstance(error, httpx2.TransportError | OSError):
            return HubUnreachableError(N_("Cannot reach {endpoint}: {reason}"),
                                       endpoint=self.endpoint, reason=_reason(error))
        return error


def metadata_timeout() -> float:
    """The timeout of a metadata request: short to connect, a little longer for the answer.

    (An ``httpx2.Timeout``; huggingface_hub passes it through, though it annotates a float.)
    """
    return cast(float, httpx2.Timeout(network.METADATA_TIMEOUT_S,
                                      connect=network.CONNECT_TIMEOUT_S))


def with_retries(call: Callable[[], _T]) -> _T:
    """``call()``, tried again (briefly) when the server answers 429 or 5xx.

    No connection, a timeout or any other error is raised at once: those are what makes
    huggingface_hub's own retry loop freeze for ~23 s on an unreachable host.
    """
    attempts = max(1, network.METADATA_ATTEMPTS)
    for attempt in range(attempts):
        try:
            return call()
        except HfHubHTTPError as error:
            response: Any = error.response
            status = response.status_code if response is not None else None
            if status not in _RETRY_STATUS or attempt == attempts - 1:
                raise
            delay = 0.5 * 2 ** attempt
            retry_after = response.headers.get("Retry-After") if response is not None else None
            if retry_after:
                with contextlib.suppress(ValueError):
                    delay = min(float(retry_after), 5.0)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _reason(error: BaseException) -> str | UserText:
    """What went wrong with a connection, in a few words (timeouts said as such)."""
    text = str(error).strip()
    if isinstance(error, httpx2.TimeoutException | TimeoutError):
        return UserText(N_("no answer within {seconds:g} s"), seconds=(
            network.CONNECT_TIMEOUT_S if isinstance(error, httpx2.ConnectTimeout)
            else network.METADATA_TIMEOUT_S))
    return text or type(error).__name__


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port
