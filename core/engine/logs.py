"""The engine log: llama.cpp's own log lines, written by the engine process.

Every line llama.cpp (and ggml) logs, debug level included, is appended to the engine log file
(``DataPaths.engine_log``) with a timestamp and level. The last lines are also kept in memory to
explain a failed load, and two facts are counted from them: how many layers llama.cpp offloaded
("offloaded X/Y layers to GPU"), how many tensors a buffer-type override moved ("tensor … buffer
type overridden to CPU"), and the buffers llama.cpp allocated ("CUDA0 model buffer size = … MiB";
on the CPU ``CPU_Mapped`` for the weights left in the memory-mapped file, ``CPU_REPACK`` for those
copied out of it, ``CPU`` without mmap — :func:`..resident.actual_ram` sorts them).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import TextIO

MAX_LOG_BYTES = 8 * 1024 * 1024
# ggml_log_level as of ggml 0.9 (llama-cpp-python's _logger.py comment has the old order).
LEVELS = {0: "NONE", 1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR", 5: "CONT"}
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_OVERRIDDEN = re.compile(r"tensor \S+ .*buffer type overridden to")
# "CUDA0 model buffer size =   615.77 MiB", "CPU_Mapped model buffer size = …", "CPU_REPACK model
# buffer size = …", "CUDA0 KV buffer size = …", "CUDA_Host compute buffer size = …", "CPU  output
# buffer size = …" (but not "~llama_context: CPU compute buffer size is …", logged when it ends).
_BUFFER = re.compile(r"(\S+)\s+(model|KV|compute|output)\s+buffer size\s*=\s*([\d.]+)\s*MiB")


def rotate_if_large(path: Path, limit: int = MAX_LOG_BYTES) -> None:
    """Move ``path`` to ``path.1`` (replacing it) when it is larger than ``limit`` bytes."""
    try:
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))
    except OSError:
        pass


def tail_lines(path: Path, n: int = 20, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``n`` lines of a text file (empty when it cannot be read)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


class EngineLog:
    """Collects llama.cpp log chunks into lines; thread-safe (ggml may log from its threads).

    ``write(level, text)`` takes what the log callback receives: chunks that may hold several lines
    or part of one; level 5 (CONT) continues the previous line.
    """

    def __init__(self, path: Path | None, keep: int = 50) -> None:
        self.path = path
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            rotate_if_large(path)
            self._file = path.open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._partial = ""
        self._level = 1
        self.recent: deque[str] = deque(maxlen=keep)
        self.offloaded_layers: int | None = None
        self.overridden_tensors = 0
        self.buffers: list[tuple[str, str, int]] = []

    def write(self, level: int, text: str) -> None:
        """Add a chunk of log text at ggml log ``level``."""
        with self._lock:
            if level != 5:
                self._level = level
            self._partial += text
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self._line(line)

    def note(self, text: str) -> None:
        """Write an engine message (not from llama.cpp) to the log."""
        with self._lock:
            self._emit("ENGINE", text)

    def _line(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        if match := _OFFLOADED.search(line):
            self.offloaded_layers = int(match.group(1))
        if _OVERRIDDEN.search(line):
            self.overridden_tensors += 1
        if match := _BUFFER.search(line):
            self.buffers.append((match.group(1), match.group(2),
                                 round(float(match.group(3)) * 1024 * 1024)))
        self.recent.append(line)
        self._emit(LEVELS.get(self._level, str(self._level)), line)

    def _emit(self, level: str, line: str) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._file.write(f"{stamp} {level:<6} {line}\n")
        self._file.flush()

    def reset_counters(self) -> None:
        """Forget the counts and recent lines (before a new load)."""
        with self._lock:
            self.recent.clear()
            self.offloaded_layers = None
            self.overridden_tensors = 0
            self.buffers = []

    def explain(self, n: int = 8) -> str:
        """The last ``n`` warning/error-looking lines (or plain last lines), one string."""
        lines = list(self.recent)
        important = [ln for ln in lines if re.search(r"error|fail|invalid|unable|cannot|not ",
                                                     ln, re.IGNORECASE)]
        return "\n".join((important or lines)[-n:])

    def close(self) -> None:
        """Flush what is buffered and close the file."""
        with self._lock:
            if self._partial:
                self._line(self._partial)
                self._partial = ""
            if self._file is not None:
                self._file.close()
                self._file = None
