"""Search the Hub for GGUF repositories and list a repository's quantizations.

:class:`HubBrowser` speaks to one endpoint (the user's mirror, else ``HF_ENDPOINT``, else
huggingface.co) with one token, as :class:`~..downloads.hub.HubClient` does — the same Hub
settings as downloads. A search is ``GET /api/models?search=…&filter=gguf&sort=…&limit=…`` with
``expand`` fields, as ``HfApi.list_models`` sends it; the answer is parsed by huggingface_hub's
``ModelInfo``. It is sent here with the short timeouts of :mod:`..network` (``list_models`` would
retry an unreachable host for ~23 s) and follows the Hub's ``Link: rel="next"`` pages. A page
``n`` of ``size`` asks for ``(n + 1) * size + 1`` items: one more than shown says whether there
is a next page. A repository's files come from ``model_info(files_metadata=True)`` (one request).

Every call fails at once in Offline mode (:class:`~..downloads.errors.HubOfflineError`); Hub
errors become the typed errors of :mod:`..downloads.errors`; an answer that is not what the Hub
sends is :class:`HubAnswerError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import httpx2
from huggingface_hub import ModelInfo, get_session
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils._http import hf_raise_for_status

from ..downloads.errors import HubUnavailableError, RemoteFileNotFoundError
from ..downloads.hub import HubClient, metadata_timeout, with_retries
from ..errors import DeskError
from ..i18n import N_
from ..paths import DataPaths
from ..session.hub_settings import load_hub_settings
from .quants import QuantFile, find_quant, group_files
from .references import HubReference

Sort = Literal["downloads", "likes", "trending", "updated"]
#: The Hub's name of each sort order (``list_models``' ``sort`` values, as sent).
SORT_KEYS: Final[dict[str, str]] = {"downloads": "downloads", "likes": "likes",
                                    "trending": "trendingScore", "updated": "lastModified"}
#: What a search asks the Hub to include for each repository.
SEARCH_FIELDS: Final = ("author", "downloads", "likes", "lastModified", "gated", "private",
                        "tags", "gguf", "trendingScore")
PAGE_SIZE: Final = 20
_MAX_PAGE_SIZE: Final = 100


class HubAnswerError(HubUnavailableError):
    """Raised when the Hub (or a mirror) answers with something that is not what the Hub sends:
    not JSON, or JSON of another shape. The message names the endpoint and what was asked."""


class NoGGUFError(RemoteFileNotFoundError):
    """Raised when a repository that should give a model holds no GGUF file."""


class QuantChoiceError(DeskError, LookupError):
    """Raised when a reference does not pick one model entry; the message lists the choices."""


@dataclass(frozen=True)
class RepoSummary:
    """One search result. ``gated``: False, ``"auto"`` or ``"manual"``; ``parameters`` and
    ``architecture`` come from the Hub's ``gguf`` metadata (None when it has none)."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    updated: datetime | None = None
    licence: str | None = None
    gated: bool | str = False
    parameters: int | None = None
    architecture: str | None = None


@dataclass(frozen=True)
class SearchPage:
    """A page of results; ``has_more``: whether page ``page + 1`` has any."""

    query: str
    sort: Sort
    page: int
    repos: tuple[RepoSummary, ...]
    has_more: bool


@dataclass(frozen=True)
class RepoFiles:
    """A repository at one commit and its GGUF files grouped by quantization.

    ``url``: its page on the endpoint (where a gated repository's licence is accepted).
    """

    repo_id: str
    revision: str
    commit: str
    url: str
    licence: str | None
    gated: bool | str
    parameters: int | None
    architecture: str | None
    context_length: int | None
    entries: tuple[QuantFile, ...] = field(default=())

    @property
    def models(self) -> list[QuantFile]:
        """The entries a user can load (not vision projectors)."""
        return [e for e in self.entries if e.kind == "model"]


def _licence(info: ModelInfo) -> str | None:
    for tag in info.tags or []:
        if isinstance(tag, str) and tag.startswith("license:"):
            return tag.split(":", 1)[1]
    card = getattr(info.card_data, "license", None) if info.card_data is not None else None
    return str(card) if card else None


def _gguf(info: ModelInfo) -> dict[str, Any]:
    return info.gguf if isinstance(info.gguf, dict) else {}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _summary(info: ModelInfo) -> RepoSummary:
    gguf = _gguf(info)
    arch = gguf.get("architecture")
    return RepoSummary(info.id, _int(info.downloads) or 0, _int(info.likes) or 0,
                       info.last_modified, _licence(info), info.gated or False,
                       _int(gguf.get("total")), arch if isinstance(arch, str) else None)


class HubBrowser:
    """Search and repository listings for one endpoint and token (see the module docstring).

    ``endpoint``/``token``: as :class:`~..downloads.hub.HubClient` takes them (None: the
    defaults); or pass a ready ``hub``.
    """

    def __init__(self, endpoint: str | None = None, token: str | None = None, *,
                 hub: HubClient | None = None) -> None:
        self.hub = hub or HubClient(endpoint, token)

    @property
    def endpoint(self) -> str:
        return self.hub.endpoint

    def search(self, query: str, sort: Sort = "downloads", page: int = 0,
               page_size: int = PAGE_SIZE) -> SearchPage:
        """Page ``page`` (from 0) of the GGUF repositories matching ``query``, best first.

        Raises:
            HubOfflineError: Offline mode is on (at once).
            HubUnreachableError, HubUnavailableError: no answer, or an error status.
            HubAnswerError: the answer is not a model list.
            ValueError: ``sort`` is not a known order, or ``page``/``page_size`` are out of range.
        """
        if sort not in SORT_KEYS:
            raise ValueError(f"unknown sort {sort!r}")
        if page < 0 or not 1 <= page_size <= _MAX_PAGE_SIZE:
            raise ValueError("page must be >= 0 and page_size 1..100")
        self.hub.require_online()
        wanted = (page + 1) * page_size + 1
        params: list[tuple[str, Any]] = [("filter", "gguf"), ("sort", SORT_KEYS[sort]),
                                         ("limit", wanted)]
        if query.strip():
            params.insert(0, ("search", query.strip()))
        params += [("expand", name) for name in SEARCH_FIELDS]
        items = []
        try:
            for item in self._paginate(f"{self.endpoint}/api/models", params):
                items.append(item)
                if len(items) >= wanted:
                    break
            repos = [_summary(self._model_info(item, "/api/models")) for item in items]
        except HubAnswerError:
            raise
        except Exception as error:
            raise self.hub.map_error(error, query or "*") from error
        shown = repos[page * page_size:(page + 1) * page_size]
        return SearchPage(query, sort, page, tuple(shown), len(repos) == wanted)

    def _paginate(self, url: str, params: list[tuple[str, Any]]) -> Iterator[Any]:
        """The items of every page at ``url``, following ``Link: rel="next"``."""
        headers = build_hf_headers(token=self.hub.token or False)
        next_url: str | None = url
        first = True
        while next_url is not None:
            target = next_url

            def fetch(first: bool = first, target: str = target) -> httpx2.Response:
                response = get_session().get(target, params=params if first else None,
                                             headers=headers, timeout=metadata_timeout())
                hf_raise_for_status(response)
                return response

            response = with_retries(fetch)
            try:
                page = response.json()
            except ValueError as error:
                raise self._bad_answer("/api/models") from error
            if not isinstance(page, list):
                raise self._bad_answer("/api/models")
            yield from page
            next_url = response.links.get("next", {}).get("url")
            first = False

    def _bad_answer(self, what: str) -> HubAnswerError:
        return HubAnswerError(N_("{endpoint} answered {what} with something that is not a Hub "
                                 "answer (is the endpoint a Hugging Face Hub or mirror?)."),
                              endpoint=self.endpoint, what=what)

    def _model_info(self, item: object, what: str) -> ModelInfo:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise self._bad_answer(what)
        try:
            return ModelInfo(**item)  # type: ignore[no-untyped-call]
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise self._bad_answer(what) from error

    def repo_files(self, repo_id: str, revision: str | None = None) -> RepoFiles:
        """The repository's GGUF files at ``revision`` (default ``main``), grouped by quant.

        Raises:
            HubOfflineError: Offline mode is on (at once).
            RepoNotFoundError, RevisionNotFoundError, TokenRequiredError, InvalidTokenError,
            HubUnreachableError, HubUnavailableError: as their names say.
            HubAnswerError: the answer is not a repository's description.
        """
        self.hub.require_online()
        rev = revision or "main"
        what = f"/api/models/{repo_id}"
        try:
            info = with_retries(lambda: self.hub.api.model_info(
                repo_id, revision=rev, files_metadata=True, token=self.hub.token or False,
                timeout=metadata_timeout()))
        except (TypeError, KeyError, ValueError, AttributeError) as error:
            raise self._bad_answer(what) from error
        except Exception as error:
            raise self.hub.map_error(error, repo_id, revision=rev) from error
        if not isinstance(info.sha, str) or info.siblings is None:
            raise self._bad_answer(what)
        files = [(s.rfilename, s.lfs.size if s.lfs is not None else s.size or 0)
                 for s in info.siblings]
        gguf = _gguf(info)
        arch = gguf.get("architecture")
        return RepoFiles(repo_id, rev, info.sha, self.hub.repo_url(repo_id), _licence(info),
                         info.gated or False, _int(gguf.get("total")),
                         arch if isinstance(arch, str) else None,
                         _int(gguf.get("context_length")), tuple(group_files(files)))


def browser_from_settings(endpoint: str | None = None, paths: DataPaths | None = None,
                          ) -> HubBrowser:
    """A browser with the Hub settings the window and downloads use: ``endpoint`` (a command's
    ``--endpoint``) first, then the saved mirror, then ``HF_ENDPOINT``; the saved token, else
    the one of ``hf auth login``. Raises nothing (unreadable settings are the defaults)."""
    hub = load_hub_settings(paths)
    return HubBrowser(endpoint or hub.endpoint or None, hub.token or None)


@dataclass(frozen=True)
class FileChoice:
    """What a reference comes to: the repository, revision, and the files of one entry."""

    repo_id: str
    revision: str | None
    entry: QuantFile


def choose_files(browser: HubBrowser, reference: HubReference) -> FileChoice:
    """The entry a pasted reference names: its file (a URL to a file), its quantization
    (``org/repo:Q4_K_M``), or the repository's only model.

    Raises:
        NoGGUFError: the repository holds no GGUF model.
        QuantChoiceError: the quantization is not there, the file is not a GGUF model, or the
            repository has several and none was named (the message lists them).
        and what :meth:`HubBrowser.repo_files` raises.
    """
    files = browser.repo_files(reference.repo_id, reference.revision)
    models = files.models
    if not models:
        raise NoGGUFError(N_("{repo} holds no GGUF model file."), repo=reference.repo_id)
    quants = ", ".join(dict.fromkeys(e.quant for e in models))
    entry: QuantFile | None
    if reference.filename is not None:
        entry = next((e for e in models if reference.filename in e.files
                      or reference.filename == e.name), None)
        if entry is None:
            raise QuantChoiceError(N_("{file} is not a GGUF model of {repo}. Its models: "
                                      "{quants}."), file=reference.filename,
                                   repo=reference.repo_id, quants=quants)
    elif reference.quant is not None:
        entry = find_quant(models, reference.quant)
        if entry is None:
            raise QuantChoiceError(N_("{repo} has no {quant} file. Its quantizations: "
                                      "{quants}."), repo=reference.repo_id,
                                   quant=reference.quant.upper(), quants=quants)
    elif len(models) == 1:
        entry = models[0]
    else:
        raise QuantChoiceError(N_("{repo} has several quantizations; name one, e.g. "
                                  "{repo}:{example}. Its quantizations: {quants}."),
                               repo=reference.repo_id, example=models[0].quant, quants=quants)
    return FileChoice(reference.repo_id, reference.revision, entry)
