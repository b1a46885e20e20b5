"""Read a remote GGUF model's header with HTTP Range requests, so a plan exists before download.

:func:`read_remote_facts` asks the Hub where a file is (``HubClient.locate``: the signed CDN URL,
its headers and the file size), then GETs ``Range: bytes=0-N`` with huggingface_hub's HTTP client
and parses the header from those bytes with the same bounded parser as local files
(:mod:`.validation`). N starts at :data:`FIRST_READ` and grows four-fold while the header is
longer (a Llama-3 vocabulary takes several megabytes), up to :data:`MAX_HEADER_BYTES`. A server
that ignores the range and streams the whole file is read only up to N bytes, then dropped.
Every part of a split model has its own header; all are read.

Offline mode (the setting, ``--offline`` or ``HF_HUB_OFFLINE``) raises
:class:`RemoteHeaderOfflineError` at once, before any connection; an unreachable Hub raises
:class:`RemoteHeaderError` within the short connect timeout (:mod:`..network`). Nothing is ever
written to disk.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import httpx2
from huggingface_hub import constants, get_session

from .. import network
from ..downloads.errors import DownloadError, HubUnavailableError
from ..downloads.hub import HubClient
from ..errors import DeskError, GGUFError
from ..i18n import N_
from .model_file import ModelFacts, _check_split, _facts
from .validation import GGUFHeader, _parse, _ProblemError

FIRST_READ = 2 * 1024 * 1024
MAX_HEADER_BYTES = 128 * 1024 * 1024
READ_TIMEOUT_S = 30.0
_TOKENS_KEY = "tokenizer.ggml.tokens"


class RemoteHeaderError(DeskError, RuntimeError):
    """Raised when a remote header cannot be read (offline, unreachable, refused, not GGUF)."""


class RemoteHeaderOfflineError(RemoteHeaderError, network.OfflineError):
    """Raised at once, before any connection, when Offline mode is on."""


class _Prefix(io.RawIOBase):
    """The first bytes of a file; reads beyond them come back short and are noted."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self.hit_end = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 \
            else len(self._data) + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + size
        if end > len(self._data):
            self.hit_end = True
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk


def parse_header_prefix(prefix: bytes, file_size: int, name: str | Path,
                        decode_string_arrays: frozenset[str] = frozenset()) -> GGUFHeader | None:
    """Parse a GGUF header from the first bytes of a file of ``file_size`` bytes; None when the
    header runs past ``prefix`` (read more), unless the prefix is the whole file.

    Raises:
        GGUFError: the bytes are not a well-formed GGUF header (naming ``name``).
    """
    source = _Prefix(prefix)
    try:
        return _parse(source, Path(name), file_size, decode_string_arrays)  # type: ignore[arg-type]
    except _ProblemError as problem:
        if source.hit_end and len(prefix) < file_size and "ends inside its header" in str(problem):
            return None
        raise GGUFError(name, problem.problem) from None


def _read_prefix(client: httpx2.Client, url: str, headers: dict[str, str], n: int) -> bytes:
    """The first ``n`` bytes at ``url`` (fewer if the file is shorter).

    Raises:
        httpx2.HTTPError: the request failed or the server answered an error status.
    """
    request_headers = {**headers, "Range": f"bytes=0-{n - 1}"}
    out = bytearray()
    timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=network.CONNECT_TIMEOUT_S)
    with client.stream("GET", url, headers=request_headers, timeout=timeout,
                       follow_redirects=True) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            out += chunk
            if len(out) >= n:  # a server that ignored the range: stop reading
                break
    return bytes(out[:n])


def _hub_error(display: str, error: DownloadError) -> RemoteHeaderError:
    if isinstance(error, network.OfflineError):
        return _offline_error(display)
    if isinstance(error, HubUnavailableError):
        return RemoteHeaderError(N_("Cannot read the header of {name}: {reason} Download the "
                                    "model first, or plan with a local file."),
                                 name=display, reason=error)
    return RemoteHeaderError(N_("Cannot read the header of {name}: {reason}"),
                             name=display, reason=error)


def _offline_error(display: str) -> RemoteHeaderOfflineError:
    return RemoteHeaderOfflineError(N_(
        "Cannot read the header of {name} from the Hub: offline mode is on (the setting, "
        "--offline or HF_HUB_OFFLINE). Download the model first, or plan with a local file."),
        name=display)


def _check_online(display: str) -> None:
    """Raise :class:`RemoteHeaderOfflineError` at once when Offline mode is on."""
    if network.is_offline():
        raise _offline_error(display)


def read_remote_header(hub: HubClient, repo_id: str, filename: str, revision: str | None = None,
                       *, first_read: int = FIRST_READ, keep_tokens: bool = True) -> GGUFHeader:
    """The header of one remote GGUF file, reading as few bytes as the header needs.

    Raises:
        RemoteHeaderOfflineError: Offline mode is on (at once, nothing sent).
        RemoteHeaderError: the Hub unreachable, access refused, or the header longer than
            :data:`MAX_HEADER_BYTES`; the message says which.
        GGUFError: the file is not a well-formed GGUF file.
    """
    display = f"{repo_id}/{filename}"
    _check_online(display)
    try:
        where = hub.locate(repo_id, revision or constants.DEFAULT_REVISION, filename)
    except DownloadError as error:
        raise _hub_error(display, error) from error
    if where.size is None:
        raise RemoteHeaderError(N_("The Hub did not say how large {name} is."), name=display)
    decode = frozenset({_TOKENS_KEY}) if keep_tokens else frozenset()
    n = max(1024, first_read)
    client = get_session()
    while True:
        n = min(n, where.size, MAX_HEADER_BYTES)
        try:
            prefix = _read_prefix(client, where.url, where.headers, n)
        except (httpx2.HTTPError, OSError) as error:
            raise RemoteHeaderError(N_("Cannot read the header of {name}: {reason}"),
                                    name=display, reason=error) from error
        header = parse_header_prefix(prefix, where.size, display, decode)
        if header is not None:
            return header
        if len(prefix) < n or n >= min(where.size, MAX_HEADER_BYTES):
            raise RemoteHeaderError(N_("The header of {name} is longer than {size} bytes; it "
                                       "cannot be read remotely."),
                                    name=display, size=format(len(prefix), ","))
        n *= 4


def read_remote_facts(hub: HubClient, repo_id: str, files: Sequence[str],
                      revision: str | None = None, *, first_read: int = FIRST_READ) -> ModelFacts:
    """:class:`ModelFacts` of a remote model (all parts of a split model), from headers only.

    The revision is pinned to a commit first (one metadata call, which fails fast when the Hub is
    unreachable); ``facts.path`` and ``facts.parts`` are ``repo_id/file`` paths.

    Raises:
        RemoteHeaderError: as :func:`read_remote_header`, or the repository or file does not
            exist or needs a token or licence (the message says which).
        GGUFError: a header is malformed, or the parts do not belong together.
    """
    display = f"{repo_id}/{files[0] if files else ''}"
    _check_online(display)
    try:
        resolved = hub.resolve(repo_id, files, revision)
    except DownloadError as error:
        raise _hub_error(display, error) from error
    return read_remote_facts_at(hub, repo_id, resolved.commit, [f.path for f in resolved.files],
                                first_read=first_read)


def read_remote_facts_at(hub: HubClient, repo_id: str, commit: str, files: Sequence[str], *,
                         first_read: int = FIRST_READ, keep_tokens: bool = True) -> ModelFacts:
    """:class:`ModelFacts` of the parts ``files`` (all of them, in order) at a known ``commit``:
    one header read per part, no metadata call (the Hub browser already has the file list).
    ``keep_tokens=False`` skips decoding the vocabulary (its size is still known): planning
    needs no token text, and decoding 32,000 strings is most of the parsing time.

    Raises:
        RemoteHeaderError, GGUFError: as :func:`read_remote_facts`.
    """
    parts = tuple(Path(PurePosixPath(repo_id, f)) for f in files)
    headers = [read_remote_header(hub, repo_id, f, commit, first_read=first_read,
                                  keep_tokens=keep_tokens and i == 0)
               for i, f in enumerate(files)]
    _check_split(parts, headers)
    return _facts(parts, headers)
