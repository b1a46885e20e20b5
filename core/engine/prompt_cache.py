"""The prompt cache: llama.cpp sequence states with their token lists, in RAM and on disk.

An entry is a token list and the KV state of one sequence after evaluating exactly those tokens
(``llama_state_seq_get_data``). A new prompt restores the entry that shares the **longest common
token prefix** with it; llama.cpp then drops the KV beyond that prefix and evaluates only the rest.

Entries are only valid for the model file, the KV-shaping load options and the llama.cpp build
that made them: :func:`cache_key` hashes those, and a :class:`PromptCache` only ever sees the
entries of its own key (a sub-folder of the cache folder per key on disk). Anything that is not
exactly right is a miss, never a wrong answer.

* **RAM**: least recently used first out, within a byte budget.
* **Disk**: one file per entry (:data:`MAGIC`, :data:`FORMAT_VERSION`, the key, the entry's tag,
  the token count, a CRC-32, the tokens and the state), written atomically (a temporary file,
  then a rename) by a background thread so that a save never delays the next token; least
  recently used (by mtime) first out across all keys, within a byte budget. A file that is
  truncated, corrupt, empty, of another format version or not ours is ignored and removed. A
  failed write (a full disk, a read-only folder) means no save; it is logged at debug level only.

An entry may carry a **tag**: the conversation whose text it was made from
(:func:`conversation_tag`). Deleting a conversation removes its entries (:meth:`PromptCache.forget`
in the engine, :func:`forget_tag` on disk when no engine holds the cache), since they are derived
from its text.

An entry whose tokens are a prefix of a newer entry's is dropped when the newer one is saved:
restoring the longer one and cutting it back gives the same state.

No ``llama_cpp`` import here: the worker computes the states, this module only keeps them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import struct
import threading
import time
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)

MAGIC = b"MDPCACHE"
FORMAT_VERSION = 2
SUFFIX = ".mdpc"
#: magic, format version, key length, tag length, token count, state length, CRC-32 of tokens +
#: state.
_HEADER = struct.Struct("<8sIIIIQI")
_MAX_TAG = 200
_IDENTITY_BYTES = 1 << 20
_STALE_TEMP_S = 3600.0
GIB = 1 << 30
DEFAULT_RAM_BYTES = GIB // 2
MAX_DEFAULT_DISK_BYTES = 8 * GIB


def model_identity(path: Path) -> str:
    """The model file's identity: its size, mtime (ns) and the SHA-256 of its first MiB.

    Raises:
        OSError: the file cannot be read.
    """
    info = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as file:
        digest.update(file.read(_IDENTITY_BYTES))
    return f"{info.st_size}:{info.st_mtime_ns}:{digest.hexdigest()}"


def cache_key(identity: str, kv_settings: Mapping[str, object], engine_version: str) -> str:
    """The key of the entries made by a model (``identity``) loaded with ``kv_settings`` (the load
    options that change the KV cache's contents or layout) under llama.cpp ``engine_version``."""
    parts = [f"format={FORMAT_VERSION}", f"model={identity}", f"engine={engine_version}"]
    parts += [f"{name}={kv_settings[name]!r}" for name in sorted(kv_settings)]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def automatic_disk_budget(folder: Path) -> int:
    """min(8 GiB, 10 % of the free space where ``folder`` is, or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return 0
    return min(MAX_DEFAULT_DISK_BYTES, free // 10)


def conversation_tag(conversation_id: str) -> str:
    """The tag of the cache entries made from conversation ``conversation_id``."""
    return _clean_tag(f"conversation-{conversation_id}")


def _clean_tag(tag: str | None) -> str:
    """``tag`` as stored: printable ASCII, at most :data:`_MAX_TAG` characters ("" for none)."""
    if not tag:
        return ""
    text = "".join(c for c in tag if c.isascii() and c.isprintable())
    return text[:_MAX_TAG]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Hit:
    """A cache entry for a prompt: its tokens, its state, and the prefix it shares with the prompt
    (``prefix`` ≤ ``len(tokens)``; the state covers all of ``tokens``)."""

    tokens: tuple[int, ...]
    state: bytes
    prefix: int
    source: str  # "ram" or "disk"


def _entry_name(tokens: Sequence[int]) -> str:
    return hashlib.sha256(array("i", tokens).tobytes()).hexdigest()[:40]


def _encode(key: str, tag: str, tokens: Sequence[int], state: bytes) -> tuple[bytes, bytes]:
    """The file's header (with the key, the tag and the tokens) and its state part."""
    key_bytes, tag_bytes = key.encode("ascii"), tag.encode("ascii")
    token_bytes = array("i", tokens).tobytes()
    crc = zlib.crc32(state, zlib.crc32(token_bytes))
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(key_bytes), len(tag_bytes), len(tokens),
                          len(state), crc)
    return header + key_bytes + tag_bytes + token_bytes, state


class _BadFileError(Exception):
    """A cache file that is not a valid entry of this key."""


def _read_head(path: Path, key: str | None) -> tuple[tuple[int, ...], int, int, int, str]:
    """The tokens, state length, state offset, CRC and tag of an entry file.

    ``key`` ``None``: accept any key (for folder-wide work such as :func:`forget_tag`).

    Raises:
        _BadFileError: not a valid entry of ``key`` (wrong magic, version, key, size).
        OSError: the file cannot be read (it may be gone).
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        raw = file.read(_HEADER.size)
        if len(raw) != _HEADER.size:
            raise _BadFileError("short header")
        magic, version, key_len, tag_len, n_tokens, state_len, crc = _HEADER.unpack(raw)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise _BadFileError("foreign file or another format version")
        stored_key = file.read(key_len)
        if key is not None and (key_len != len(key) or stored_key != key.encode("ascii")):
            raise _BadFileError("another key")
        if tag_len > _MAX_TAG:
            raise _BadFileError("tag too long")
        tag = file.read(tag_len).decode("ascii", errors="replace")
        offset = _HEADER.size + key_len + tag_len + 4 * n_tokens
        if size != offset + state_len or n_tokens == 0 or state_len == 0:
            raise _BadFileError("truncated or padded")
        tokens = array("i")
        tokens.frombytes(file.read(4 * n_tokens))
        return tuple(tokens), state_len, offset, crc, tag


def _read_state(path: Path, key: str) -> tuple[tuple[int, ...], bytes, str]:
    """An entry file's tokens, state and tag, checked against its CRC.

    Raises:
        _BadFileError, OSError: as :func:`_read_head`; also a CRC mismatch.
    """
    tokens, state_len, offset, crc, tag = _read_head(path, key)
    with path.open("rb") as file:
        file.seek(offset)
        state = file.read(state_len)
    if len(state) != state_len or \
            zlib.crc32(state, zlib.crc32(array("i", tokens).tobytes())) != crc:
        raise _BadFileError("checksum mismatch")
    return tokens, state, tag


def _is_key_folder(path: Path) -> bool:
    """Whether ``path`` is one of the cache's per-key folders (32 hex digits)."""
    name = path.name
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name) and path.is_dir()


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


class PromptCache:
    """Sequence states of one key (see the module docstring), in RAM and in ``folder``.

    ``folder`` ``None``: RAM only. ``disk_bytes`` ``None``: :func:`automatic_disk_budget`.
    Only the engine's main thread calls the public methods; one background thread writes files.
    """

    def __init__(self, key: str, folder: Path | None, *, ram_bytes: int = DEFAULT_RAM_BYTES,
                 disk_bytes: int | None = None) -> None:
        self.key = key
        self.root = folder
        self.folder = folder / key[:32] if folder is not None else None
        self.ram_bytes = max(0, ram_bytes)
        self.disk_bytes = (automatic_disk_budget(folder) if disk_bytes is None else disk_bytes) \
            if folder is not None else 0
        self._ram: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self._tags: dict[tuple[int, ...], str] = {}
        self._ram_used = 0
        self._jobs: queue.Queue[tuple[tuple[int, ...], bytes, str] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.saved_files = 0  # files written (for tests and figures)

    # --- RAM -----------------------------------------------------------------------------------

    @property
    def ram_used(self) -> int:
        """Bytes of state held in RAM."""
        return self._ram_used

    def has(self, tokens: Sequence[int]) -> bool:
        """Whether exactly this token list is held in RAM."""
        return tuple(int(t) for t in tokens) in self._ram

    def ram_entries(self) -> list[tuple[int, ...]]:
        """The token lists held in RAM, least recently used first."""
        return list(self._ram)

    def _ram_drop(self, tokens: tuple[int, ...]) -> None:
        state = self._ram.pop(tokens, None)
        self._tags.pop(tokens, None)
        if state is not None:
            self._ram_used -= len(state)

    def _ram_put(self, tokens: tuple[int, ...], state: bytes, tag: str) -> None:
        self._ram_drop(tokens)
        for other in [t for t in self._ram if len(t) < len(tokens) and tokens[:len(t)] == t]:
            self._ram_drop(other)  # superseded: a prefix of the new entry
        if len(state) > self.ram_bytes:
            return
        while self._ram and self._ram_used + len(state) > self.ram_bytes:
            oldest, old = self._ram.popitem(last=False)
            self._tags.pop(oldest, None)
            self._ram_used -= len(old)
        self._ram[tokens] = state
        self._tags[tokens] = tag
        self._ram_used += len(state)

    # --- saving --------------------------------------------------------------------------------

    def put(self, tokens: Sequence[int], state: bytes, tag: str | None = None) -> None:
        """Keep ``state`` (of a sequence holding exactly ``tokens``): in RAM now, on disk in the
        background. ``tag``: see :func:`conversation_tag`. Never raises for the disk."""
        entry = tuple(int(t) for t in tokens)
        if not entry or not state:
            return
        clean = _clean_tag(tag)
        self._ram_put(entry, state, clean)
        if self.folder is None or len(state) > self.disk_bytes:
            return
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="prompt-cache-writer",
                                             daemon=True)
            self._writer.start()
        self._jobs.put((entry, state, clean))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the queued disk writes are done (``False`` if ``timeout`` ran out)."""
        if self._writer is None:
            return True
        done = threading.Event()

        def wait() -> None:
            self._jobs.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def _write_loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is not None:
                    self._write(*job)
            except Exception:  # a cache never takes the engine down
                _log.debug("prompt cache write failed", exc_info=True)
            finally:
                self._jobs.task_done()

    def _write(self, tokens: tuple[int, ...], state: bytes, tag: str) -> None:
        assert self.folder is not None
        path = self.folder / (_entry_name(tokens) + SUFFIX)
        temp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        head, body = _encode(self.key, tag, tokens, state)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with temp.open("wb") as file:
                file.write(head)
                file.write(body)
            temp.replace(path)
        except OSError as error:
            _remove(temp)
            _log.debug("prompt cache: not saved to %s: %s", path, error)
            return
        self.saved_files += 1
        for other, entry in self._scan():
            if other != path and len(entry) < len(tokens) and tokens[:len(entry)] == entry:
                _remove(other)
        self._evict_disk()

    def _evict_disk(self) -> None:
        """Remove the least recently used files of every key until the folder fits its budget."""
        assert self.root is not None
        files: list[tuple[float, int, Path]] = []
        with contextlib.suppress(OSError):
            for sub in self.root.iterdir():
                if not _is_key_folder(sub):
                    continue
                for path in sub.iterdir():
                    if path.suffix != SUFFIX:
                        continue
                    with contextlib.suppress(OSError):
                        info = path.stat()
                        files.append((info.st_mtime, info.st_size, path))
        used = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if used <= self.disk_bytes:
                break
            _remove(path)
            used -= size

    # --- finding -------------------------------------------------------------------------------

    def _scan(self) -> list[tuple[Path, tuple[int, ...]]]:
        """The entry files of this key with their tokens; bad files are removed on the way."""
        if self.folder is None:
            return []
        found = []
        try:
            paths = list(self.folder.iterdir())
        except OSError:
            return []
        now = time.time()
        for path in paths:
            if path.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > _STALE_TEMP_S:
                        _remove(path)
                continue
            try:
                if path.suffix != SUFFIX:
                    raise _BadFileError("not a cache file")
                tokens = _read_head(path, self.key)[0]
            except _BadFileError as why:
                _log.debug("prompt cache: removing %s (%s)", path, why)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    _remove(path)
                continue
            except OSError:
                continue
            found.append((path, tokens))
        return found

    def lookup(self, tokens: Sequence[int], *, better_than: int = 0,
               max_tokens: int | None = None) -> Hit | None:
        """The entry sharing the longest common prefix with ``tokens``, if that prefix is longer
        than ``better_than``; RAM first, then disk. ``max_tokens``: skip longer entries (they
        would not fit the context)."""
        prompt = [int(t) for t in tokens]
        best: tuple[int, tuple[int, ...]] | None = None
        for entry in self._ram:
            if max_tokens is not None and len(entry) > max_tokens:
                continue
            n = common_prefix(entry, prompt)
            if n > better_than and (best is None or n > best[0]):
                best = (n, entry)
        disk: list[tuple[int, Path]] = []
        for path, entry in self._scan():
            if max_tokens is not None and len(entry) > max_tokens:
                continue
            n = common_prefix(entry, prompt)
            if n > better_than and (best is None or n > best[0]):
                disk.append((n, path))
        for n, path in sorted(disk, key=lambda item: -item[0]):
            try:
                entry, state, tag = _read_state(path, self.key)
            except _BadFileError as why:
                _log.debug("prompt cache: removing %s (%s)", path, why)
                _remove(path)
                continue
            except OSError:
                continue
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used
            self._ram_put(entry, state, tag)
            return Hit(entry, state, n, "disk")
        if best is None:
            return None
        n, entry = best
        state = self._ram[entry]
        self._ram.move_to_end(entry)
        return Hit(entry, state, n, "ram")

    def discard(self, tokens: Sequence[int]) -> None:
        """Forget an entry that turned out unusable (RAM and disk)."""
        entry = tuple(int(t) for t in tokens)
        self._ram_drop(entry)
        if self.folder is not None:
            _remove(self.folder / (_entry_name(entry) + SUFFIX))

    def forget(self, tag: str) -> int:
        """Remove the entries tagged ``tag`` from RAM and disk (after the pending writes); the
        number of files removed."""
        clean = _clean_tag(tag)
        if not clean:
            return 0
        for entry in [e for e, t in self._tags.items() if t == clean]:
            self._ram_drop(entry)
        self.flush(timeout=10.0)
        return forget_tag(self.root, clean) if self.root is not None else 0

    def disk_files(self) -> list[Path]:
        """This key's entry files."""
        return [path for path, _ in self._scan()]


# --- the whole folder (no engine needed) --------------------------------------------------------


@dataclass(frozen=True)
class FolderUsage:
    """What the cache folder holds: entry files, their bytes and tokens, and other models' keys.
    """

    folder: Path
    files: int
    bytes: int
    tokens: int
    keys: int


def _entry_files(root: Path) -> list[Path]:
    """Every entry file under the cache folder ``root`` (all keys)."""
    paths: list[Path] = []
    with contextlib.suppress(OSError):
        for sub in root.iterdir():
            if _is_key_folder(sub):
                with contextlib.suppress(OSError):
                    paths += [p for p in sub.iterdir() if p.suffix == SUFFIX]
    return paths


def folder_usage(root: Path) -> FolderUsage:
    """What the cache folder ``root`` holds (zero when it does not exist); unreadable or foreign
    files count in bytes but not in tokens."""
    files = size = tokens = 0
    keys: set[Path] = set()
    for path in _entry_files(root):
        with contextlib.suppress(OSError):
            size += path.stat().st_size
            files += 1
            keys.add(path.parent)
            with contextlib.suppress(_BadFileError):
                tokens += len(_read_head(path, None)[0])
    return FolderUsage(root, files, size, tokens, len(keys))


def clear_folder(root: Path) -> int:
    """Remove every entry of every model from the cache folder ``root``; the bytes freed.

    Files being written by a running engine finish as temporary files and land afterwards; the
    folder itself and anything that is not the cache's stays.
    """
    freed = 0
    for path in _entry_files(root):
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            path.unlink()
            freed += size
    return freed


def forget_tag(root: Path, tag: str) -> int:
    """Remove the entries tagged ``tag`` (of every model) from the cache folder ``root``; the
    number of files removed."""
    clean = _clean_tag(tag)
    if not clean:
        return 0
    removed = 0
    for path in _entry_files(root):
        try:
            if _read_head(path, None)[4] != clean:
                continue
        except (_BadFileError, OSError):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed
