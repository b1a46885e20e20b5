"""This machine's CPU speed, measured rather than looked up, and cached with the hardware it was
measured on.

:func:`measure_cpu_speed` reads a buffer far larger than the last-level cache with one thread and
with one thread per physical core (numpy sums; numpy lets go of the GIL while it sums) and times a
float32 matrix multiply, keeping the best of a few passes: well under a second. The planner's
speed model (:mod:`.speed_model`) turns these into decode and prompt speeds.

:func:`cpu_speed_profile` keeps the result in this process and in ``cpu-speed.json`` in the cache
folder, with a fingerprint of the hardware (CPU name, cores, RAM size, system): another CPU, a
changed core count or RAM size measures again, and so does a missing or corrupt file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from mixtral_desk.core.units import GiB, MiB

if TYPE_CHECKING:
    from mixtral_desk.core.hardware import Hardware

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuSpeed:
    """What this machine's CPU and memory measured (:func:`measure_cpu_speed`).

    ``bandwidth_one`` / ``bandwidth_all``: memory read bandwidth in bytes/s with one thread and
    with ``threads`` threads (one per physical core, llama.cpp's default for decoding); ``flops``:
    float32 matrix-multiply throughput with all cores (FLOP/s), what prompt evaluation is bound by.
    """

    bandwidth_one: float
    bandwidth_all: float
    threads: int
    flops: float

    def bandwidth(self, threads: int | None = None) -> float:
        """Read bandwidth with ``threads`` threads (default: one per physical core): more threads
        read faster until the memory is saturated."""
        if threads is None or threads >= self.threads:
            return self.bandwidth_all
        return min(self.bandwidth_all, self.bandwidth_one * max(1, threads))

    def flops_with(self, threads: int | None = None) -> float:
        """Matrix-multiply throughput with ``threads`` threads (default: all cores)."""
        if threads is None or threads >= self.threads:
            return self.flops
        return self.flops * max(1, threads) / self.threads



#: The probe reads a buffer this large (or 8 times the last-level cache, if that is larger), a few
#: times, and keeps the best pass: cached data would read faster than memory.
PROBE_BUFFER_BYTES = 256 * MiB
PROBE_PASSES = 6
#: Bumped when the probe changes, so that older cached figures are measured again.
PROBE_VERSION = 1
SPEED_CACHE_NAME = "cpu-speed.json"

_speed_memo: dict[str, CpuSpeed] = {}
_speed_lock = threading.Lock()


def hardware_fingerprint(hardware: Hardware) -> str:
    """What the cached speed depends on: the CPU, its cores, the RAM size (GiB), the system."""
    return json.dumps([PROBE_VERSION, hardware.cpu_name, hardware.cpu_physical_cores,
                       hardware.cpu_logical_cores, round(hardware.ram_total / GiB),
                       hardware.machine, hardware.os_name])


def _last_level_cache() -> int:
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            size = os.sysconf(name)
            if size > 0:
                return int(size)
    return 0


def _best_rate(work: Callable[[], object], amount: float, passes: int) -> float:
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        work()
        seconds = time.perf_counter() - started
        if seconds > 0:
            best = max(best, amount / seconds)
    return best


def measure_cpu_speed(threads: int | None = None) -> CpuSpeed:
    """Measure memory read bandwidth (numpy sums of a buffer far larger than the last-level
    cache, with one thread and with ``threads`` threads at once: numpy lets go of the GIL while
    it sums) and float32 matrix-multiply throughput; the best of :data:`PROBE_PASSES` passes
    each. Takes a few tenths of a second and :data:`PROBE_BUFFER_BYTES` of memory for that time.

    Raises:
        MemoryError: the buffer cannot be allocated.
    """
    count = max(1, threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    one, every = _bandwidths(count)
    return CpuSpeed(bandwidth_one=one, bandwidth_all=max(one, every), threads=count,
                    flops=_matmul_flops())


def _bandwidths(count: int) -> tuple[float, float]:
    """Read bandwidth with one thread and with ``count`` threads (the buffer is freed after)."""
    import numpy as np

    size = max(PROBE_BUFFER_BYTES, min(8 * _last_level_cache(), 4 * PROBE_BUFFER_BYTES))
    buffer = np.ones(size // 8)  # float64; writing it also brings its pages in
    one = _best_rate(buffer.sum, buffer.nbytes, PROBE_PASSES)
    if count == 1:
        return one, one
    parts = np.array_split(buffer, count)

    def threaded_sum() -> None:
        workers = [threading.Thread(target=part.sum) for part in parts[1:]]
        for worker in workers:
            worker.start()
        parts[0].sum()
        for worker in workers:
            worker.join()

    return one, _best_rate(threaded_sum, buffer.nbytes, PROBE_PASSES)


def _matmul_flops(n: int = 768) -> float:
    """float32 matrix-multiply throughput (numpy's BLAS, its own threads)."""
    import numpy as np

    a = np.ones((n, n), dtype=np.float32)
    return _best_rate(lambda: a @ a, 2.0 * n ** 3, PROBE_PASSES)


def _read_cached_speed(path: Path, fingerprint: str) -> CpuSpeed | None:
    """The cached speed if ``path`` holds one measured on this hardware; None otherwise (also
    for a missing, unreadable or corrupt file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["fingerprint"] != fingerprint:
            return None
        speed = CpuSpeed(**{key: data["speed"][key] for key in
                            ("bandwidth_one", "bandwidth_all", "threads", "flops")})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    numbers = (speed.bandwidth_one, speed.bandwidth_all, speed.flops)
    if not all(isinstance(x, int | float) and x > 0 for x in numbers) or speed.threads < 1:
        return None
    return speed


def cpu_speed_profile(hardware: Hardware, *, cache_file: Path | None = None,
                      refresh: bool = False) -> CpuSpeed | None:
    """This machine's :class:`CpuSpeed`: remembered in this process, else read from
    ``cache_file`` (default: ``cpu-speed.json`` in the cache folder) when it was measured on the
    same hardware (:func:`hardware_fingerprint`), else measured now and written there.
    ``refresh`` measures again. None when the probe fails. Never raises.
    """
    from mixtral_desk.core.atomic_write import write_atomic
    from mixtral_desk.core.paths import data_paths

    fingerprint = hardware_fingerprint(hardware)
    path = cache_file if cache_file is not None else data_paths().cache_dir / SPEED_CACHE_NAME
    with _speed_lock:
        if not refresh:
            if fingerprint in _speed_memo and cache_file is None:
                return _speed_memo[fingerprint]
            cached = _read_cached_speed(path, fingerprint)
            if cached is not None:
                _speed_memo[fingerprint] = cached
                return cached
        try:
            speed = measure_cpu_speed(hardware.cpu_physical_cores or hardware.cpu_logical_cores)
        except Exception as error:  # a probe must never take the app down
            _log.info("the CPU speed probe failed: %s", error)
            return None
        _speed_memo[fingerprint] = speed
        payload = {"fingerprint": fingerprint, "measured_at": time.time(),
                   "speed": asdict(speed)}
        try:
            write_atomic(path, json.dumps(payload, indent=1))
        except OSError as error:
            _log.info("cannot cache the CPU speed in %s: %s", path, error)
        return speed
