"""What users paste to name a Hub model: ``org/repo``, ``org/repo:Q4_K_M``, or a Hub URL.

Accepted URL forms (any host, so a mirror's URLs work too): ``https://huggingface.co/org/repo``,
``…/org/repo/tree/REV``, ``…/org/repo/blob/REV/path/file.gguf`` and ``…/resolve/REV/…``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import DeskError
from ..i18n import N_

# The Hub's own rule for repository names: letters, digits, "-", "_", "."; not starting with
# "-" or "." (huggingface_hub's validate_repo_id).
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_RE = re.compile(rf"^{_NAME}/{_NAME}$")
_QUANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class HubReferenceError(DeskError, ValueError):
    """Raised when pasted text names no Hub repository; the message shows the accepted forms."""


@dataclass(frozen=True)
class HubReference:
    """A repository, and what else the text named: a revision, a file, or a quantization."""

    repo_id: str
    revision: str | None = None
    filename: str | None = None
    quant: str | None = None


def _refuse(text: str) -> HubReferenceError:
    return HubReferenceError(N_(
        "{text!r} does not name a Hub repository. Give owner/name (e.g. "
        "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF), owner/name:QUANT (e.g. …:Q4_K_M) or a Hub "
        "URL."), text=text)


def looks_like_reference(text: str) -> bool:
    """Whether ``text`` is shaped like a Hub reference (``owner/name…`` or a URL), not a search
    phrase or a catalog id. Raises nothing."""
    text = text.strip()
    return text.startswith(("http://", "https://")) or bool(
        _REPO_RE.match(text.split(":", 1)[0]))


def parse_reference(text: str) -> HubReference:
    """The repository (and revision, file or quantization) that ``text`` names.

    Raises:
        HubReferenceError: ``text`` is none of the accepted forms.
    """
    text = text.strip()
    if text.startswith(("http://", "https://")):
        return _parse_url(text)
    repo, _, quant = text.partition(":")
    if not _REPO_RE.match(repo) or (quant and not _QUANT_RE.match(quant)) or text.endswith(":"):
        raise _refuse(text)
    return HubReference(repo, quant=quant or None)


def _parse_url(text: str) -> HubReference:
    url = urlsplit(text)
    parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
    if parts[:1] == ["models"]:  # https://huggingface.co/models/org/repo is not a page, but …
        parts = parts[1:]
    if len(parts) < 2 or not _REPO_RE.match(f"{parts[0]}/{parts[1]}"):
        raise _refuse(text)
    repo = f"{parts[0]}/{parts[1]}"
    rest = parts[2:]
    if not rest:
        return HubReference(repo)
    if rest[0] == "tree" and len(rest) >= 2:
        return HubReference(repo, revision=rest[1])
    if rest[0] in ("blob", "resolve") and len(rest) >= 3:
        return HubReference(repo, revision=rest[1], filename="/".join(rest[2:]))
    raise _refuse(text)
