"""Read and check the header of one GGUF file without touching its tensor data.

This is the low layer under :mod:`.model_file`: it parses the header (magic,
version, counts, metadata key/values, tensor table) with plain bounded reads, checks everything
llama.cpp would check before it maps the weights, and turns every problem into one
:class:`~mixtral_desk.core.errors.GGUFError` naming the file and the problem.

Why not ``gguf.GGUFReader``: it parses metadata arrays one element at a time through
``numpy.memmap`` slicing (about 40 µs per element), so Mixtral's 32000-token vocabulary takes ~4 s
and a Llama-3 vocabulary far longer; on malformed input it raises ``IndexError``/``KeyError``/
``ValueError`` from deep inside, or silently clips reads that run past the end of the file; and a
memory map of a file that shrinks underneath it (a download being restarted) kills the process
with SIGBUS. Here every read is bounds-checked against the file size, arrays of scalars are
skipped in O(1), and only the header bytes are ever read. The format constants (value types, ggml
types and their block sizes, file types) still come from the ``gguf`` package.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

import gguf

from ..errors import GGUFError, ModelFileNotFoundError, UserText
from ..i18n import N_
from ..units import format_bytes

HEADER_SIZE = 24  # magic, version (u32), tensor count (u64), metadata count (u64)
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_STRING_BYTES = 64 * 1024 * 1024  # chat templates are kilobytes; anything this long is garbage
MAX_ARRAY_ITEMS = 1 << 24  # the largest vocabularies have ~262k tokens
MAX_TENSOR_NAME = 63  # llama.cpp's GGML_MAX_NAME is 64 including the terminating NUL
MAX_DIMS = 4  # GGML_MAX_DIMS
DECODED_SCALAR_ARRAY_ITEMS = 4096  # scalar arrays up to this length are decoded (per-layer values)
_CHUNK = 1 << 20
_U64 = struct.Struct("<Q")

_SCALAR_FORMATS: dict[gguf.GGUFValueType, str] = {
    gguf.GGUFValueType.UINT8: "B", gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H", gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I", gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.UINT64: "Q", gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT32: "f", gguf.GGUFValueType.FLOAT64: "d",
    gguf.GGUFValueType.BOOL: "?",
}


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array. ``items`` is ``None`` when it was skipped rather than decoded."""

    item_type: str  # GGUFValueType name, e.g. "STRING", "INT32"
    count: int
    items: tuple[int | float | bool | str, ...] | None = None


MetadataValue: TypeAlias = int | float | bool | str | GGUFArray


@dataclass(frozen=True)
class RawTensor:
    """One entry of the tensor table. ``dims`` is in GGUF order (``ne[0]``, the row, first)."""

    name: str
    dims: tuple[int, ...]
    ggml_type: str
    n_elements: int
    n_bytes: int
    offset: int  # absolute byte offset of the data in this file


@dataclass(frozen=True)
class GGUFHeader:
    """Everything in a GGUF file except the tensor data."""

    path: Path
    file_size: int
    version: int
    metadata: dict[str, MetadataValue]
    tensors: tuple[RawTensor, ...]
    alignment: int
    data_offset: int
    table_offset: int = 0  # where the tensor table begins (the end of the metadata)


def _q(text: str) -> str:
    """Quote a name from the file for a message: control bytes escaped, at most 80 characters."""
    return repr(text if len(text) <= 80 else text[:80] + "…")


class _ProblemError(Exception):
    """A problem with the file; becomes ``GGUFError(path, self.problem)``.

    ``problem``: an ``N_()``-marked predicate about the file and its placeholders' values.
    """

    def __init__(self, problem: str | UserText, /, **values: object) -> None:
        self.problem = problem if isinstance(problem, UserText) else UserText(problem, **values)
        super().__init__(self.problem.english())


class _EndOfFileError(Exception):
    """A read ran past the end of the file."""


# --- reading ----------------------------------------------------------------------------------

class _Source:
    """Forward reads through a window of the file; bytes that are skipped are never read."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self.size = size
        self._buf = b""
        self._base = 0  # file offset of self._buf[0]
        self.pos = 0

    def _fill(self, start: int, end: int) -> None:
        """Make the file's bytes [start, end) available in the window."""
        if end > self.size:
            raise _EndOfFileError
        if start >= self._base and end <= self._base + len(self._buf):
            return
        self._file.seek(start)
        data = self._file.read(min(max(end - start, _CHUNK), self.size - start))
        if len(data) < end - start:  # the file shrank while we read it
            raise _EndOfFileError
        self._buf, self._base = data, start

    def _take(self, n: int) -> int:
        """Advance past ``n`` bytes; return their index in the window."""
        start = self.pos
        self._fill(start, start + n)
        self.pos = start + n
        return start - self._base

    def unpack(self, fmt: str) -> tuple[int | float | bool, ...]:
        i = self._take(struct.calcsize("<" + fmt))
        return struct.unpack_from("<" + fmt, self._buf, i)

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def u64(self) -> int:
        return int(self.unpack("Q")[0])

    def raw(self, n: int) -> bytes:
        i = self._take(n)
        return self._buf[i:i + n]

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _EndOfFileError
        self.pos += n

    def string(self, what: UserText) -> str:
        n = self.u64()
        if n > MAX_STRING_BYTES:
            raise _ProblemError(N_("corrupt header: {what} claims a string of {size:,} bytes"),
                                what=what, size=n)
        return self.raw(n).decode("utf-8", errors="replace")

    def strings(self, count: int, keep: bool, what: UserText) -> list[str]:
        """Read (``keep``) or skip ``count`` strings; the hot loop of big vocabularies."""
        items: list[str] = []
        pos, base, buf = self.pos, self._base, self._buf
        for i in range(count):
            if pos + 8 > base + len(buf):
                self._fill(pos, pos + 8)
                base, buf = self._base, self._buf
            n = _U64.unpack_from(buf, pos - base)[0]
            pos += 8
            if n > MAX_STRING_BYTES:
                raise _ProblemError(N_("corrupt header: item {index} of {what} claims a string "
                                       "of {size:,} bytes"), index=i, what=what, size=n)
            end = pos + n
            if end > self.size:
                raise _EndOfFileError
            if keep:
                if end > base + len(buf):
                    self._fill(pos, end)
                    base, buf = self._base, self._buf
                items.append(buf[pos - base:end - base].decode("utf-8", errors="replace"))
            pos = end
        self.pos = pos
        return items


class _HeaderParser:
    """Parses one file's header; ``where`` says what it was reading when it stopped."""

    def __init__(self, source: _Source, decode_string_arrays: frozenset[str]) -> None:
        self.src = source
        self.where = UserText(N_("the file header"))
        self.decode_string_arrays = decode_string_arrays

    def value(self, key: str, vtype: int) -> MetadataValue:
        try:
            t = gguf.GGUFValueType(vtype)
        except ValueError:
            raise _ProblemError(N_("corrupt header: metadata key {key} has unknown value type "
                                   "{type}"), key=_q(key), type=vtype) from None
        if t == gguf.GGUFValueType.STRING:
            return self.src.string(_metadata_key(key))
        if t == gguf.GGUFValueType.ARRAY:
            return self.array(key)
        return self.src.unpack(_SCALAR_FORMATS[t])[0]

    def array(self, key: str) -> GGUFArray:
        item_raw, count = self.src.u32(), self.src.u64()
        if count > MAX_ARRAY_ITEMS:
            raise _ProblemError(N_("corrupt header: metadata key {key} claims an array of "
                                   "{count:,} items (more than {limit:,})"),
                                key=_q(key), count=count, limit=MAX_ARRAY_ITEMS)
        try:
            item = gguf.GGUFValueType(item_raw)
        except ValueError:
            raise _ProblemError(N_("corrupt header: metadata key {key} is an array of unknown "
                                   "type {type}"), key=_q(key), type=item_raw) from None
        if item == gguf.GGUFValueType.ARRAY:
            raise _ProblemError(N_("metadata key {key} nests arrays, which llama.cpp does not "
                                   "read"), key=_q(key))
        if item == gguf.GGUFValueType.STRING:
            return self.string_array(key, count)
        fmt = _SCALAR_FORMATS[item]
        if count <= DECODED_SCALAR_ARRAY_ITEMS:
            return GGUFArray(item.name, count, self.src.unpack(f"{count}{fmt}"))
        self.src.skip(count * struct.calcsize("<" + fmt))
        return GGUFArray(item.name, count)

    def string_array(self, key: str, count: int) -> GGUFArray:
        keep = key in self.decode_string_arrays
        items = self.src.strings(count, keep, _metadata_key(key))
        return GGUFArray(gguf.GGUFValueType.STRING.name, count, tuple(items) if keep else None)

    def metadata(self, n_kv: int) -> dict[str, MetadataValue]:
        kv: dict[str, MetadataValue] = {}
        for i in range(n_kv):
            self.where = UserText(N_("metadata entry {number} of {count}"), number=i + 1,
                                  count=n_kv)
            key = self.src.string(self.where)
            self.where = _metadata_key(key)
            if key in kv:
                raise _ProblemError(N_("corrupt header: metadata key {key} appears twice"),
                                    key=_q(key))
            kv[key] = self.value(key, self.src.u32())
        return kv

    def tensor_info(self, i: int, n_tensors: int) -> tuple[str, tuple[int, ...], int, int]:
        self.where = UserText(N_("tensor info {number} of {count}"), number=i + 1,
                              count=n_tensors)
        name = self.src.string(self.where)
        self.where = UserText(N_("the tensor info of {name}"), name=_q(name))
        if len(name.encode()) > MAX_TENSOR_NAME:
            raise _ProblemError(N_("tensor name {name} is longer than llama.cpp's limit of "
                                   "{limit} bytes"), name=_q(name), limit=MAX_TENSOR_NAME)
        n_dims = self.src.u32()
        if n_dims > MAX_DIMS:
            raise _ProblemError(N_("corrupt tensor table: tensor {name} claims {count} "
                                   "dimensions (at most {limit})"),
                                name=_q(name), count=n_dims, limit=MAX_DIMS)
        dims = tuple(int(d) for d in self.src.unpack(f"{n_dims}Q"))
        raw_type = self.src.u32()
        offset = self.src.u64()
        return name, dims, raw_type, offset


# --- checks -----------------------------------------------------------------------------------

def _metadata_key(key: str) -> UserText:
    return UserText(N_("metadata key {key}"), key=_q(key))


#: How a Git LFS pointer file begins (the spec's version line; the rest names its object).
LFS_POINTER_START = b"version https://git-lfs"


def _not_gguf_problem(head: bytes) -> UserText:
    """Explain what a file with the wrong magic most likely is."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:1024]:
        return UserText(N_("is a web page (HTML) saved instead of a model, likely a failed "
                           "download (an error or login page); download the model again"))
    if text.startswith(LFS_POINTER_START):
        return UserText(N_("is a Git LFS pointer (a small text file that stands in for the real "
                           "model), not the model itself; fetch the real file (git lfs pull, or "
                           "the Hub's download link)"))
    if text.startswith((b"{", b"[")):
        first = text[:120].decode("utf-8", errors="replace").splitlines()[0]
        return UserText(N_("contains JSON text ({text}), not a model; likely an error response "
                           "saved by a failed download"), text=repr(first))
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg", b"algg"):
        return UserText(N_("is an old GGML/GGJT model from before GGUF (August 2023); llama.cpp "
                           "only loads GGUF files now, so download a GGUF version"))
    if head[:4] == b"PK\x03\x04":
        return UserText(N_("is a ZIP archive (perhaps a PyTorch checkpoint), not a GGUF model"))
    if len(head) >= 9 and head[8:9] == b"{":
        return UserText(N_("looks like a safetensors file (Hugging Face weights), not GGUF; "
                           "download a GGUF version or convert it with llama.cpp's "
                           "convert_hf_to_gguf.py"))
    return UserText(N_("is not a GGUF file: it starts with bytes {bytes} instead of the GGUF "
                       "signature 47 47 55 46 ('GGUF')"), bytes=head[:4].hex(" "))


def _check_fixed_header(head: bytes, file_size: int) -> tuple[int, int, int]:
    """Check magic, version and counts; return (version, n_tensors, n_kv).

    Raises:
        _ProblemError: the first 24 bytes do not start a GGUF file this app can read.
    """
    if head[:4] != b"GGUF" and not (len(head) < 4 and b"GGUF".startswith(head)):
        raise _ProblemError(_not_gguf_problem(head))
    if file_size < HEADER_SIZE:
        raise _ProblemError(N_("is too short to be a GGUF model: {size} bytes, while the header "
                               "alone takes {header}; the download is incomplete"),
                            size=file_size, header=HEADER_SIZE)
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", head, 4)
    if version not in SUPPORTED_VERSIONS:
        swapped = struct.unpack(">I", head[4:8])[0]
        if swapped in SUPPORTED_VERSIONS:
            raise _ProblemError(N_("is a big-endian GGUF file (made for IBM s390x); llama.cpp on "
                                   "this computer cannot load it"))
        if version == 1:
            raise _ProblemError(N_("is GGUF version 1 (from August 2023), which llama.cpp no "
                                   "longer loads; download a newer conversion"))
        raise _ProblemError(N_("has unsupported GGUF version {version} (this app reads versions "
                               "2 and 3); the file is corrupt or newer than this app"),
                            version=version)
    if n_tensors > MAX_TENSORS:
        raise _ProblemError(N_("corrupt header: it claims {count:,} tensors (more than "
                               "{limit:,})"), count=n_tensors, limit=MAX_TENSORS)
    if n_kv > MAX_KV:
        raise _ProblemError(N_("corrupt header: it claims {count:,} metadata entries (more than "
                               "{limit:,})"), count=n_kv, limit=MAX_KV)
    return int(version), int(n_tensors), int(n_kv)


def _alignment(metadata: dict[str, MetadataValue]) -> int:
    value = metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise _ProblemError(N_("corrupt header: general.alignment is {value}, not a power of "
                               "two"), value=repr(value))
    return value


def _tensor(name: str, dims: tuple[int, ...], raw_type: int, offset: int) -> RawTensor:
    """Build a tensor entry with its byte size; ``offset`` is still relative to the data."""
    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise _ProblemError(N_("tensor {name} has unknown ggml type {type}; the file is corrupt "
                               "or needs a newer version of llama.cpp"),
                            name=_q(name), type=raw_type) from None
    n_elements = 1
    for d in dims:
        n_elements *= d
    if n_elements >= 1 << 62:
        raise _ProblemError(N_("corrupt tensor table: tensor {name} has impossible shape "
                               "{shape}"), name=_q(name), shape=str(list(dims)))
    if dims and dims[0] % block:
        raise _ProblemError(N_("corrupt tensor table: tensor {name} has rows of {values} values, "
                               "not a multiple of the {type} block size {block}"),
                            name=_q(name), values=dims[0], type=qtype.name, block=block)
    return RawTensor(name, dims, qtype.name, n_elements, n_elements // block * type_size, offset)


def _place_tensors(infos: list[RawTensor], data_offset: int, alignment: int) -> list[RawTensor]:
    """Check the data layout as llama.cpp does and make offsets absolute.

    Raises:
        _ProblemError: a duplicate tensor name, or offsets that are not consecutive and aligned.
    """
    seen: set[str] = set()
    expected = 0
    placed = []
    for t in infos:
        if t.name in seen:
            raise _ProblemError(N_("corrupt tensor table: tensor {name} appears twice"),
                                name=_q(t.name))
        seen.add(t.name)
        if t.offset != expected:
            raise _ProblemError(N_("corrupt tensor table: tensor {name} has data offset "
                                   "{offset:,} where {expected:,} was expected"),
                                name=_q(t.name), offset=t.offset, expected=expected)
        expected += -(-t.n_bytes // alignment) * alignment
        placed.append(RawTensor(t.name, t.dims, t.ggml_type, t.n_elements, t.n_bytes,
                                data_offset + t.offset))
    return placed


def _check_complete(tensors: list[RawTensor], file_size: int) -> None:
    """Raise ``_ProblemError`` when the tensor data runs past the end of the file."""
    needed = max((t.offset + t.n_bytes for t in tensors), default=0)
    if needed > file_size:
        missing = needed - file_size
        raise _ProblemError(N_("truncated: {present} of {needed} present ({missing:,} bytes "
                               "missing); the download is incomplete"),
                            present=format_bytes(file_size), needed=format_bytes(needed),
                            missing=missing)


def _parse(file: BinaryIO, path: Path, size: int,
           decode_string_arrays: frozenset[str]) -> GGUFHeader:
    if size == 0:
        raise _ProblemError(N_("is empty (0 bytes); the download or copy did not complete"))
    src = _Source(file, size)
    head = src.raw(min(size, 1024))
    version, n_tensors, n_kv = _check_fixed_header(head, size)
    src.pos = HEADER_SIZE  # back within the window just read
    parser = _HeaderParser(src, decode_string_arrays)
    try:
        metadata = parser.metadata(n_kv)
        table_offset = src.pos
        infos = [_tensor(*parser.tensor_info(i, n_tensors)) for i in range(n_tensors)]
    except _EndOfFileError:
        raise _ProblemError(N_("truncated: the file ends inside its header (while reading "
                               "{where}) after {size:,} bytes; the download is incomplete or the "
                               "file is corrupt"), where=parser.where, size=size) from None
    alignment = _alignment(metadata)
    data_offset = -(-src.pos // alignment) * alignment
    tensors = _place_tensors(infos, data_offset, alignment)
    _check_complete(tensors, size)
    return GGUFHeader(path, size, version, metadata, tuple(tensors), alignment, data_offset,
                      table_offset)


def read_header(path: Path | str,
                decode_string_arrays: frozenset[str] = frozenset()) -> GGUFHeader:
    """Read and check the header of the single GGUF file at ``path``; no tensor data is read.

    String arrays are skipped unless their key is in ``decode_string_arrays``; scalar arrays up
    to :data:`DECODED_SCALAR_ARRAY_ITEMS` items are decoded, longer ones skipped.

    Raises:
        ModelFileNotFoundError: ``path`` does not exist.
        GGUFError: ``path`` is a folder, cannot be read, or is not a complete, well-formed GGUF
            file; the message names the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileNotFoundError(path)
    if path.is_dir():
        raise GGUFError(path, _folder_problem(path))
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            return _parse(file, path, size, decode_string_arrays)
    except _ProblemError as problem:
        raise GGUFError(path, problem.problem) from None
    except PermissionError:
        raise GGUFError(path, N_("cannot be read: permission denied")) from None
    except OSError as error:
        raise GGUFError(path, N_("cannot be read: {error}"),
                        error=str(error.strerror or error)) from None


def _folder_problem(path: Path) -> UserText:
    found = sorted(p.name for p in path.glob("*.gguf"))
    if not found:
        return UserText(N_("is a folder, not a GGUF model file"))
    listed = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
    return UserText(N_("is a folder, not a GGUF model file; pick one of the files in it "
                       "({files})"), files=listed)
