"""The prompt cache: llama.cpp sequence states with their token lists, in RAM and on disk.

An entry is a token list and the KV state of one sequence after evaluating exactly those tokens
(``llama_state_seq_get_data``). A new prompt restores the entry that shares the **longest common
token prefix** with it; llama.cpp then drops the KV beyond that prefix and evaluates only the rest.

Entries are only valid for the model file, the KV-shaping load options and the llama.cpp build
that made them: :func:`cache_key` hashes those, and a :class:`PromptCache` only ever sees the
entries of its own key (a sub-folder of the cache folder per key on disk). Anything that is not
exactly right is a miss, never a wrong answer.

* **RAM**: least recently used first out, within a byte budget.
* **Disk**: one file per entry (its format: :mod:`.prompt_cache_files`), written atomically (a
  temporary file, then a rename) by a background thread so that a save never delays the next
  token; least recently used (by mtime) first out across all keys, within a byte budget. A file
  that is truncated, corrupt, empty, of another format version or not ours is ignored and
  removed. A failed write (a full disk, a read-only folder) means no save; it is logged at debug
  level only.

An entry may carry a **tag**: the conversation whose text it was made from
(:func:`conversation_tag`). Deleting a conversation removes its entries (:meth:`PromptCache.forget`
in the engine, :func:`forget_tag` on disk when no engine holds the cache), since they are derived
from its text.

An entry whose tokens are a prefix of a newer entry's (in the same :class:`~.context_shift.Layout`)
is dropped when the newer one is saved: restoring the longer one and cutting it back gives the same
state.

No ``llama_cpp`` import here: the worker computes the states, this module only keeps them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .context_shift import PLAIN, Layout, common_prefix
from .prompt_cache_files import (
    FORMAT_VERSION,
    MAGIC,
    SUFFIX,
    BadFileError,
    FolderUsage,
    Head,
    clean_tag,
    clear_folder,
    encode,
    entry_files,
    entry_name,
    folder_usage,
    forget_tag,
    read_head,
    read_state,
    remove_file,
)

_log = logging.getLogger(__name__)

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
    return clean_tag(f"conversation-{conversation_id}")


@dataclass(frozen=True)
class Hit:
    """A cache entry for a prompt: its tokens, its layout, its state, and how many of its tokens
    serve the prompt (``prefix``, as the caller's score said; the state covers all of
    ``tokens``)."""

    tokens: tuple[int, ...]
    layout: Layout
    state: bytes
    prefix: int
    source: str  # "ram" or "disk"


#: Scores an entry (its tokens and layout) for the prompt at hand: the tokens it would save.
Score = Callable[[tuple[int, ...], Layout], int]


def _supersedes(tokens: tuple[int, ...], layout: Layout, other: tuple[int, ...],
                other_layout: Layout) -> bool:
    """Whether an entry makes ``other`` useless: same layout, and ``other`` a prefix of it."""
    return (layout == other_layout and len(other) < len(tokens)
            and tokens[:len(other)] == other)


@dataclass
class _RamEntry:
    state: bytes
    layout: Layout
    tag: str


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
        self._ram: OrderedDict[tuple[int, ...], _RamEntry] = OrderedDict()
        self._ram_used = 0
        self._jobs: queue.Queue[tuple[tuple[int, ...], _RamEntry] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.saved_files = 0  # files written (for tests and figures)

    # --- RAM -----------------------------------------------------------------------------------

    @property
    def ram_used(self) -> int:
        """Bytes of state held in RAM."""
        return self._ram_used

    def has(self, tokens: Sequence[int], layout: Layout = PLAIN) -> bool:
        """Whether exactly this token list (in this layout) is held in RAM."""
        entry = self._ram.get(tuple(int(t) for t in tokens))
        return entry is not None and entry.layout == layout

    def ram_entries(self) -> list[tuple[int, ...]]:
        """The token lists held in RAM, least recently used first."""
        return list(self._ram)

    def _ram_drop(self, tokens: tuple[int, ...]) -> None:
        entry = self._ram.pop(tokens, None)
        if entry is not None:
            self._ram_used -= len(entry.state)

    def _ram_put(self, tokens: tuple[int, ...], entry: _RamEntry) -> None:
        self._ram_drop(tokens)
        for other in [t for t, e in self._ram.items()
                      if _supersedes(tokens, entry.layout, t, e.layout)]:
            self._ram_drop(other)
        if len(entry.state) > self.ram_bytes:
            return
        while self._ram and self._ram_used + len(entry.state) > self.ram_bytes:
            _, old = self._ram.popitem(last=False)
            self._ram_used -= len(old.state)
        self._ram[tokens] = entry
        self._ram_used += len(entry.state)

    # --- saving --------------------------------------------------------------------------------

    def put(self, tokens: Sequence[int], state: bytes, tag: str | None = None,
            layout: Layout = PLAIN, *, to_disk: bool = True) -> None:
        """Keep ``state`` (of a sequence holding exactly ``tokens``, in ``layout``): in RAM now,
        on disk in the background (unless ``to_disk`` is false). ``tag``: see
        :func:`conversation_tag`. Never raises for the disk."""
        tokens_key = tuple(int(t) for t in tokens)
        if not tokens_key or not state:
            return
        entry = _RamEntry(state, layout, clean_tag(tag))
        self._ram_put(tokens_key, entry)
        if to_disk:
            self._queue_write(tokens_key, entry)

    def persist(self, tokens: Sequence[int]) -> None:
        """Write an entry held in RAM to disk too (in the background); nothing if not held."""
        tokens_key = tuple(int(t) for t in tokens)
        entry = self._ram.get(tokens_key)
        if entry is not None:
            self._queue_write(tokens_key, entry)

    def _queue_write(self, tokens_key: tuple[int, ...], entry: _RamEntry) -> None:
        if self.folder is None or len(entry.state) > self.disk_bytes:
            return
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="prompt-cache-writer",
                                             daemon=True)
            self._writer.start()
        self._jobs.put((tokens_key, entry))

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

    def _write(self, tokens: tuple[int, ...], entry: _RamEntry) -> None:
        assert self.folder is not None
        path = self.folder / (entry_name(tokens, entry.layout) + SUFFIX)
        temp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        head, body = encode(self.key, entry.tag, tokens, entry.layout, entry.state)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with temp.open("wb") as file:
                file.write(head)
                file.write(body)
            temp.replace(path)
        except OSError as error:
            remove_file(temp)
            _log.debug("prompt cache: not saved to %s: %s", path, error)
            return
        self.saved_files += 1
        for other, other_head in self._scan():
            if other != path and _supersedes(tokens, entry.layout, other_head.tokens,
                                             other_head.layout):
                remove_file(other)
        self._evict_disk()

    def _evict_disk(self) -> None:
        """Remove the least recently used files of every key until the folder fits its budget."""
        assert self.root is not None
        files: list[tuple[float, int, Path]] = []
        for path in entry_files(self.root):
            with contextlib.suppress(OSError):
                info = path.stat()
                files.append((info.st_mtime, info.st_size, path))
        used = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if used <= self.disk_bytes:
                break
            remove_file(path)
            used -= size

    # --- finding -------------------------------------------------------------------------------

    def _scan(self) -> list[tuple[Path, Head]]:
        """The entry files of this key with their headers; bad files are removed on the way."""
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
                        remove_file(path)
                continue
            try:
                if path.suffix != SUFFIX:
                    raise BadFileError("not a cache file")
                head = read_head(path, self.key)
            except BadFileError as why:
                _log.debug("prompt cache: removing %s (%s)", path, why)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    remove_file(path)
                continue
            except OSError:
                continue
            found.append((path, head))
        return found

    def lookup(self, tokens: Sequence[int] | None = None, *, score: Score | None = None,
               better_than: int = 0, max_tokens: int | None = None) -> Hit | None:
        """The entry that serves a prompt best, if it saves more than ``better_than`` tokens;
        RAM first, then disk. ``score`` says how many tokens an entry saves (default: its
        common prefix with ``tokens``, for entries without a removed part). ``max_tokens``: skip
        longer entries (they would not fit the context)."""
        if score is None:
            prompt = [int(t) for t in tokens or ()]

            def score(entry: tuple[int, ...], layout: Layout) -> int:
                return common_prefix(entry, prompt) if layout.removed == 0 else 0

        best: tuple[int, tuple[int, ...]] | None = None
        for entry, held in self._ram.items():
            if max_tokens is not None and len(entry) > max_tokens:
                continue
            n = score(entry, held.layout)
            if n > better_than and (best is None or n > best[0]):
                best = (n, entry)
        disk: list[tuple[int, Path]] = []
        for path, head in self._scan():
            if max_tokens is not None and len(head.tokens) > max_tokens:
                continue
            n = score(head.tokens, head.layout)
            if n > better_than and (best is None or n > best[0]):
                disk.append((n, path))
        for n, path in sorted(disk, key=lambda item: -item[0]):
            try:
                head, state = read_state(path, self.key)
            except BadFileError as why:
                _log.debug("prompt cache: removing %s (%s)", path, why)
                remove_file(path)
                continue
            except OSError:
                continue
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used
            self._ram_put(head.tokens, _RamEntry(state, head.layout, head.tag))
            return Hit(head.tokens, head.layout, state, n, "disk")
        if best is None:
            return None
        n, entry = best
        held = self._ram[entry]
        self._ram.move_to_end(entry)
        return Hit(entry, held.layout, held.state, n, "ram")

    def discard(self, hit: Hit) -> None:
        """Forget an entry that turned out unusable (RAM and disk)."""
        self._ram_drop(hit.tokens)
        if self.folder is not None:
            remove_file(self.folder / (entry_name(hit.tokens, hit.layout) + SUFFIX))

    def forget(self, tag: str) -> int:
        """Remove the entries tagged ``tag`` from RAM and disk (after the pending writes); the
        number of files removed."""
        clean = clean_tag(tag)
        if not clean:
            return 0
        for entry in [t for t, held in self._ram.items() if held.tag == clean]:
            self._ram_drop(entry)
        self.flush(timeout=10.0)
        return forget_tag(self.root, clean) if self.root is not None else 0

    def disk_files(self) -> list[Path]:
        """This key's entry files."""
        return [path for path, _ in self._scan()]


__all__ = ["FORMAT_VERSION", "MAGIC", "SUFFIX", "FolderUsage", "Hit", "PromptCache",
           "automatic_disk_budget", "cache_key", "clear_folder", "conversation_tag",
           "folder_usage", "forget_tag", "model_identity"]
