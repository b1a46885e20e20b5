"""Rows read straight off the pages of a damaged SQLite file, without its b-tree.

When the pages above a table's leaves are lost (a file cut short keeps early leaves but loses the
interior pages written later), SQLite cannot reach rows that are still on disk. Like the
``.recover`` command of SQLite's shell, :func:`scan_table_rows` walks every page of the file,
takes each table-leaf page (type 13) and decodes its cells' records (the file format's
"record format"); a cell whose payload spills onto overflow pages is skipped, and so are the
pages on the freelist, so that deleted conversations do not come back. The caller tells
rows of one table from another by their shape (see core/store/salvage.py).

File format: https://www.sqlite.org/fileformat2.html (b-tree pages, cells, records, varints).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Final

LEAF_TABLE_PAGE: Final = 13
HEADER_SIZE: Final = 100

Value = None | int | float | str | bytes


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """The varint at ``offset`` and the offset after it. Raises IndexError past the end."""
    value = 0
    for index in range(8):
        byte = data[offset + index]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, offset + index + 1
    return (value << 8) | data[offset + 8], offset + 9


_INT_SIZES: Final = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def decode_record(payload: bytes) -> list[Value] | None:
    """The values of one record; ``None`` if it is not a well-formed record."""
    try:
        header_size, offset = _varint(payload, 0)
        types = []
        while offset < header_size:
            serial, offset = _varint(payload, offset)
            types.append(serial)
        if offset != header_size:
            return None
        values: list[Value] = []
        body = header_size
        for serial in types:
            if serial == 0:
                values.append(None)
            elif serial in _INT_SIZES:
                size = _INT_SIZES[serial]
                if body + size > len(payload):
                    return None
                values.append(int.from_bytes(payload[body:body + size], "big", signed=True))
                body += size
            elif serial == 7:
                values.append(struct.unpack(">d", payload[body:body + 8])[0])
                body += 8
            elif serial in (8, 9):
                values.append(serial - 8)
            elif serial >= 12:
                size = (serial - 12) // 2
                if body + size > len(payload):
                    return None
                chunk = payload[body:body + size]
                values.append(chunk if serial % 2 == 0 else chunk.decode("utf-8", "replace"))
                body += size
            else:
                return None
        return values if body == len(payload) else None
    except (IndexError, struct.error):
        return None


def free_pages(data: bytes, page_size: int) -> set[int]:
    """The page numbers (from 1) on the file's freelist, as far as it can be followed."""
    free: set[int] = set()
    if not data.startswith(b"SQLite format 3\x00"):
        return free
    trunk = int.from_bytes(data[32:36], "big")
    while trunk and trunk not in free and trunk * page_size <= len(data):
        free.add(trunk)
        page = data[(trunk - 1) * page_size:trunk * page_size]
        count = min(int.from_bytes(page[4:8], "big"), page_size // 4 - 2)
        free.update(int.from_bytes(page[8 + 4 * i:12 + 4 * i], "big") for i in range(count))
        trunk = int.from_bytes(page[0:4], "big")
    return free


def scan_table_rows(path: Path) -> Iterator[tuple[int, list[Value]]]:
    """``(rowid, values)`` for every whole record on the table-leaf pages of ``path``.

    The page size comes from the header, or 4096 when the header is gone. Never raises for
    damage; an unreadable file yields nothing.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return
    page_size = 4096
    if data.startswith(b"SQLite format 3\x00") and len(data) >= HEADER_SIZE:
        raw = int.from_bytes(data[16:18], "big")
        page_size = 65536 if raw == 1 else raw if raw >= 512 and raw & (raw - 1) == 0 else 4096
    reserved = data[20] if len(data) > 20 else 0
    usable = page_size - reserved
    free = free_pages(data, page_size)
    for start in range(0, len(data) - page_size + 1, page_size):
        if start // page_size + 1 in free:
            continue  # deleted rows must not come back
        page = data[start:start + page_size]
        header = HEADER_SIZE if start == 0 else 0
        if page[header] != LEAF_TABLE_PAGE:
            continue
        cells = int.from_bytes(page[header + 3:header + 5], "big")
        for index in range(cells):
            pointer_at = header + 8 + 2 * index
            cell = int.from_bytes(page[pointer_at:pointer_at + 2], "big")
            try:
                size, offset = _varint(page, cell)
                rowid, offset = _varint(page, offset)
            except IndexError:
                continue
            if size > usable - 35 or offset + size > usable:
                continue  # spills onto overflow pages (or is garbage)
            values = decode_record(page[offset:offset + size])
            if values is not None:
                yield (rowid - (1 << 64) if rowid >= 1 << 63 else rowid), values
