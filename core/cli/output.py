"""Small helpers shared by the CLI commands for printing."""

from __future__ import annotations

import json
import sys
from typing import Any

from mixtral_desk.core.gguf.model_file import display_width


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (non-ASCII kept readable)."""
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def _pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    """Print rows as a plain left-aligned table with a header line (wide characters, as in
    Chinese headers and titles, count as two columns)."""
    widths = [max(display_width(h), *(display_width(r[i]) for r in rows)) if rows
              else display_width(h) for i, h in enumerate(headers)]
    line = "  ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True))
    print(line.rstrip())
    for row in rows:
        print("  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
