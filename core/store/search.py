"""Full-text search helpers: CJK indexing and turning what a person types into an FTS5 query.

FTS5's ``unicode61`` tokenizer splits on spaces and punctuation, which suits English but leaves a
run of Chinese or Japanese characters as one long token: "鲁迅为什么打周树人" would only match
itself. So every indexed text that contains CJK characters also gets a derived copy (the
``search_cjk`` / ``title_cjk`` columns) in which each CJK run is rewritten as its overlapping
character bigrams followed by its last character alone::

    "鲁迅为什么打周树人"  →  "鲁迅 迅为 为什 什么 么打 打周 周树 树人 人"

A CJK word in a query becomes the phrase of its bigrams ("周树人" → ``"周树 树人"``), which matches
adjacent tokens of the derived column; a single character becomes a prefix (``"鲁"*``). Text
without CJK characters has no derived copy, so English ranking is unchanged.

By default a query is plain text: each word or ``"quoted phrase"`` is matched literally (FTS5
syntax characters are quoted away), words are ANDed, an uppercase ``OR`` between two words is
OR, and a trailing ``*`` makes a word a prefix. An unbalanced quote quotes to the end.

Search work is bounded by the query and the snippet window, not by the length of a message: a
query is at most :data:`MAX_QUERY_CHARS` long with :data:`MAX_QUERY_TERMS` terms, and FTS5's
``snippet()`` — whose cost grows with the square of a long message's matches (32 s for a common
word in a 4 MB message) — is only asked for messages up to :data:`SNIPPET_SQL_CHARS` characters;
a longer message gets its excerpt from :func:`python_snippet`, one linear scan per needle.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Final

from ..errors import SearchQueryError
from ..i18n import N_
from ..untrusted_json import LimitError, check_text
from .models import SNIPPET_CLOSE, SNIPPET_ELLIPSIS, SNIPPET_OPEN, SearchHit

_CJK_CLASS = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width katakana
    "\U00020000-\U0002ebef"  # CJK extensions B-F
)
_CJK_RUN = re.compile(f"[{_CJK_CLASS}]+")
_TERM = re.compile(r'"([^"]*)(?:"|$)(\*?)|(\S+)')


def has_cjk(text: str) -> bool:
    """Whether ``text`` contains a Chinese, Japanese or Korean character."""
    return _CJK_RUN.search(text) is not None


def _run_tokens(run: str, *, terminal: bool) -> list[str]:
    tokens = [run[i : i + 2] for i in range(len(run) - 1)]
    if terminal or len(run) == 1:
        tokens.append(run[-1])
    return tokens


def cjk_index_text(text: str | None) -> str | None:
    """The derived text indexed for CJK search, or ``None`` when ``text`` has no CJK characters.

    Non-CJK parts are kept as they are, so words mixed into CJK text ("用Python写") stay findable.
    """
    if not text or not has_cjk(text):
        return None
    return _CJK_RUN.sub(lambda m: " " + " ".join(_run_tokens(m.group(), terminal=True)) + " ", text)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _searchable(text: str) -> bool:
    return any(char.isalnum() for char in text)


def _term_expression(text: str, prefix: bool, cjk_column: str) -> str | None:
    """The FTS5 expression for one word or phrase, or ``None`` if it has nothing to match."""
    if not _searchable(text):
        return None
    if not has_cjk(text):
        return _quote(text) + ("*" if prefix else "")
    pieces: list[str] = []
    position = 0
    for match in _CJK_RUN.finditer(text):
        pieces.append(text[position : match.start()])
        at_end = not text[match.end() :].strip()
        run = match.group()
        if at_end and len(run) == 1:
            prefix = True  # the document's run may go on: "鲁" must also match "鲁迅"
        pieces.append(" ".join(_run_tokens(run, terminal=not at_end)))
        position = match.end()
    pieces.append(text[position:])
    return f"{cjk_column} : " + _quote(" ".join(piece for piece in pieces if piece)) + (
        "*" if prefix else ""
    )


@dataclass(frozen=True)
class ParsedQuery:
    """A plain-text query parsed once, rendered for each FTS table by :meth:`expression`."""

    terms: tuple[tuple[str, bool], ...]  # (text, prefix); ("OR", False) is the operator
    needles: tuple[str, ...]  # the literal texts, for snippets made in Python

    def expression(self, cjk_column: str) -> str | None:
        """The FTS5 MATCH expression, with CJK terms aimed at ``cjk_column``; ``None`` if empty."""
        parts: list[str] = []
        for text, prefix in self.terms:
            if text == "OR" and not prefix:
                if parts and parts[-1] != "OR":
                    parts.append("OR")
                continue
            expression = _term_expression(text, prefix, cjk_column)
            if expression is not None:
                parts.append(expression)
        while parts and parts[-1] == "OR":
            parts.pop()
        return " ".join(parts) or None


def _strip_punctuation(text: str) -> str:
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def parse_query(query: str, *, as_you_type: bool = False) -> ParsedQuery:
    """Parse plain user text (see the module docstring); never fails.

    ``as_you_type``: every word outside quotes is a prefix (``pine`` finds "pineapples"), for a
    search box that searches while the user types; phrases stay exact.
    """
    terms: list[tuple[str, bool]] = []
    needles: list[str] = []
    for match in _TERM.finditer(query):
        phrase, star, word = match.group(1), match.group(2), match.group(3)
        if word is not None:
            starred = word.endswith("*") and len(word) > 1
            text = word.rstrip("*") if starred else word
            prefix = starred or (as_you_type and text != "OR" and _searchable(text))
        else:
            text, prefix = phrase, bool(star)
        terms.append((text, prefix))
        if _searchable(text) and not (text == "OR" and word is not None):
            needles.append(_strip_punctuation(text))
    return ParsedQuery(tuple(terms), tuple(needles))


def python_snippet(text: str, needles: tuple[str, ...], *, width: int = 80) -> str:
    """An excerpt of ``text`` around the first of ``needles`` found (case-insensitively), marked.

    Used where FTS5's own ``snippet()`` cannot point at the match (CJK hits are found in the
    derived column, whose text is bigrams) or would take too long (a very long message). Falls
    back to the start of ``text``. One scan of ``text`` per needle; no copy of it is made.
    """
    found: tuple[int, int] | None = None
    for needle in needles:
        match = re.search(re.escape(needle), text, re.IGNORECASE) if needle else None
        if match is not None and (found is None or match.start() < found[0]):
            found = (match.start(), match.end())
    if found is None:
        excerpt = " ".join(text[:width].split())
        return excerpt + (SNIPPET_ELLIPSIS if len(text) > width else "")
    start, end = found
    before = max(0, start - width // 3)
    after = min(len(text), end + width - (start - before) - (end - start))
    excerpt = (
        text[before:start] + SNIPPET_OPEN + text[start:end] + SNIPPET_CLOSE + text[end:after]
    )
    excerpt = " ".join(excerpt.split())
    return (SNIPPET_ELLIPSIS if before > 0 else "") + excerpt + (
        SNIPPET_ELLIPSIS if after < len(text) else ""
    )


def check_query(query: str, *, as_you_type: bool = False) -> ParsedQuery:
    """``query`` parsed (:func:`parse_query`), if it is within the limits of a search.

    Raises:
        SearchQueryError: the query is longer than :data:`MAX_QUERY_CHARS`, has more than
            :data:`MAX_QUERY_TERMS` terms, or holds text that is not valid Unicode.
    """
    try:
        check_text(query, "query", max_chars=MAX_QUERY_CHARS)
    except LimitError as error:
        raise SearchQueryError(N_("Cannot search for this: the query {problem}."),
                               problem=error.problem) from None
    parsed = parse_query(query, as_you_type=as_you_type)
    if len(parsed.terms) > MAX_QUERY_TERMS:
        raise SearchQueryError(N_("Cannot search for this: the query has {count} words; search "
                                  "for at most {limit} at once."),
                               count=len(parsed.terms), limit=MAX_QUERY_TERMS)
    return parsed


# --- running a search ---------------------------------------------------------------------------

SEARCH_CANDIDATES: Final = 1000
"""How many of the newest matches per table are ranked. A rare query ranks all its matches
exactly; a query matching more (a very common word in a big history) ranks its newest 1,000,
which keeps search fast (bm25 costs time per match) and favours recent conversations."""

TITLE_RANK_WEIGHT: Final = 2.0
"""A match in a conversation's title counts this many times a match in a message."""

SNIPPET_TOKENS: Final = 12

SNIPPET_SQL_CHARS: Final = 20_000
"""Messages up to this many characters get FTS5's ``snippet()``; longer ones a Python excerpt
(see the module's docstring)."""

MAX_QUERY_CHARS: Final = 1_000
"""The longest search query, in characters."""

MAX_QUERY_TERMS: Final = 32
"""The most words and phrases one search query may hold."""

_MARKERS: Final = (SNIPPET_OPEN, SNIPPET_CLOSE, SNIPPET_ELLIPSIS)
_CANDIDATES: Final = {
    "messages": "SELECT rowid, bm25(messages_fts) FROM messages_fts "
                "WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
    "titles": "SELECT rowid, bm25(conversations_fts) FROM conversations_fts "
              "WHERE conversations_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
}
_MESSAGE_HIT: Final = f"""
    SELECT m.conversation_id, c.title, m.id, m.role,
           CASE WHEN length(m.content) <= {SNIPPET_SQL_CHARS}
                THEN snippet(messages_fts, 0, ?, ?, ?, {SNIPPET_TOKENS}) ELSE '' END,
           m.content
    FROM messages_fts
    JOIN messages AS m ON m.seq = messages_fts.rowid
    JOIN conversations AS c ON c.id = m.conversation_id
    WHERE messages_fts MATCH ? AND messages_fts.rowid = ?
"""
_TITLE_HIT: Final = f"""
    SELECT c.id, c.title,
           CASE WHEN length(c.title) <= {SNIPPET_SQL_CHARS}
                THEN snippet(conversations_fts, 0, ?, ?, ?, {SNIPPET_TOKENS}) ELSE '' END
    FROM conversations_fts JOIN conversations AS c ON c.seq = conversations_fts.rowid
    WHERE conversations_fts MATCH ? AND conversations_fts.rowid = ?
"""


def run_search(conn: sqlite3.Connection, query: str, *, limit: int, raw: bool,
               as_you_type: bool = False) -> list[SearchHit]:
    """Search messages and titles (see :meth:`Store.search`); best match first.

    Raises:
        SearchQueryError: FTS5 refused the query (only expected with ``raw``).
        sqlite3.Error: the database cannot be read.
    """
    parsed = check_query(query, as_you_type=as_you_type)
    expressions = {
        "messages": query if raw else parsed.expression("search_cjk"),
        "titles": query if raw else parsed.expression("title_cjk"),
    }
    if limit <= 0 or not all(expressions.values()):
        return []
    try:
        scored = [
            (float(score) * (TITLE_RANK_WEIGHT if table == "titles" else 1.0), table, rowid)
            for table, sql in _CANDIDATES.items()
            for rowid, score in conn.execute(sql, (expressions[table], SEARCH_CANDIDATES))
        ]
        scored.sort()
        hits = []
        for rank, table, rowid in scored[:limit]:
            if table == "messages":
                row = conn.execute(_MESSAGE_HIT, (*_MARKERS, expressions[table], rowid)).fetchone()
                text, found = row[5], row[4]
                hit_ids = row[:4]
            else:
                row = conn.execute(_TITLE_HIT, (*_MARKERS, expressions[table], rowid)).fetchone()
                text, found = row[1] or "", row[2]
                hit_ids = (row[0], row[1], None, None)
            snippet = found if SNIPPET_OPEN in found else python_snippet(text, parsed.needles)
            hits.append(SearchHit(conversation_id=hit_ids[0], conversation_title=hit_ids[1],
                                  message_id=hit_ids[2], role=hit_ids[3], snippet=snippet,
                                  rank=rank))
    except sqlite3.OperationalError as error:
        if not any(sign in str(error) for sign in ("fts5", "syntax", "no such column",
                                                   "unterminated", "unknown special query")):
            raise  # the database, not the query (e.g. locked)
        raise SearchQueryError(
            N_('Cannot search for {query}: {error}. Put words with special characters in '
               'double quotes, for example "C++" or "foo(bar)".'),
            query=repr(query), error=str(error)) from error
    return hits
