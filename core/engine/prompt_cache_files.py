"""The prompt cache's files: their format, and work on the whole cache folder (no engine needed).

One file per entry, in a folder per key (the first 32 hex digits of the cache key):
:data:`MAGIC`, :data:`FORMAT_VERSION`, the key, the entry's tag (the conversation it was made
from), its :class:`~.context_shift.Layout`, the token count, a CRC-32 of tokens and state, then
the tokens and the state. A file that does not parse as exactly that is "bad": its readers raise
:class:`BadFileError`, and the cache removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .context_shift import Layout

MAGIC = b"MDPCACHE"
FORMAT_VERSION = 2
SUFFIX = ".mdpc"
#: magic, format version, key length, tag length, token count, state length, CRC-32 of tokens +
#: state, then the entry's :class:`~.context_shift.Layout`: keep, removed, digest.
_HEADER = struct.Struct("<8sIIIIQIII32s")
_MAX_TAG = 200



def clean_tag(tag: str | None) -> str:
    """``tag`` as stored: printable ASCII, at most :data:`_MAX_TAG` characters ("" for none)."""
    if not tag:
        return ""
    text = "".join(c for c in tag if c.isascii() and c.isprintable())
    return text[:_MAX_TAG]



class BadFileError(Exception):
    """A cache file that is not a valid entry of this key."""


def entry_name(tokens: Sequence[int], layout: Layout) -> str:
    digest = hashlib.sha256(array("i", tokens).tobytes())
    digest.update(f"{layout.keep}:{layout.removed}:{layout.digest}".encode("ascii"))
    return digest.hexdigest()[:40]


def encode(key: str, tag: str, tokens: Sequence[int], layout: Layout, state: bytes
            ) -> tuple[bytes, bytes]:
    """The file's header (with the key, the tag, the layout and the tokens) and its state part."""
    key_bytes, tag_bytes = key.encode("ascii"), tag.encode("ascii")
    token_bytes = array("i", tokens).tobytes()
    crc = zlib.crc32(state, zlib.crc32(token_bytes))
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(key_bytes), len(tag_bytes), len(tokens),
                          len(state), crc, layout.keep, layout.removed,
                          layout.digest.encode("ascii").ljust(32, b"\0"))
    return header + key_bytes + tag_bytes + token_bytes, state


@dataclass(frozen=True)
class Head:
    """What an entry file's header says."""

    tokens: tuple[int, ...]
    layout: Layout
    tag: str
    state_offset: int
    state_len: int
    crc: int


def read_head(path: Path, key: str | None) -> Head:
    """An entry file's header.

    ``key`` ``None``: accept any key (for folder-wide work such as :func:`forget_tag`).

    Raises:
        BadFileError: not a valid entry of ``key`` (wrong magic, version, key, size).
        OSError: the file cannot be read (it may be gone).
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        raw = file.read(_HEADER.size)
        if len(raw) != _HEADER.size:
            raise BadFileError("short header")
        (magic, version, key_len, tag_len, n_tokens, state_len, crc, keep, removed,
         digest) = _HEADER.unpack(raw)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise BadFileError("foreign file or another format version")
        stored_key = file.read(key_len)
        if key is not None and (key_len != len(key) or stored_key != key.encode("ascii")):
            raise BadFileError("another key")
        if tag_len > _MAX_TAG:
            raise BadFileError("tag too long")
        tag = file.read(tag_len).decode("ascii", errors="replace")
        offset = _HEADER.size + key_len + tag_len + 4 * n_tokens
        if size != offset + state_len or n_tokens == 0 or state_len == 0:
            raise BadFileError("truncated or padded")
        tokens = array("i")
        tokens.frombytes(file.read(4 * n_tokens))
        layout = Layout(keep, removed, digest.rstrip(b"\0").decode("ascii", errors="replace")) \
            if removed else Layout()
        return Head(tuple(tokens), layout, tag, offset, state_len, crc)


def read_state(path: Path, key: str) -> tuple[Head, bytes]:
    """An entry file's header and state, checked against its CRC.

    Raises:
        BadFileError, OSError: as :func:`read_head`; also a CRC mismatch.
    """
    head = read_head(path, key)
    with path.open("rb") as file:
        file.seek(head.state_offset)
        state = file.read(head.state_len)
    if len(state) != head.state_len or \
            zlib.crc32(state, zlib.crc32(array("i", head.tokens).tobytes())) != head.crc:
        raise BadFileError("checksum mismatch")
    return head, state


def is_key_folder(path: Path) -> bool:
    """Whether ``path`` is one of the cache's per-key folders (32 hex digits)."""
    name = path.name
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name) and path.is_dir()


def remove_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


# --- the whole folder (no engine needed) --------------------------------------------------------


@dataclass(frozen=True)
class FolderUsage:
    """What the cache folder holds: entry files, their bytes and tokens, and other models' keys.
    """

    folder: Path
    files: int
    bytes: int
    tokens: int
    keys: int


def entry_files(root: Path) -> list[Path]:
    """Every entry file under the cache folder ``root`` (all keys)."""
    paths: list[Path] = []
    with contextlib.suppress(OSError):
        for sub in root.iterdir():
            if is_key_folder(sub):
                with contextlib.suppress(OSError):
                    paths += [p for p in sub.iterdir() if p.suffix == SUFFIX]
    return paths


def folder_usage(root: Path) -> FolderUsage:
    """What the cache folder ``root`` holds (zero when it does not exist); unreadable or foreign
    files count in bytes but not in tokens."""
    files = size = tokens = 0
    keys: set[Path] = set()
    for path in entry_files(root):
        with contextlib.suppress(OSError):
            size += path.stat().st_size
            files += 1
            keys.add(path.parent)
            with contextlib.suppress(BadFileError):
                tokens += len(read_head(path, None).tokens)
    return FolderUsage(root, files, size, tokens, len(keys))


def clear_folder(root: Path) -> int:
    """Remove every entry of every model from the cache folder ``root``; the bytes freed.

    Files being written by a running engine finish as temporary files and land afterwards; the
    folder itself and anything that is not the cache's stays.
    """
    freed = 0
    for path in entry_files(root):
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            path.unlink()
            freed += size
    return freed


def forget_tag(root: Path, tag: str) -> int:
    """Remove the entries tagged ``tag`` (of every model) from the cache folder ``root``; the
    number of files removed."""
    clean = clean_tag(tag)
    if not clean:
        return 0
    removed = 0
    for path in entry_files(root):
        try:
            if read_head(path, None).tag != clean:
                continue
        except (BadFileError, OSError):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
