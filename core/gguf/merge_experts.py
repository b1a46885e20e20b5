"""Rewrite a Dec-2023 Mixtral GGUF (one tensor per expert) into today's layout (merged experts).

Mixtral files converted before April 2024 (llama.cpp pull request 6387) store each expert as its
own tensor, ``blk.N.ffn_gate.E.weight``. The llama.cpp that llama-cpp-python ships today loads
only the merged layout, ``blk.N.ffn_gate_exps.weight`` of shape ``[n_embd, n_ff, n_expert]``,
and refuses the old files with "missing tensor 'blk.0.ffn_down_exps.weight'" (llama.cpp issue
10244). Those files are still the most downloaded Mixtral GGUFs, so this module converts one in a
single pass, without decoding anything:

* a merged tensor is its experts' data one after the other (the expert is the outermost
  dimension), so the quantized bytes are copied as they are;
* the metadata is copied byte for byte; only the tensor table is written again;
* runs of zero bytes become holes in the new file (what a sparse source has stays sparse);
* the new file is written beside the target as ``…​.part`` and renamed only when complete and
  checked, so a cancelled or failed conversion leaves nothing half-written behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import gguf

from ..errors import DeskError, GGUFError, PerExpertModelError
from ..i18n import N_
from ..units import format_bytes
from .validation import GGUFHeader, RawTensor, read_header

if TYPE_CHECKING:
    from .model_file import ModelFacts

__all__ = ["MergeCancelledError", "MergePlan", "MergeSpaceError", "is_per_expert", "merge_experts",
           "merged_path", "plan_merge", "refuse_per_expert"]

# TheBloke's per-expert tensors: "blk.3.ffn_gate.5.weight".
_ONE_EXPERT = re.compile(r"^blk\.(?P<layer>\d+)\.ffn_(?P<kind>gate|up|down)\.(?P<expert>\d+)\."
                         r"(?P<suffix>weight)$")
_CHUNK = 16 << 20
_ZEROS = bytes(_CHUNK)


class MergeCancelledError(DeskError, InterruptedError):
    """Raised when a conversion is stopped before it completes; nothing was left behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(N_("The conversion of {path} was stopped; nothing was written."),
                         path=str(path))


class MergeSpaceError(DeskError, OSError):
    """Raised when the disk cannot hold the converted file: checked before writing (``free`` is
    less than ``needed``), or the disk filled up while writing (the partial file is removed)."""

    def __init__(self, folder: Path, needed: int, free: int) -> None:
        self.needed = needed
        self.free = free
        super().__init__(N_("Not enough disk space in {folder} for the converted model: it needs "
                            "{needed}, {free} is free. Free some space and convert again."),
                         folder=str(folder), needed=format_bytes(needed), free=format_bytes(free))


@dataclass(frozen=True)
class _OutTensor:
    """One tensor of the new file: its name, GGUF-order dims, type and the source pieces."""

    name: str
    dims: tuple[int, ...]
    ggml_type: str
    pieces: tuple[RawTensor, ...]

    @property
    def n_bytes(self) -> int:
        return sum(piece.n_bytes for piece in self.pieces)


@dataclass(frozen=True)
class MergePlan:
    """What a conversion will write: ``tensors`` (in the source's order, each group of experts
    merged where its first expert stood), ``merged_groups`` (how many groups were merged) and
    ``data_bytes`` (the tensor data to copy)."""

    header: GGUFHeader
    tensors: tuple[_OutTensor, ...]
    merged_groups: int

    @property
    def data_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def is_per_expert(names: Iterable[str]) -> bool:
    """Whether tensors named ``names`` store one tensor per expert (``blk.N.ffn_up.E.weight``)."""
    return any(_ONE_EXPERT.match(name) for name in names)


def refuse_per_expert(facts: ModelFacts) -> None:
    """Refuse a model that this llama.cpp cannot load because it stores one tensor per expert.

    Raises:
        PerExpertModelError: it does; the message says how to convert it.
    """
    if is_per_expert(t.name for t in facts.tensors):
        raise PerExpertModelError(facts.path, format_bytes(facts.file_size))


def merged_path(source: Path) -> Path:
    """Where the merged copy of ``source`` goes by default: ``name.merged-experts.gguf``, beside
    it."""
    return source.with_name(f"{source.stem}.merged-experts.gguf")


def plan_merge(source: Path | str) -> MergePlan:
    """Read ``source``'s header and work out the merged tensor table.

    Raises:
        ModelFileNotFoundError, GGUFError: ``source`` is missing or not a GGUF file.
        GGUFError: it has no per-expert tensors (nothing to convert), or its experts are
            incomplete or disagree in type or shape.
    """
    header = read_header(source)
    groups: dict[tuple[int, str], list[tuple[int, RawTensor]]] = {}
    for tensor in header.tensors:
        if m := _ONE_EXPERT.match(tensor.name):
            groups.setdefault((int(m["layer"]), m["kind"]), []).append((int(m["expert"]), tensor))
    if not groups:
        raise GGUFError(header.path, N_("has no per-expert tensors (blk.N.ffn_gate.E.weight): it "
                                        "needs no conversion"))
    merged: dict[str, _OutTensor] = {}
    for (layer, kind), experts in groups.items():
        merged[f"blk.{layer}.ffn_{kind}.0.weight"] = _merge_group(header.path, layer, kind, experts)
    out: list[_OutTensor] = []
    for tensor in header.tensors:
        if _ONE_EXPERT.match(tensor.name):
            if tensor.name in merged:
                out.append(merged[tensor.name])
            continue
        out.append(_OutTensor(tensor.name, tensor.dims, tensor.ggml_type, (tensor,)))
    return MergePlan(header, tuple(out), len(groups))


def _merge_group(path: Path, layer: int, kind: str,
                 experts: list[tuple[int, RawTensor]]) -> _OutTensor:
    experts.sort(key=lambda item: item[0])
    numbers = [n for n, _ in experts]
    if numbers != list(range(len(numbers))):
        raise GGUFError(path, N_("has an incomplete set of experts in layer {layer} "
                                 "(ffn_{kind}: experts {numbers}); it cannot be converted"),
                        layer=layer, kind=kind, numbers=", ".join(map(str, numbers)))
    first = experts[0][1]
    for _, tensor in experts:
        if tensor.dims != first.dims or tensor.ggml_type != first.ggml_type:
            raise GGUFError(path, N_("has experts of different shapes or types in layer {layer} "
                                     "(ffn_{kind}); it cannot be converted"),
                            layer=layer, kind=kind)
    return _OutTensor(f"blk.{layer}.ffn_{kind}_exps.weight", (*first.dims, len(experts)),
                      first.ggml_type, tuple(tensor for _, tensor in experts))


def _tensor_table(tensors: tuple[_OutTensor, ...], alignment: int) -> tuple[bytes, list[int]]:
    """The encoded tensor table and each tensor's offset in the data section."""
    table = bytearray()
    offsets: list[int] = []
    offset = 0
    for tensor in tensors:
        name = tensor.name.encode()
        table += struct.pack("<Q", len(name)) + name
        table += struct.pack("<I", len(tensor.dims))
        table += struct.pack(f"<{len(tensor.dims)}Q", *tensor.dims)
        table += struct.pack("<IQ", gguf.GGMLQuantizationType[tensor.ggml_type].value, offset)
        offsets.append(offset)
        offset += -(-tensor.n_bytes // alignment) * alignment
    return bytes(table), offsets


def _copy_range(src: BinaryIO, dst: BinaryIO, start: int, length: int,
                advance: Callable[[int], None]) -> None:
    """Copy ``length`` bytes from ``src`` at ``start`` to ``dst``'s position; zero runs become
    holes (``dst`` is seeked over them)."""
    src.seek(start)
    while length > 0:
        chunk = src.read(min(_CHUNK, length))
        if not chunk:
            raise EOFError
        if chunk == _ZEROS[:len(chunk)]:
            dst.seek(len(chunk), os.SEEK_CUR)
        else:
            dst.write(chunk)
        length -= len(chunk)
        advance(len(chunk))


def merge_experts(source: Path | str, target: Path | str | None = None, *,
                  on_progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Path:
    """Write ``source`` (one tensor per expert) as a merged-experts GGUF at ``target``.

    ``target`` defaults to :func:`merged_path`. ``on_progress(done, total)`` gets the bytes of
    tensor data copied; ``should_stop()`` is asked between chunks. Returns the new file's path.

    Raises:
        ModelFileNotFoundError, GGUFError: as :func:`plan_merge`; also when ``target`` exists or
            the written file does not read back as a GGUF with the merged tensors.
        MergeSpaceError: the target's disk has less free space than the new file needs (checked
            first) or filled up while writing.
        MergeCancelledError: ``should_stop()`` said so.
        OSError: reading the source or writing the target failed otherwise.
    """
    plan = plan_merge(source)
    header = plan.header
    target = merged_path(header.path) if target is None else Path(target)
    if target.exists():
        raise GGUFError(target, N_("already exists; choose another name or remove it first"))
    table, offsets = _tensor_table(plan.tensors, header.alignment)
    start = -(-(header.table_offset + len(table)) // header.alignment) * header.alignment
    total_size = start + (offsets[-1] + plan.tensors[-1].n_bytes if offsets else 0)
    free = shutil.disk_usage(target.parent).free
    if free < total_size:
        raise MergeSpaceError(target.parent, total_size, free)
    partial = target.with_name(target.name + ".part")
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, plan.data_bytes)
        if should_stop is not None and should_stop():
            raise MergeCancelledError(header.path)

    try:
        with header.path.open("rb") as src, partial.open("wb") as dst:
            dst.write(b"GGUF" + struct.pack("<IQQ", header.version, len(plan.tensors),
                                            _kv_count(src)))
            src.seek(24)
            dst.write(src.read(header.table_offset - 24))
            dst.write(table)
            for tensor, offset in zip(plan.tensors, offsets, strict=True):
                dst.seek(start + offset)
                for piece in tensor.pieces:
                    _copy_range(src, dst, piece.offset, piece.n_bytes, advance)
            dst.truncate(total_size)
            dst.flush()
            os.fsync(dst.fileno())
    except EOFError:
        partial.unlink(missing_ok=True)
        raise GGUFError(header.path, N_("ended while it was being converted; the file is "
                                        "incomplete")) from None
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MergeSpaceError(target.parent, total_size,
                                  shutil.disk_usage(target.parent).free) from None
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _check_written(partial, plan)
    partial.replace(target)
    return target


def _kv_count(src: BinaryIO) -> int:
    src.seek(16)
    return int(struct.unpack("<Q", src.read(8))[0])


def _check_written(partial: Path, plan: MergePlan) -> None:
    """Read the new file back: the same metadata, the merged tensor table, nothing per expert."""
    try:
        written = read_header(partial)
    except GGUFError:
        partial.unlink(missing_ok=True)
        raise
    expected = [(t.name, t.dims, t.ggml_type, t.n_bytes) for t in plan.tensors]
    actual = [(t.name, t.dims, t.ggml_type, t.n_bytes) for t in written.tensors]
    if actual != expected or written.metadata.keys() != plan.header.metadata.keys():
        partial.unlink(missing_ok=True)
        raise GGUFError(partial, N_("did not read back as written; the conversion failed"))
