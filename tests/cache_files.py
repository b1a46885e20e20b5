"""Prompt cache entry files read as their format says (the tests check what is on disk).

An entry file starts with the header of :mod:`mixtral_desk.core.engine.prompt_cache`: magic,
format version, key length, tag length, token count, state length, CRC-32; then the key and the
tag (ASCII).
"""

from __future__ import annotations

import struct
from pathlib import Path

from mixtral_desk.core.engine.prompt_cache import SUFFIX, conversation_tag

HEADER = struct.Struct("<8sIIIIQI")


def entry_tag(path: Path) -> str:
    """The tag written in an entry file's header ("" for none)."""
    raw = path.read_bytes()
    _, _, key_len, tag_len, _, _, _ = HEADER.unpack_from(raw)
    start = HEADER.size + key_len
    return raw[start:start + tag_len].decode("ascii")


def _tagged(folder: Path) -> list[tuple[Path, str]]:
    """Every entry file under the cache folder ``folder`` with its tag (a file an engine removes
    meanwhile, superseded by a longer one, is left out)."""
    found = []
    for path in folder.rglob("*" + SUFFIX):
        try:
            found.append((path, entry_tag(path)))
        except FileNotFoundError:
            continue
    return found


def cached_tags(folder: Path) -> list[str]:
    """The tags of every entry file under the cache folder ``folder``, sorted (one per file)."""
    return sorted(tag for _, tag in _tagged(folder))


def files_of(folder: Path, conversation_id: str) -> list[Path]:
    """The entry files under ``folder`` made from conversation ``conversation_id``."""
    wanted = conversation_tag(conversation_id)
    return [path for path, tag in _tagged(folder) if tag == wanted]
