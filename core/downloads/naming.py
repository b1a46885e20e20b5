"""File names: split GGUF parts, old-style ``.partXofY`` pieces, and local folder names.

A split GGUF (``Model-Q8_0-00001-of-00003.gguf``) is kept as its parts (llama.cpp loads part 1 and
finds the rest beside it). Old-style pieces (``model.gguf.part1of2``) are byte slices of one file
and are joined into ``model.gguf`` after they all verified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from ..i18n import N_
from .errors import RemoteFileNotFoundError

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
PIECE_RE = re.compile(r"^(?P<target>.+\.gguf)[.-]part(?P<no>\d+)of(?P<count>\d+)$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def repo_folder(repo_id: str) -> str:
    """The local folder name for a repository: ``owner/name`` → ``owner--name``."""
    return _UNSAFE.sub("_", repo_id.replace("/", "--"))


def expand_files(requested: Iterable[str], available: Iterable[str], repo_id: str) -> list[str]:
    """The repository paths to download for ``requested``: every part of a split model.

    Asking for any part of a split GGUF (or for ``x.gguf`` when only ``x.gguf.partNofM`` exist)
    gives all its parts in order. Duplicates are dropped.

    Raises:
        RemoteFileNotFoundError: a requested file, or one part of a split model, is not in
            ``available``.
    """
    names = list(available)
    have = set(names)
    out: list[str] = []
    for name in requested:
        for path in _expand_one(name, names, have, repo_id):
            if path not in out:
                out.append(path)
    return out


def _expand_one(name: str, names: list[str], have: set[str], repo_id: str) -> list[str]:
    folder = str(PurePosixPath(name).parent)
    prefix = "" if folder == "." else folder + "/"
    base = PurePosixPath(name).name
    split = SPLIT_RE.match(base)
    piece = PIECE_RE.match(base)
    if split:
        count = int(split["count"])
        wanted = [f"{prefix}{split['stem']}-{i:05d}-of-{count:05d}.gguf"
                  for i in range(1, count + 1)]
    elif piece or (name not in have and base.endswith(".gguf")):
        target = piece["target"] if piece else base
        found = sorted((int(m["no"]), int(m["count"]), n) for n in names
                       if (m := PIECE_RE.match(PurePosixPath(n).name)) and m["target"] == target
                       and n.startswith(prefix) and n.count("/") == name.count("/"))
        if not found:
            raise _missing(name, names, repo_id)
        count = found[0][1]
        wanted = [n for _, _, n in found]
        if [no for no, _, _ in found] != list(range(1, count + 1)):
            missing = sorted(set(range(1, count + 1)) - {no for no, _, _ in found})
            raise RemoteFileNotFoundError(N_(
                "{repo}: piece {number} of {count} of {file} is missing from the repository, "
                "so the model cannot be assembled."), repo=repo_id,
                number=missing[0] if missing else "?", count=count, file=target)
    else:
        wanted = [name]
    for path in wanted:
        if path not in have:
            raise _missing(path, names, repo_id)
    return wanted


def _missing(name: str, names: list[str], repo_id: str) -> RemoteFileNotFoundError:
    ggufs = [n for n in names if ".gguf" in n.lower()][:8]
    if ggufs:
        return RemoteFileNotFoundError(N_(
            "File {file!r} is not in {repo} at that revision. GGUF files there: {files}."),
            file=name, repo=repo_id, files=", ".join(ggufs))
    return RemoteFileNotFoundError(N_(
        "File {file!r} is not in {repo} at that revision. It holds no GGUF file."),
        file=name, repo=repo_id)


def joined_name(path: str) -> str | None:
    """For an old-style piece ``x.gguf.part1of2``, the file they join into (``x.gguf``)."""
    m = PIECE_RE.match(PurePosixPath(path).name)
    return m["target"] if m else None


def primary_file(names: list[str]) -> str:
    """The file a user opens: part 1 of a split model, the joined file of pieces, or the first."""
    local = [PurePosixPath(n).name for n in names]
    for name in local:
        target = joined_name(name)
        if target:
            return target
    return local[0]
