"""What this machine has: memory, CPU cores and GPUs, detected without ever raising.

Every probe is best effort and bounded in time: a missing ``nvidia-smi``, a hung driver or a
sandbox that forbids ``sysctl`` gives an empty answer and a line in :attr:`Hardware.notes`,
never an exception. The parsers are pure functions so they can be tested on sample outputs.

NVIDIA GPUs are read through NVML (the optional ``pynvml`` module from ``nvidia-ml-py``) and,
where that is absent or fails, through ``nvidia-smi``. Apple Silicon reports one GPU with unified
memory whose usable size is Metal's recommended working set, estimated from ``hw.memsize``.
Other GPUs (AMD, Intel) are not detected yet.

The CPU's speed is measured, not looked up, once per hardware (:mod:`.cpu_speed`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import psutil

from mixtral_desk.core.i18n import tr
from mixtral_desk.core.units import GiB, MiB, format_memory

if TYPE_CHECKING:
    from mixtral_desk.core.cpu_speed import CpuSpeed

GPUVendor = Literal["nvidia", "apple", "amd", "intel", "unknown"]


#: How long one external probe (a subprocess, or NVML) may take before it is abandoned.
PROBE_TIMEOUT_S = 3.0

NVIDIA_SMI_QUERY = (
    "--query-gpu=name,memory.total,memory.free,driver_version",
    "--format=csv,noheader,nounits",
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class GPU:
    """One GPU and its memory, in bytes.

    For Apple Silicon ``total_bytes`` is Metal's recommended working set (the part of the unified
    memory the GPU may use), not the machine's RAM.
    """

    name: str
    vendor: GPUVendor
    total_bytes: int | None
    free_bytes: int | None
    unified_memory: bool = False
    driver: str | None = None
    compute_capability: str | None = None

    @property
    def usable_bytes(self) -> int:
        """Memory a model may use now: free memory where known, else the total, else 0."""
        if self.free_bytes is not None:
            return self.free_bytes
        return self.total_bytes or 0


@dataclass(frozen=True)
class Hardware:
    """A snapshot of this machine, as :func:`detect_hardware` found it; ``cpu_speed`` as measured
    on it (None when not probed)."""

    ram_total: int
    ram_available: int
    cpu_physical_cores: int | None
    cpu_logical_cores: int
    cpu_name: str
    os_name: str
    os_platform: str
    machine: str
    gpus: tuple[GPU, ...] = ()
    notes: tuple[str, ...] = field(default=())
    cpu_speed: CpuSpeed | None = None

    @property
    def best_gpu(self) -> GPU | None:
        """The GPU with the most usable memory, or None when there is none."""
        return max(self.gpus, key=lambda gpu: gpu.usable_bytes, default=None)

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (bytes as integers, GPUs as a list of dicts)."""
        data = asdict(self)
        data["gpus"] = [asdict(gpu) for gpu in self.gpus]
        data["notes"] = list(self.notes)
        return data

    def summary_lines(self) -> list[str]:
        """Short human-readable lines for ``mixtral-desk doctor``."""
        if self.cpu_physical_cores is not None:
            cores = tr("{physical} physical / {logical} logical cores",
                       physical=self.cpu_physical_cores, logical=self.cpu_logical_cores)
        else:
            cores = tr("{logical} logical cores", logical=self.cpu_logical_cores)
        lines = [
            tr("OS: {system} ({machine})", system=self.os_platform, machine=self.machine),
            tr("CPU: {name} ({cores})", name=self.cpu_name, cores=cores),
            tr("RAM: {total} total, {available} available", total=format_memory(self.ram_total),
               available=format_memory(self.ram_available)),
        ]
        if self.cpu_speed is not None:
            speed = self.cpu_speed
            values = {"all": format(speed.bandwidth_all / 1e9, ".1f"), "threads": speed.threads,
                      "one": format(speed.bandwidth_one / 1e9, ".1f"),
                      "flops": format(speed.flops / 1e9, ".0f")}
            lines.append(tr("Memory bandwidth: {all} GB/s with {threads} threads, {one} GB/s with "
                            "one; matrix multiply {flops} GFLOP/s (measured)", **values))
        if not self.gpus:
            lines.append(tr("GPU: none detected"))
        for index, gpu in enumerate(self.gpus):
            lines.append(tr("GPU {index}: {description}", index=index,
                            description=_describe_gpu(gpu)))
        lines.extend(tr("Note: {note}", note=note) for note in self.notes)
        return lines


def _describe_gpu(gpu: GPU) -> str:
    values = {"total": format_memory(gpu.total_bytes), "free": format_memory(gpu.free_bytes)}
    if gpu.unified_memory:
        memory = (tr("{total} usable of unified memory, {free} free", **values)
                  if gpu.free_bytes is not None else
                  tr("{total} usable of unified memory", **values))
    else:
        memory = (tr("{total} total, {free} free", **values) if gpu.free_bytes is not None
                  else tr("{total} total", **values))
    extras = [tr("driver {version}", version=gpu.driver) if gpu.driver else "",
              tr("compute {capability}", capability=gpu.compute_capability)
              if gpu.compute_capability else ""]
    extra = "".join(f", {item}" for item in extras if item)
    return f"{gpu.name} ({gpu.vendor}): {memory}{extra}"


def _parse_mib(value: str) -> int | None:
    value = value.strip()
    try:
        return int(float(value) * MiB)
    except ValueError:  # "[N/A]", "[Not Supported]", "", garbage
        return None


def parse_nvidia_smi(output: str) -> tuple[list[GPU], list[str]]:
    """Parse ``nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version
    --format=csv,noheader,nounits`` output into GPUs and notes about lines it could not use.

    Memory figures are MiB; ``[N/A]`` becomes None. A line without a name or without four
    fields is skipped with a note. Never raises.
    """
    gpus: list[GPU] = []
    notes: list[str] = []
    for number, raw in enumerate(output.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4 or not parts[0] or parts[0].startswith("["):
            notes.append(f"nvidia-smi line {number} not understood: {line[:80]!r}")
            continue
        name, total, free, driver = parts
        total_bytes = _parse_mib(total)
        if total_bytes is None:
            notes.append(f"nvidia-smi reports no memory size for {name}")
        gpus.append(GPU(
            name=name,
            vendor="nvidia",
            total_bytes=total_bytes,
            free_bytes=_parse_mib(free),
            unified_memory=False,
            driver=None if driver.startswith("[") or not driver else driver,
        ))
    return gpus, notes


def apple_working_set_bytes(memsize: int) -> int:
    """Metal's recommended GPU working set for an Apple Silicon Mac with ``memsize`` bytes.

    Metal lets the GPU use about two thirds of unified memory on machines with 36 GiB or less
    and about three quarters above that (an approximation of
    ``MTLDevice.recommendedMaxWorkingSetSize``). Raises nothing; a non-positive size gives 0.
    """
    if memsize <= 0:
        return 0
    factor = 0.67 if memsize <= 36 * GiB else 0.75
    return int(memsize * factor)


# --- probes: each bounded in time, none raises -------------------------------------------------

def _run(command: Sequence[str], timeout: float) -> str | None:
    """stdout of ``command``, or None when it is missing, fails or takes too long."""
    try:
        completed = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout


def _with_timeout(function: Callable[[], _T], timeout: float) -> _T | None:
    """Run ``function`` in a daemon thread; None if it raises or outlives ``timeout``."""
    result: list[_T] = []

    def target() -> None:
        with contextlib.suppress(Exception):  # a probe must never take the app down
            result.append(function())

    thread = threading.Thread(target=target, name="hardware-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None


def _nvml_gpus() -> list[GPU]:
    """GPUs from NVML; raises ImportError or NVML's own errors (caught by the caller)."""
    import pynvml  # optional: the nvidia-ml-py package

    pynvml.nvmlInit()
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver_text = driver.decode() if isinstance(driver, bytes) else str(driver)
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: str | None = f"{major}.{minor}"
            except Exception:
                capability = None
            gpus.append(GPU(
                name=name.decode() if isinstance(name, bytes) else str(name),
                vendor="nvidia",
                total_bytes=int(memory.total),
                free_bytes=int(memory.free),
                driver=driver_text,
                compute_capability=capability,
            ))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _nvidia_gpus(timeout: float, notes: list[str]) -> list[GPU]:
    nvml = _with_timeout(_nvml_gpus, timeout)
    if nvml:
        return nvml
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    output = _run([executable, *NVIDIA_SMI_QUERY], timeout)
    if output is None:
        notes.append("nvidia-smi is installed but did not answer; no NVIDIA GPU listed")
        return []
    gpus, parse_notes = parse_nvidia_smi(output)
    notes.extend(parse_notes)
    return gpus


def _sysctl(name: str, timeout: float) -> str | None:
    output = _run(["sysctl", "-n", name], timeout)
    return output.strip() if output else None


def _apple_gpus(cpu_name: str, timeout: float, notes: list[str]) -> list[GPU]:
    memsize_text = _sysctl("hw.memsize", timeout)
    try:
        memsize = int(memsize_text) if memsize_text else psutil.virtual_memory().total
    except ValueError:
        memsize = psutil.virtual_memory().total
    if not memsize_text:
        notes.append("sysctl hw.memsize unavailable; Metal working set estimated from RAM")
    return [GPU(
        name=cpu_name if cpu_name.startswith("Apple") else "Apple GPU",
        vendor="apple",
        total_bytes=apple_working_set_bytes(memsize),
        free_bytes=None,
        unified_memory=True,
    )]


def _cpu_name(system: str, timeout: float) -> str:
    if system == "Darwin":
        brand = _sysctl("machdep.cpu.brand_string", timeout)
        if brand:
            return brand
    elif system == "Linux":
        try:
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown CPU"


def detect_hardware(*, probe_gpus: bool = True, timeout: float = PROBE_TIMEOUT_S,
                    probe_speed: bool = True) -> Hardware:
    """Detect this machine's memory, CPU and GPUs, and the CPU's measured speed.

    Never raises: each probe that fails or takes longer than ``timeout`` seconds is skipped,
    with a line in ``notes`` where the failure is worth telling the user. ``probe_gpus=False``
    skips the GPU probes (they may take a second on some drivers); ``probe_speed=False`` leaves
    ``cpu_speed`` None (otherwise it comes from :func:`cpu_speed_profile`: measured once per
    hardware, under a second).
    """
    notes: list[str] = []
    system = platform.system()
    memory = psutil.virtual_memory()
    try:
        physical: int | None = psutil.cpu_count(logical=False)
    except Exception:
        physical = None
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    cpu_name = _cpu_name(system, timeout)

    gpus: list[GPU] = []
    if probe_gpus:
        if system == "Darwin" and platform.machine() == "arm64":
            gpus = _apple_gpus(cpu_name, timeout, notes)
        else:
            gpus = _nvidia_gpus(timeout, notes)
    found = Hardware(
        ram_total=int(memory.total),
        ram_available=int(memory.available),
        cpu_physical_cores=physical,
        cpu_logical_cores=int(logical),
        cpu_name=cpu_name,
        os_name=system or "unknown",
        os_platform=platform.platform(terse=True) or system or "unknown",
        machine=platform.machine() or "unknown",
        gpus=tuple(gpus),
        notes=tuple(notes),
    )
    if probe_speed:
        from mixtral_desk.core.cpu_speed import cpu_speed_profile

        found = replace(found, cpu_speed=cpu_speed_profile(found))
    return found
