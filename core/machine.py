"""The machine a plan is for: free VRAM and RAM, the GPU's bandwidth, the CPU's measured rates.

:class:`Machine` is what :mod:`.planner` plans for: this machine as detected
(:func:`machine_from_hardware`, with the CPU rates measured by :mod:`.cpu_speed`) or one given
by figures (:func:`simulated_machine`: ``plan --vram/--ram``, tests).

Constants (documented estimates, not measurements, except the CUDA overhead):

- Without a measured CPU: memory bandwidth :data:`CPU_BANDWIDTH` 15 GB/s (what decoding reaches
  on a desktop's dual-channel DDR4), Apple Silicon's CPU side :data:`APPLE_CPU_BANDWIDTH`
  60 GB/s; prompt arithmetic :data:`CPU_FLOPS` 100 GFLOP/s.
- GPU bandwidth: the vendor's peak figure from :data:`GPU_BANDWIDTH_TABLE` by name, else
  :data:`DEFAULT_GPU_BANDWIDTH` (300 GB/s NVIDIA, 100 GB/s Apple or unknown).
- Per-process GPU overhead :data:`GPU_OVERHEAD` 600 MiB on CUDA (CUDA context and cuBLAS
  workspace, measured on an H200), 256 MiB on Metal and others.
- VRAM safety margin: max(256 MiB, 5 %) of the free VRAM; RAM margin: max(512 MiB, 5 %) of the
  available RAM, plus :data:`RAM_PROCESS_OVERHEAD` for the engine process itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .i18n import tr
from .speed_model import GPU_FLOPS_PER_BYTE, PCIE_BANDWIDTH, Rates, cpu_rates
from .units import MiB, format_memory

if TYPE_CHECKING:
    from .cpu_speed import CpuSpeed
    from .hardware import GPU, Hardware

GB = 1e9
CPU_BANDWIDTH = 15 * GB
APPLE_CPU_BANDWIDTH = 60 * GB
CPU_FLOPS = 100 * GB
DEFAULT_GPU_BANDWIDTH: dict[str, float] = {"nvidia": 300 * GB, "apple": 100 * GB,
                                           "amd": 300 * GB, "intel": 100 * GB,
                                           "unknown": 100 * GB}
#: Peak memory bandwidth in GB/s by a part of the GPU's name; the first match wins, so more
#: specific names come first.
GPU_BANDWIDTH_TABLE: tuple[tuple[str, float], ...] = (
    ("H200", 4800), ("H100 PCIe", 2000), ("H100", 3350), ("A100-SXM4-80GB", 2039),
    ("A100 80GB", 1935), ("A100", 1555), ("L40S", 864), ("L40", 864), ("L4", 300), ("A10G", 600),
    ("A10", 600), ("T4", 320), ("V100", 900), ("RTX 6000 Ada", 960), ("RTX A6000", 768),
    ("RTX 5090", 1792), ("RTX 5080", 960), ("RTX 4090", 1008), ("RTX 4080", 717),
    ("RTX 4070 Ti", 504), ("RTX 4070", 504), ("RTX 4060 Ti", 288), ("RTX 4060", 272),
    ("RTX 3090", 936), ("RTX 3080", 760), ("RTX 3070", 448), ("RTX 3060 Laptop", 336),
    ("RTX 3060", 360), ("RTX 2080 Ti", 616),
    ("M1 Ultra", 800), ("M2 Ultra", 800), ("M3 Ultra", 819), ("M1 Max", 400), ("M2 Max", 400),
    ("M3 Max", 400), ("M4 Max", 546), ("M1 Pro", 200), ("M2 Pro", 200), ("M3 Pro", 150),
    ("M4 Pro", 273), ("Apple M1", 68), ("Apple M2", 100), ("Apple M3", 100), ("Apple M4", 120),
)
GPU_OVERHEAD: dict[str, int] = {"nvidia": 600 * MiB}
DEFAULT_GPU_OVERHEAD = 256 * MiB
RAM_PROCESS_OVERHEAD = 256 * MiB
VRAM_MARGIN_MIN, VRAM_MARGIN_SHARE = 256 * MiB, 0.05
RAM_MARGIN_MIN, RAM_MARGIN_SHARE = 512 * MiB, 0.05

def gpu_bandwidth(name: str | None, vendor: str) -> float:
    """Peak memory bandwidth (bytes/s) of a GPU by its name, else the vendor default."""
    for part, gbps in GPU_BANDWIDTH_TABLE:
        if name and part.lower() in name.lower():
            return gbps * GB
    return DEFAULT_GPU_BANDWIDTH.get(vendor, DEFAULT_GPU_BANDWIDTH["unknown"])


@dataclass(frozen=True)
class Machine:
    """What a plan may use. ``vram_bytes``: free GPU memory (for unified memory, Metal's working
    set); 0 means no usable GPU. ``ram_bytes``: RAM available to the model. Bandwidths in bytes/s.

    ``cpu_bandwidth``, ``cpu_stream``, ``cpu_weight_rate`` and ``cpu_flops`` are what llama.cpp
    reaches on the CPU: read bandwidth and the byte and weight rates of the decoding threads
    (decode), arithmetic (prompt); from
    the measured ``cpu`` (with ``threads`` decoding threads) where there is one, else estimates.
    """

    ram_bytes: int
    vram_bytes: int = 0
    gpu_name: str | None = None
    gpu_vendor: str = "unknown"
    unified_memory: bool = False
    gpu_bandwidth: float = DEFAULT_GPU_BANDWIDTH["nvidia"]
    cpu_bandwidth: float = CPU_BANDWIDTH
    gpu_overhead: int = DEFAULT_GPU_OVERHEAD
    notes: tuple[str, ...] = ()
    cpu_stream: float = math.inf
    cpu_weight_rate: float = math.inf
    cpu_flops: float = CPU_FLOPS
    threads: int | None = None
    cpu: CpuSpeed | None = field(default=None, compare=False)

    @property
    def has_gpu(self) -> bool:
        """Whether any layer can go to a GPU."""
        return self.vram_bytes > 0

    @property
    def cpu_decode_rate(self) -> float:
        """Bytes/s at which llama.cpp's decoding threads read weights from RAM."""
        return min(self.cpu_bandwidth, self.cpu_stream)

    @property
    def cpu_measured(self) -> bool:
        """Whether the CPU's rates were measured on this machine (else they are estimates)."""
        return self.cpu is not None

    @property
    def vram_budget(self) -> int:
        """Free VRAM less the safety margin (grows with ``vram_bytes``)."""
        if self.vram_bytes <= 0:
            return 0
        margin = max(VRAM_MARGIN_MIN, int(self.vram_bytes * VRAM_MARGIN_SHARE))
        return max(0, self.vram_bytes - margin)

    @property
    def ram_budget(self) -> int:
        """Available RAM less the safety margin and the engine process."""
        margin = max(RAM_MARGIN_MIN, int(self.ram_bytes * RAM_MARGIN_SHARE))
        return max(0, self.ram_bytes - margin - RAM_PROCESS_OVERHEAD)

    def rates(self) -> Rates:
        """The speed model's rates for this machine."""
        gpu = self.has_gpu
        flops = GPU_FLOPS_PER_BYTE.get(self.gpu_vendor, GPU_FLOPS_PER_BYTE["unknown"])
        return Rates(cpu_bandwidth=self.cpu_bandwidth, cpu_stream=self.cpu_stream,
                     cpu_weight_rate=self.cpu_weight_rate,
                     cpu_flops=self.cpu_flops, gpu_bandwidth=self.gpu_bandwidth if gpu else 0.0,
                     gpu_flops=self.gpu_bandwidth * flops if gpu else 0.0,
                     link=PCIE_BANDWIDTH if gpu and not self.unified_memory else 0.0)

    def with_threads(self, threads: int | None) -> Machine:
        """This machine decoding with ``threads`` threads (unchanged without a measured CPU)."""
        if self.cpu is None or threads == self.threads:
            return self
        rates = cpu_rates(self.cpu, threads)
        return replace(self, cpu_bandwidth=rates.bandwidth, cpu_stream=rates.stream,
                       cpu_weight_rate=rates.weight_rate, cpu_flops=rates.flops, threads=threads)

    def describe(self) -> str:
        """``RTX 4090 (nvidia, 23.5 GiB free), 60.0 GiB RAM`` or ``no GPU, 30.0 GiB RAM``."""
        ram = format_memory(self.ram_bytes)
        if not self.has_gpu:
            return tr("no GPU, {ram} RAM", ram=ram)
        values = {"gpu": self.gpu_name or "GPU", "vendor": self.gpu_vendor,
                  "vram": format_memory(self.vram_bytes), "ram": ram}
        if self.unified_memory:
            return tr("{gpu} ({vendor}, {vram} unified memory working set), {ram} RAM", **values)
        return tr("{gpu} ({vendor}, {vram} free), {ram} RAM", **values)


def simulated_machine(*, ram: int, vram: int = 0, gpu_name: str | None = None,
                      vendor: str = "nvidia", unified_memory: bool = False,
                      cpu: CpuSpeed | None = None, threads: int | None = None) -> Machine:
    """A machine from figures (``plan --vram/--ram``, tests): GPU bandwidth from the table; the
    CPU's rates from ``cpu`` (measured, decoding with ``threads`` threads: default one per
    physical core) or, without it, the estimates."""
    apple = vendor == "apple"
    machine = Machine(
        ram_bytes=ram, vram_bytes=vram if vram > 0 else 0,
        gpu_name=gpu_name if vram > 0 else None, gpu_vendor=vendor if vram > 0 else "unknown",
        unified_memory=unified_memory and vram > 0,
        gpu_bandwidth=gpu_bandwidth(gpu_name, vendor),
        cpu_bandwidth=APPLE_CPU_BANDWIDTH if apple else CPU_BANDWIDTH,
        gpu_overhead=GPU_OVERHEAD.get(vendor, DEFAULT_GPU_OVERHEAD))
    if cpu is None:
        return machine
    rates = cpu_rates(cpu, threads)
    return replace(machine, cpu_bandwidth=rates.bandwidth, cpu_stream=rates.stream,
                   cpu_weight_rate=rates.weight_rate, cpu_flops=rates.flops,
                   threads=threads or cpu.threads, cpu=cpu)


def machine_from_hardware(hardware: Hardware, *, vram: int | None = None, ram: int | None = None,
                          gpu_offload: bool = True, threads: int | None = None) -> Machine:
    """The plan's machine for detected ``hardware``; ``vram``/``ram`` replace the detected free
    VRAM / available RAM (``vram=0``: no GPU). ``gpu_offload=False`` (a llama.cpp build that
    cannot offload) plans for the CPU, with a note. The CPU's rates are the hardware's measured
    ones (``hardware.cpu_speed``) with ``threads`` decoding threads (default: one per physical
    core), where it has them. Raises nothing.
    """
    gpu: GPU | None = hardware.best_gpu
    notes: list[str] = []
    vram_bytes = gpu.usable_bytes if gpu is not None else 0
    if vram is not None:
        vram_bytes = vram
    elif gpu is not None and not gpu_offload:
        notes.append(tr("this llama.cpp build cannot offload to {gpu}; planning for the CPU "
                        "(install a GPU build of llama-cpp-python to use it)", gpu=gpu.name))
        vram_bytes = 0
    vendor = gpu.vendor if gpu is not None else "nvidia"
    apple = gpu is not None and gpu.vendor == "apple"
    machine = simulated_machine(
        ram=hardware.ram_available if ram is None else ram, vram=vram_bytes,
        gpu_name=gpu.name if gpu is not None else None, vendor="apple" if apple else vendor,
        unified_memory=bool(gpu is not None and gpu.unified_memory),
        cpu=getattr(hardware, "cpu_speed", None), threads=threads)
    return replace(machine, notes=tuple(notes))


__all__ = [
    "APPLE_CPU_BANDWIDTH", "CPU_BANDWIDTH", "CPU_FLOPS", "DEFAULT_GPU_BANDWIDTH", "GB",
    "GPU_BANDWIDTH_TABLE", "GPU_OVERHEAD", "Machine", "gpu_bandwidth", "machine_from_hardware",
    "simulated_machine",
]
