"""Hostile inputs users and clients have sent: the corpus that tests/core/test_untrusted_input.py
and the fuzz suite (tests/core/test_fuzz_untrusted.py) replay.

Add a case here whenever a user finds a new one: a name, and the text (or the change to a valid
document) that broke something. Every case must be refused with a specific message, or accepted
and stored so that it can be listed, shown, exported and deleted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

DEEP: Final = "[" * 5_000 + "]" * 5_000
"""JSON nested 5,000 deep (Python's parser: RecursionError)."""

HUGE_INT: Final = "1" * 5_000
"""A 5,000-digit integer (Python's int-size limit: ValueError)."""


def valid_export() -> dict[str, Any]:
    """One conversation of two messages, as an export file holds it."""
    conversation = "01J0000000000000000000CONV"
    question, answer = "01J0000000000000000000MSG1", "01J0000000000000000000MSG2"
    return {
        "format": "mixtral-desk-conversations", "version": 1,
        "exported_at": "2026-01-01T00:00:00.000+00:00",
        "conversations": [{
            "id": conversation, "title": "Hello", "created_at": "2026-01-01T00:00:00.000+00:00",
            "updated_at": "2026-01-01T00:00:01.000+00:00", "model": None, "system_prompt": None,
            "settings": {}, "pinned": False, "archived": False, "active_leaf_id": answer,
            "messages": [
                {"id": question, "parent_id": None, "role": "user", "content": "Hi",
                 "status": "complete", "created_at": "2026-01-01T00:00:00.000+00:00",
                 "updated_at": "2026-01-01T00:00:00.000+00:00", "model": None, "stats": None},
                {"id": answer, "parent_id": question, "role": "assistant", "content": "Hello!",
                 "status": "complete", "created_at": "2026-01-01T00:00:01.000+00:00",
                 "updated_at": "2026-01-01T00:00:01.000+00:00", "model": None,
                 "stats": {"completion_tokens": 2}},
            ],
        }],
    }


def _conversation(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["conversations"][0][field] = value
    return change


def _message(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["conversations"][0]["messages"][1][field] = value
    return change


#: Changes to :func:`valid_export` that must be refused, and a word the refusal must name.
IMPORT_REFUSALS: Final[dict[str, tuple[Callable[[dict[str, Any]], None], str]]] = {
    "year 0 after the offset": (_conversation("created_at", "0001-01-01T00:00:00+01:00"),
                                "created_at"),
    "year 10000 after the offset": (_conversation("updated_at", "9999-12-31T23:59:59-01:00"),
                                    "updated_at"),
    "a message from before 1970": (_message("created_at", "1969-12-31T23:59:59+00:00"),
                                   "created_at"),
    "a lone surrogate in content": (_message("content", "\ud800"), "content"),
    "a lone surrogate in the title": (_conversation("title", "a\udfffb"), "title"),
    "a lone surrogate in a settings key": (_conversation("settings", {"\ud800": 1}),
                                           "settings"),
    "a message over the size limit": (_message("content", "x" * 1_000_001), "content"),
}

#: Export files (JSON that Python's own parser chokes on, or not JSON text at all) that must be
#: refused, with a word the refusal must contain.
IMPORT_TEXT_REFUSALS: Final[dict[str, tuple[bytes, str]]] = {
    "nested 5,000 deep": (b'{"format": "mixtral-desk-conversations", "x": ' + DEEP.encode()
                          + b"}", "nested"),
    "a 5,000-digit integer": (b'{"format": "mixtral-desk-conversations", "version": '
                              + HUGE_INT.encode() + b"}", "digits"),
    "NaN": (b'{"format": "mixtral-desk-conversations", "version": NaN}', "NaN"),
    "an escaped lone surrogate": (b'{"format": "mixtral-desk-conversations", '
                                  b'"title": "\\ud800"}', "surrogate"),
    "not UTF-8": (b'{"format": "\xff"}', "UTF-8"),
}

#: Settings files (raw bytes) that must be refused by the settings reader — and survived, with
#: the defaults, by the early reader — with a word the refusal must contain.
SETTINGS_REFUSALS: Final[dict[str, tuple[bytes, str]]] = {
    "100,000 nested brackets": (b"[" * 100_000, "nested"),
    "a byte that is not UTF-8": (b'{"interface": {"language": "\xff"}}', "UTF-8"),
    "a 5,000-digit integer": (b'{"load": {"n_batch": ' + HUGE_INT.encode() + b"}}", "digits"),
    "schema_version as text": (b'{"schema_version": "2"}', "schema_version"),
    "schema_version as a float": (b'{"schema_version": 2.0}', "schema_version"),
    "an unknown nested key": (b'{"load": {"n_gpu_layerz": 3}}', "load.n_gpu_layerz"),
    "a lone surrogate": (b'{"interface": {"language": "\\ud800"}}', "interface.language"),
    "Infinity": (b'{"load": {"prompt_cache_gib": Infinity}}', "Infinity"),
}

#: Search queries that must be refused with a SearchQueryError (not run).
SEARCH_REFUSALS: Final = {
    "a lone surrogate": "\ud800",
    "a query of 2,000 characters": "word " * 400,
    "a query of 100 words": " ".join(f"w{n}" for n in range(100)),
}

#: Search queries that must simply run (FTS5 syntax is quoted away).
SEARCH_ODDITIES: Final = ['"', "*", "OR", "AND", "NOT x", "NEAR(a b)", "col:x", "^x", "x OR",
                          '"unbalanced', "a*b*", "-x", "{x}", "\x00", "🙂", "鲁", ""]

#: ``conversations list --limit`` values argparse must refuse (exit 2, no traceback).
CLI_LIMIT_REFUSALS: Final = ["100000000000000000000000", "0", "-5", "1e3", "nan", HUGE_INT,
                             "٣"]


def refused_export(name: str) -> dict[str, Any]:
    """:func:`valid_export` with the change :data:`IMPORT_REFUSALS` names ``name``."""
    document = copy.deepcopy(valid_export())
    IMPORT_REFUSALS[name][0](document)
    return document
