"""One rule for reading data that comes from outside: parse with limits, then validate.

Every reader of outside data — import files, ``settings.json`` (and the early reader), ``hub.json``,
catalog overrides, API bodies — goes through :func:`load_limited_json` before it looks at a
field. It refuses, with a :class:`LimitError` that names the field:

* a text larger than the caller's size limit (checked before parsing);
* nesting deeper than :data:`MAX_JSON_DEPTH` (Python's own parser would raise ``RecursionError``
  at about 1,000 levels, long after a program has stopped making sense);
* an integer with more than :data:`MAX_INT_DIGITS` digits (Python refuses 4,300 digits with a
  bare ``ValueError``; SQLite stores 19);
* ``NaN``, ``Infinity`` and numbers too large to be finite (standard JSON has none of them);
* text that is not valid Unicode: a lone surrogate such as ``"\\ud800"``, which JSON can spell
  but UTF-8, SQLite and Qt cannot store.

:func:`check_text` applies the same string rule to a single value (a CLI argument, a search
query, an API field). Callers turn a :class:`LimitError` into their own typed error
(:class:`~mixtral_desk.core.errors.ImportFormatError`,
:class:`~mixtral_desk.core.errors.SettingsError` …), so the user sees which file and which
field is wrong, and nothing is written.

The limits a person may meet — the largest message, request body, import and settings file —
are constants here, documented in the README's "Limits" paragraph and enforced where a message
enters: the composer and paste (desktop), import (core/store), the API server (core/server).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from .errors import MessageError, UserText
from .i18n import N_

MAX_MESSAGE_CHARS: Final = 1_000_000
"""The largest message, in characters, that the composer, a paste, an import or an API request
may carry (about 250,000 tokens: more than any context window this app loads)."""

MAX_REQUEST_BYTES: Final = 16 * 1024 * 1024
"""The largest API request body; a larger one is answered 413 before it is read whole."""

MAX_IMPORT_BYTES: Final = 512 * 1024 * 1024
"""The largest export file that import reads."""

MAX_SETTINGS_BYTES: Final = 1024 * 1024
"""The largest settings (or hub.json, catalog override) file that is read."""

MAX_JSON_DEPTH: Final = 64
"""The deepest nesting of objects and lists accepted anywhere."""

MAX_INT_DIGITS: Final = 20
"""The most digits of an integer accepted anywhere (a signed 64-bit integer has 19)."""

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_INT_LIMIT: Final = 10**MAX_INT_DIGITS


class LimitError(ValueError):
    """Raised when outside data breaks one of the rules above.

    ``field``: where, as a path (``conversations[0].messages[3].content``; empty for the whole
    text); ``problem``: what is wrong, an ``N_()``-marked predicate ("is nested deeper than 64
    levels") as a :class:`UserText`.
    """

    def __init__(self, field: str, problem: UserText) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field or 'the data'} {problem.english()}")


def check_text(value: str, field: str, *, max_chars: int | None = None) -> str:
    """``value`` itself, if it is valid Unicode and at most ``max_chars`` characters long.

    Raises:
        LimitError: it holds a lone surrogate, or is too long (``field`` names it).
    """
    if max_chars is not None and len(value) > max_chars:
        raise LimitError(field, UserText(N_("is longer than {limit} characters"),
                                         limit=f"{max_chars:,}"))
    if not value.isascii() and _SURROGATE.search(value) is not None:
        raise LimitError(field, UserText(N_("holds text that is not valid Unicode (a lone "
                                            "surrogate)")))
    return value


def check_message(text: str) -> str:
    """``text`` itself, if it may be sent as one message (the composer, a paste, the CLI).

    Raises:
        MessageError: it is longer than :data:`MAX_MESSAGE_CHARS`, or holds a lone surrogate.
    """
    if len(text) > MAX_MESSAGE_CHARS:
        raise MessageError(N_("The message is {length} characters long; a message holds "
                                     "at most {limit}. Attach less text, or split it."),
                                  length=f"{len(text):,}", limit=f"{MAX_MESSAGE_CHARS:,}")
    try:
        return check_text(text, "message")
    except LimitError as error:
        raise MessageError(N_("The message cannot be sent: it {problem}."),
                           problem=error.problem) from None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberError(UserText(N_("holds a whole number with more than {digits} digits"),
                                    digits=MAX_INT_DIGITS))
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberError(UserText(N_("holds a number too large to store")))
    return value


def _parse_constant(text: str) -> float:
    raise _NumberError(UserText(N_("holds {value}, which is not a number JSON allows"),
                                value=text))


class _NumberError(ValueError):
    def __init__(self, problem: UserText) -> None:
        self.problem = problem
        super().__init__(problem.english())


def load_limited_json(text: str | bytes, *, max_bytes: int) -> Any:
    """``text`` parsed as JSON under the limits of this module.

    ``bytes`` are decoded as UTF-8 first. ``json.JSONDecodeError`` (a ``ValueError``) is left to
    the caller, who knows how to name the file and position.

    Raises:
        LimitError: the text is too large, not UTF-8, too deep, or holds a number or string the
            rules refuse (the field is named where known).
        json.JSONDecodeError: the text is not JSON.
    """
    if len(text) > max_bytes:
        raise LimitError("", UserText(N_("is larger than {limit} bytes"), limit=f"{max_bytes:,}"))
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise LimitError("", UserText(N_("is not UTF-8 text (byte {position})"),
                                          position=error.start)) from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except RecursionError:
        raise LimitError("", UserText(N_("is nested deeper than {depth} levels"),
                                      depth=MAX_JSON_DEPTH)) from None
    except _NumberError as error:
        raise LimitError("", error.problem) from None
    check_tree(data)
    return data


def check_tree(data: Any) -> None:
    """Check parsed JSON (or TOML) data for depth, integer size and valid strings, without
    recursion and without allocating per scalar (a 16 MiB list of numbers costs no memory); the
    path of a problem is spelled out only when one is found.

    Raises:
        LimitError: too deep, an integer too long, or a key or string holds a lone surrogate
            (naming its path).
    """
    # A node is (parent node, key or index); the root's is None.
    stack: list[tuple[Any, _Node, int]] = [(data, None, 0)]
    while stack:
        value, node, depth = stack.pop()
        if not isinstance(value, dict | list):
            _check_scalar(value, node)
            continue
        if depth >= MAX_JSON_DEPTH:
            raise LimitError(_spell(node), UserText(N_("is nested deeper than {depth} levels"),
                                                    depth=MAX_JSON_DEPTH))
        items = enumerate(value) if isinstance(value, list) else value.items()
        for key, item in items:
            if isinstance(key, str):
                _check_key(key, node)
            if isinstance(item, dict | list):
                stack.append((item, (node, key), depth + 1))
            elif isinstance(item, str | int):
                _check_scalar(item, (node, key))


_Node = tuple[Any, "str | int"] | None


def _spell(node: _Node) -> str:
    """The path of ``node`` as messages name it: ``messages[3].content``."""
    parts: list[str | int] = []
    while node is not None:
        node, key = node
        parts.append(key)
    path = ""
    for key in reversed(parts):
        path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)
    return path


def _check_key(key: str, node: _Node) -> None:
    try:
        check_text(key, "")
    except LimitError:
        path = _spell(node)
        check_text(key, f"{path}.{key!a}" if path else repr(key))


def _check_scalar(value: Any, node: _Node) -> None:
    if isinstance(value, str):
        try:
            check_text(value, "")
        except LimitError:
            check_text(value, _spell(node))
    elif isinstance(value, int) and not -_INT_LIMIT < value < _INT_LIMIT:
        raise LimitError(_spell(node), UserText(N_("holds a whole number with more than {digits} "
                                                   "digits"), digits=MAX_INT_DIGITS))
