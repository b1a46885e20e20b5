"""Prompt cache entry files read as their format says (the tests check what is on disk).

The header format itself is :mod:`mixtral_desk.core.engine.prompt_cache_files`'s, checked by
tests/core/test_prompt_cache.py; here its reader gives each file's tag.
"""

from __future__ import annotations

from pathlib import Path

from mixtral_desk.core.engine.prompt_cache import SUFFIX, conversation_tag
from mixtral_desk.core.engine.prompt_cache_files import read_head


def entry_tag(path: Path) -> str:
    """The tag written in an entry file's header ("" for none)."""
    return read_head(path, None).tag


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
