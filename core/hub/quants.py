"""A repository's GGUF files grouped by quantization: what a quant picker offers.

A split set (``M-Q8_0-00001-of-00003.gguf`` …) and an old-style ``.partXofY`` set are one entry
with their summed size. Vision projectors (``mmproj…``) are kept as entries of kind ``mmproj``,
labelled, never offered as a model. The quantization label comes from the file name
(``Q4_K_M``, ``IQ2_XXS``, ``F16`` …), since that is all a listing says; the header says more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from ..downloads.naming import PIECE_RE, SPLIT_RE

FileKind = Literal["model", "mmproj"]
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|[BM]?F(?:16|32)|BF16|TQ\d_\d)(?![A-Za-z0-9])",
    re.IGNORECASE)
_MMPROJ_RE = re.compile(r"mmproj|vision|clip|projector", re.IGNORECASE)


@dataclass(frozen=True)
class QuantFile:
    """One entry of the picker: a file, or every part of a split set, with the summed size.

    ``name``: the file a user opens (part 1 of a split set; the joined file of pieces).
    ``files``: the repository paths to download, in order.
    """

    name: str
    quant: str
    files: tuple[str, ...]
    size: int
    kind: FileKind = "model"

    @property
    def parts(self) -> int:
        return len(self.files)

    def bits_per_weight(self, parameters: int | None) -> float | None:
        """Bits per weight from the size and the parameter count (None when unknown)."""
        if not parameters:
            return None
        return self.size * 8 / parameters


def quant_label(name: str) -> str:
    """The quantization a file name says (``Q4_K_M``), upper case; "?" when it says none."""
    stem = PurePosixPath(name).name
    found = _QUANT_RE.findall(stem.replace(".gguf", " "))
    return found[-1].upper() if found else "?"


def group_files(files: Iterable[tuple[str, int]]) -> list[QuantFile]:
    """The GGUF entries of ``files`` (path, size): model entries sorted by size, then mmproj.

    Files that are not GGUF are left out. A split or piece set with a part missing is still one
    entry (its download then says which part is missing).
    """
    sets: dict[str, list[tuple[int, str, int]]] = {}
    for path, size in files:
        base = PurePosixPath(path).name
        folder = str(PurePosixPath(path).parent)
        prefix = "" if folder == "." else folder + "/"
        if split := SPLIT_RE.match(base):
            key, no = f"{prefix}{split['stem']}-00001-of-{split['count']}.gguf", int(split["no"])
        elif piece := PIECE_RE.match(base):
            key, no = prefix + piece["target"], int(piece["no"])
        elif base.lower().endswith(".gguf"):
            key, no = path, 1
        else:
            continue
        sets.setdefault(key, []).append((no, path, size))
    entries = []
    for key, members in sets.items():
        members.sort()
        kind: FileKind = "mmproj" if _MMPROJ_RE.search(PurePosixPath(key).name) else "model"
        entries.append(QuantFile(key, quant_label(key), tuple(p for _, p, _ in members),
                                 sum(s for _, _, s in members), kind))
    entries.sort(key=lambda e: (e.kind != "model", e.size, e.name))
    return entries


def find_quant(entries: Iterable[QuantFile], quant: str) -> QuantFile | None:
    """The model entry whose quantization is ``quant`` (case-insensitive); of several (different
    folders or variants), the smallest. None when there is none."""
    wanted = quant.upper()
    matches = [e for e in entries if e.kind == "model" and e.quant == wanted]
    return min(matches, key=lambda e: e.size) if matches else None
