"""Reading every row that can still be read out of a damaged conversation database.

:func:`readable_rows` reads one table of a damaged file rowid range by rowid range: a range that
fails is halved until the unreadable rows are alone and skipped, so one bad page costs only the
rows on it. :func:`sources` opens what there is to read: the file itself (read-only, with its own
``-wal``); a copy with a rebuilt header when the first 100 bytes were wiped; and the output of
SQLite's own recovery (the ``sqlite3`` shell's ``.recover``) where that shell is installed.
:func:`clean_conversation` and :func:`clean_message` turn a salvaged row into values the current
schema accepts. core/store/recovery.py decides when to salvage and writes the result.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from . import page_scan
from .models import ROLES, STATUSES

log = logging.getLogger(__name__)

CHUNK_ROWS: Final = 1024
#: A failing rowid range is halved down to this many rows, then left to the page scan (which
#: reads the leaf pages without the b-tree above them): halving down to single rows would cost a
#: query per missing rowid when a page high in the tree is gone.
MIN_RANGE_ROWS: Final = 32
#: Ranges in a row that gave no row before a read whose end is only a guess stops.
BARREN_CHUNKS: Final = 8
#: Columns salvaged, in this order (a column missing from an older schema reads as NULL).
CONVERSATION_FIELDS: Final = ("id", "title", "created_at", "updated_at", "model",
                              "system_prompt", "settings", "active_leaf_id", "pinned", "archived")
MESSAGE_FIELDS: Final = ("id", "conversation_id", "parent_id", "role", "content", "status",
                         "created_at", "updated_at", "model", "stats")
RECOVER_TIMEOUT_S: Final = 600
_PAGE_SIZES: Final = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)


#: An index of each table that holds every row's rowid: read alone, it says which rows exist
#: even when table pages are damaged.
ROWID_INDEXES: Final = {"conversations": "conversations_listing_all",
                        "messages": "messages_by_parent"}


class Tally:
    """What reads met, per table: rows that could not be read (only rows known to exist, when
    an index says which), how many rows the index lists (``expected``), and whether any range
    failed at all (``failed``: the page scan may find more)."""

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}
        self.expected: dict[str, int] = {}
        self.failed = False

    def skip(self, table: str, count: int = 1) -> None:
        """Count ``count`` unreadable rows of ``table``."""
        self.skipped[table] = self.skipped.get(table, 0) + count


def _columns(conn: sqlite3.Connection, table: str, wanted: tuple[str, ...]) -> str:
    """``wanted`` as a select list, NULL for the columns ``table`` lacks (or all if unreadable)."""
    try:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        present = set(wanted)
    if not present:
        present = set(wanted)
    return ", ".join(name if name in present else "NULL" for name in wanted)


def _top_rowid(conn: sqlite3.Connection, table: str) -> int | None:
    """The table's largest rowid (0 when empty), ``None`` when it cannot be read."""
    try:
        row = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()
    except sqlite3.DatabaseError:
        return None
    return int(row[0]) if row and row[0] is not None else 0


def existing_rowids(conn: sqlite3.Connection, table: str) -> set[int] | None:
    """The rowids of ``table`` as its :data:`ROWID_INDEXES` index lists them; ``None`` when that
    index cannot be read either."""
    try:
        return {int(row[0]) for row in conn.execute(
            f"SELECT seq FROM {table} INDEXED BY {ROWID_INDEXES[table]}")}
    except sqlite3.Error:
        return None


def readable_rows(conn: sqlite3.Connection, table: str, fields: tuple[str, ...], path: Path,
                  tally: Tally) -> Iterator[tuple[Any, ...]]:
    """Every row of ``table`` that can be read, ``fields`` in order, by rowid ranges.

    Never raises for damage: unreadable rows are counted in ``tally`` (when an index says which
    rows exist, only those). When neither the table's largest rowid nor its index can be read,
    the reading stops after :data:`BARREN_CHUNKS` ranges in a row that gave nothing (the page
    scan finds what lies beyond).
    """
    columns = _columns(conn, table, fields)
    existing = existing_rowids(conn, table)
    if existing is not None:
        tally.expected[table] = max(tally.expected.get(table, 0), len(existing))
    known_top = _top_rowid(conn, table)
    top_is_a_guess = existing is None and known_top is None
    if existing:
        top = max(existing)
    elif known_top is not None:
        top = known_top
    else:
        try:
            top = path.stat().st_size // 16 + CHUNK_ROWS  # no row takes fewer than 16 bytes
        except OSError:
            return
    barren = 0
    for start in range(1, top + 1, CHUNK_ROWS):
        found = 0
        pending = [(start, min(start + CHUNK_ROWS - 1, top))]
        while pending:
            low, high = pending.pop()
            try:
                rows = conn.execute(f"SELECT {columns} FROM {table} WHERE seq BETWEEN ? AND ?",
                                    (low, high)).fetchall()
            except sqlite3.DatabaseError:
                tally.failed = True
                if high - low < MIN_RANGE_ROWS:
                    tally.skip(table, 0 if existing is None
                               else len(existing.intersection(range(low, high + 1))))
                    continue
                middle = (low + high) // 2
                pending += [(middle + 1, high), (low, middle)]
                continue
            except sqlite3.Error:
                tally.failed = True
                continue
            found += len(rows)
            yield from rows
        barren = barren + 1 if found == 0 else 0
        if top_is_a_guess and barren >= BARREN_CHUNKS:
            tally.failed = True
            return


def _open_readonly(path: Path) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        conn.execute("PRAGMA writable_schema = ON")  # a bad schema row must not hide the rest
    except sqlite3.Error as error:
        log.info("Cannot open %s: %s", path, error)
        return None
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        log.info("Cannot read %s as it is: %s", path, error)
        conn.close()
        return None
    return conn


def _fresh_header(page_size: int, pages: int) -> bytes:
    """A plain SQLite header (rollback journal, UTF-8, schema format 4) for ``pages`` pages."""
    header = bytearray(100)
    header[0:16] = b"SQLite format 3\x00"
    header[16:18] = (1 if page_size == 65536 else page_size).to_bytes(2, "big")
    header[18:20] = b"\x01\x01"
    header[21:24] = b"\x40\x20\x20"
    for offset, value in ((24, 1), (28, pages), (40, 1), (44, 4), (56, 1), (92, 1),
                          (96, 3_040_001)):
        header[offset:offset + 4] = value.to_bytes(4, "big")
    return bytes(header)


def with_rebuilt_header(path: Path, work: Path) -> sqlite3.Connection | None:
    """A copy of ``path`` in ``work`` with its first 100 bytes rebuilt, opened; ``None`` if no
    page size makes a readable database of it (the schema page is gone too)."""
    try:
        data = bytearray(path.read_bytes())
    except OSError:
        return None
    if len(data) < 512 or data.startswith(b"SQLite format 3\x00"):
        return None
    for page_size in _PAGE_SIZES:
        if len(data) < page_size:
            continue
        data[:100] = _fresh_header(page_size, len(data) // page_size)
        copy = work / f"header-{page_size}.sqlite3"
        copy.write_bytes(data)
        conn = _open_readonly(copy)
        if conn is not None:
            try:
                if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'messages'").fetchone():
                    return conn
            except sqlite3.DatabaseError:
                pass
            conn.close()
    return None


def with_sqlite_recover(path: Path, work: Path) -> sqlite3.Connection | None:
    """The rows SQLite's own recovery (``sqlite3 FILE .recover``) finds, in a database in
    ``work``; ``None`` where the ``sqlite3`` shell is not installed or finds nothing."""
    shell = shutil.which("sqlite3")
    if shell is None:
        return None
    recovered = work / "recovered.sqlite3"
    try:
        # -readonly: the kept file stays as it was (no WAL replay or checkpoint into it).
        dump = subprocess.run([shell, "-readonly", str(path), ".recover"], capture_output=True,
                              timeout=RECOVER_TIMEOUT_S, check=False)
        subprocess.run([shell, str(recovered)], input=dump.stdout, capture_output=True,
                       timeout=RECOVER_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        log.info("SQLite's recovery could not run on %s: %s", path, error)
        return None
    return _open_readonly(recovered) if recovered.exists() else None


def sources(path: Path, work: Path) -> Iterator[sqlite3.Connection]:
    """Connections to read the damaged ``path`` through, best first (see the module's doc);
    each is opened only when the caller asks for the next (SQLite's recovery takes a while)."""
    if not path.is_file():
        return
    for opener in (_open_readonly, lambda p: with_rebuilt_header(p, work),
                   lambda p: with_sqlite_recover(p, work)):
        conn = opener(path)
        if conn is not None:
            yield conn


def _time(value: object, fallback: int) -> int:
    # Any int SQLite holds is accepted; models.ms_to_datetime reads one out of range as the epoch.
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def clean_conversation(row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A salvaged conversation row (:data:`CONVERSATION_FIELDS`) fit to insert; ``None`` when
    it has no usable id."""
    if not isinstance(row[0], str) or not row[0]:
        return None
    now = time.time_ns() // 1_000_000
    created = _time(row[2], now)
    return (row[0], _text(row[1]), created, _time(row[3], created), _text(row[4]),
            _text(row[5]), _text(row[6]) or "{}", _text(row[7]), int(bool(row[8])),
            int(bool(row[9])))


def clean_message(row: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A salvaged message row (:data:`MESSAGE_FIELDS`) fit to insert; ``None`` when it has no
    usable id or conversation."""
    if not isinstance(row[0], str) or not row[0] or not isinstance(row[1], str) or not row[1]:
        return None
    now = time.time_ns() // 1_000_000
    created = _time(row[6], now)
    role = row[3] if row[3] in ROLES else "user"
    status = row[5] if row[5] in STATUSES else "interrupted"
    if status == "streaming":  # its writer is gone: the file was set aside
        status = "interrupted"
    return (row[0], row[1], _text(row[2]), role, _text(row[4]) or "", status, created,
            _time(row[7], created), _text(row[8]), _text(row[9]))


def scanned_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Conversation and message rows (:data:`CONVERSATION_FIELDS`, :data:`MESSAGE_FIELDS`)
    found by scanning the pages of ``path`` (core/store/page_scan.py), told apart by shape."""
    conversations: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    for _rowid, values in page_scan.scan_table_rows(path):
        if len(values) < 9 or values[0] is not None or not isinstance(values[1], str):
            continue
        padded = [*values, *([None] * (13 - len(values)))]
        if (len(values) >= 11 and isinstance(values[2], str) and values[4] in ROLES
                and values[6] in STATUSES and isinstance(values[7], int)):
            messages.append(tuple(padded[1:11]))
        elif (len(values) <= 12 and isinstance(values[3], int) and isinstance(values[4], int)
              and isinstance(values[7], str)):
            conversations.append((*padded[1:9], padded[9] or 0, padded[10] or 0))
    return conversations, messages
