"""The offload plan: how many layers go on the GPU and how many layers keep their experts in RAM.

Given a :class:`~mixtral_desk.core.memory_model.MemoryModel` and a :class:`Machine`,
:func:`plan_offload` tries every placement llama.cpp can make — ``n_gpu_layers`` g (the last g
layers on the GPU, counted like llama.cpp's "offloaded g/L+1": the output layer is the (L+1)-th)
and ``n_cpu_moe`` n (the experts of layers 0 … n-1 stay in CPU memory) — keeps those that fit
free VRAM less a safety margin and the RAM, and picks the fastest by a memory-bandwidth model:

    seconds per token = bytes read from VRAM / GPU bandwidth + bytes read from RAM / CPU bandwidth

where a token reads every dense byte of a layer and ``expert_used_count / expert_count`` of its
expert bytes, the layer's KV cache as far as it is filled (:data:`KV_FILL`: half the context, on
average), plus the output matrix. Because a dense byte on the GPU saves four times what an
expert byte saves (Mixtral: 2 of 8 experts), an MoE model gets all layers on the GPU with the
experts of some layers in RAM rather than fewer whole layers, as far as that is faster.

More VRAM never gives a worse plan: the feasible set only grows and the fastest is kept.

Constants (documented estimates, not measurements, except the CUDA overhead):

- CPU memory bandwidth :data:`CPU_BANDWIDTH` 15 GB/s (a desktop's dual-channel DDR4 in practice);
  Apple Silicon's CPU side :data:`APPLE_CPU_BANDWIDTH` 60 GB/s.
- GPU bandwidth: the vendor's peak figure from :data:`GPU_BANDWIDTH_TABLE` by name, else
  :data:`DEFAULT_GPU_BANDWIDTH` (300 GB/s NVIDIA, 100 GB/s Apple or unknown).
- Per-process GPU overhead :data:`GPU_OVERHEAD` 600 MiB on CUDA (CUDA context and cuBLAS
  workspace, measured on an H200), 256 MiB on Metal and others.
- VRAM safety margin: max(256 MiB, 5 %) of the free VRAM; RAM margin: max(512 MiB, 5 %) of the
  available RAM, plus :data:`RAM_PROCESS_OVERHEAD` for the engine process itself.

Tokens per second from this model are an upper bound ("by memory bandwidth"); real decoding
reaches perhaps 50–80 % of it.

Why one module of over 500 lines: the plan, its explanation to the user and the comparison with
what llama.cpp did speak the same terms (layers, expert tensors, buffers); the memory model
itself lives in :mod:`.memory_model`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .errors import EngineCrashedError, ModelLoadError
from .i18n import tr
from .units import MiB, format_memory

if TYPE_CHECKING:
    from .catalog import CatalogEntry
    from .engine import BackendInfo, LoadOptions, ModelInfo
    from .gguf.model_file import ModelFacts
    from .hardware import GPU, Hardware
    from .memory_model import MemoryModel
    from .resident import RamSplit

Verdict = Literal["gpu", "gpu+cpu-experts", "partial", "cpu", "too-large"]
VERDICTS: tuple[Verdict, ...] = ("gpu", "gpu+cpu-experts", "partial", "cpu", "too-large")

GB = 1e9
CPU_BANDWIDTH = 15 * GB
APPLE_CPU_BANDWIDTH = 60 * GB
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
#: The share of the KV cache a token reads on average (the context half full).
KV_FILL = 0.5
#: A fallback plan after an out-of-memory load uses at most this share of the failed plan's VRAM.
FALLBACK_VRAM_SHARE = 0.8

_OOM = re.compile(r"out of memory|failed to allocate|unable to allocate|cudaMalloc failed|"
                  r"ErrorOutOfDeviceMemory|insufficient memory|not enough memory", re.IGNORECASE)
_T = TypeVar("_T")


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

    @property
    def has_gpu(self) -> bool:
        """Whether any layer can go to a GPU."""
        return self.vram_bytes > 0

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
                      vendor: str = "nvidia", unified_memory: bool = False) -> Machine:
    """A machine from figures (``plan --vram/--ram``, tests): bandwidths from the tables."""
    apple = vendor == "apple"
    return Machine(
        ram_bytes=ram, vram_bytes=vram if vram > 0 else 0,
        gpu_name=gpu_name if vram > 0 else None, gpu_vendor=vendor if vram > 0 else "unknown",
        unified_memory=unified_memory and vram > 0,
        gpu_bandwidth=gpu_bandwidth(gpu_name, vendor),
        cpu_bandwidth=APPLE_CPU_BANDWIDTH if apple else CPU_BANDWIDTH,
        gpu_overhead=GPU_OVERHEAD.get(vendor, DEFAULT_GPU_OVERHEAD))


def machine_from_hardware(hardware: Hardware, *, vram: int | None = None, ram: int | None = None,
                          gpu_offload: bool = True) -> Machine:
    """The plan's machine for detected ``hardware``; ``vram``/``ram`` replace the detected free
    VRAM / available RAM (``vram=0``: no GPU). ``gpu_offload=False`` (a llama.cpp build that
    cannot offload) plans for the CPU, with a note. Raises nothing.
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
        unified_memory=bool(gpu is not None and gpu.unified_memory))
    return replace(machine, notes=tuple(notes))


@dataclass(frozen=True)
class Placement:
    """One candidate placement and what it costs (bytes) and reads per token (bytes)."""

    n_gpu_layers: int  # llama.cpp's count: 0 … n_layers + 1 (the output layer last)
    n_cpu_moe: int
    vram_bytes: int
    ram_bytes: int
    gpu_weight_bytes: int  # the GPU's model buffer
    gpu_read: float
    cpu_read: float
    overridden_tensors: int
    cpu_expert_layers: int  # GPU layers whose experts stay in RAM

    def tokens_per_s(self, machine: Machine) -> float:
        """Decode speed by memory bandwidth on ``machine``."""
        seconds = self.gpu_read / machine.gpu_bandwidth + self.cpu_read / machine.cpu_bandwidth
        return 1.0 / seconds if seconds > 0 else 0.0


class _LayerSums:
    """Running totals over a model's layers, so that a placement costs O(1), not O(layers):
    the planner tries O(layers²) placements, and a header may state up to 512 layers."""

    def __init__(self, model: MemoryModel) -> None:
        self.dense = [0]
        self.experts = [0]
        self.kv = [0]
        self.expert_tensors = [0]
        self.expert_layers = [0]  # layers that have expert bytes
        for layer in model.layers:
            self.dense.append(self.dense[-1] + layer.dense)
            self.experts.append(self.experts[-1] + layer.experts)
            self.kv.append(self.kv[-1] + layer.kv)
            self.expert_tensors.append(self.expert_tensors[-1] + layer.expert_tensors)
            self.expert_layers.append(self.expert_layers[-1] + (1 if layer.experts else 0))

    @staticmethod
    def between(sums: list[int], start: int, end: int) -> int:
        """The total of layers ``start`` … ``end - 1`` (0 for an empty range)."""
        return sums[end] - sums[start] if end > start else 0


def evaluate(model: MemoryModel, machine: Machine, n_gpu_layers: int,
             n_cpu_moe: int = 0) -> Placement:
    """What llama.cpp would allocate with ``n_gpu_layers`` (-1 = all) and ``n_cpu_moe``.

    Layers ``L - g`` … ``L - 1`` go to the GPU (with their KV cache); the output layer only when
    ``g > L``; the token embedding always stays in RAM; the experts of layers below ``n_cpu_moe``
    stay in RAM. Raises nothing (out-of-range values are clamped).
    """
    return _evaluate(model, _LayerSums(model), machine, n_gpu_layers, n_cpu_moe)


def _evaluate(model: MemoryModel, sums: _LayerSums, machine: Machine, n_gpu_layers: int,
              n_cpu_moe: int) -> Placement:
    n_layers = model.n_layers
    g = n_layers + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layers + 1)
    n = max(0, min(n_cpu_moe, n_layers))
    first_gpu = max(0, n_layers - g)
    frac = model.used_fraction
    between = _LayerSums.between
    # CPU layers [0, first_gpu); GPU layers with their experts in RAM [first_gpu, split);
    # GPU layers with their experts on the GPU [split, n_layers).
    split = max(first_gpu, n)
    cpu_dense = between(sums.dense, 0, first_gpu)
    cpu_experts = between(sums.experts, 0, first_gpu)
    cpu_kv = between(sums.kv, 0, first_gpu)
    gpu_dense = between(sums.dense, first_gpu, n_layers)
    gpu_kv = between(sums.kv, first_gpu, n_layers)
    ram_experts = between(sums.experts, first_gpu, split)
    gpu_experts = between(sums.experts, split, n_layers)
    overridden = sums.expert_tensors[n]
    cpu_expert_layers = between(sums.expert_layers, first_gpu, split)
    gpu_w = gpu_dense + gpu_experts
    gpu_read = gpu_dense + gpu_kv * KV_FILL + gpu_experts * frac
    cpu_w = cpu_dense + cpu_experts + ram_experts
    cpu_read = (cpu_dense + cpu_experts * frac + cpu_kv * KV_FILL) + ram_experts * frac
    if g > n_layers:
        gpu_w += model.output_bytes + model.tied_output_bytes
        gpu_read += model.output_bytes + model.tied_output_bytes
    else:
        cpu_w += model.output_bytes
        cpu_read += model.output_bytes
    cpu_w += model.input_bytes
    on_gpu = g > 0 and machine.has_gpu
    vram = gpu_w + gpu_kv + model.compute_bytes + machine.gpu_overhead if on_gpu else 0
    cpu_computes = not on_gpu or g <= n_layers or cpu_expert_layers > 0
    ram = cpu_w + cpu_kv + (model.compute_bytes if cpu_computes else 0)
    if not on_gpu:  # everything in RAM
        ram = model.weight_bytes + model.kv_bytes + model.compute_bytes
        gpu_read, cpu_read = 0.0, cpu_read + gpu_read
        gpu_w = 0
    return Placement(g if on_gpu else 0, n, vram, ram, gpu_w, gpu_read, cpu_read, overridden,
                     cpu_expert_layers if on_gpu else 0)


def _candidates(model: MemoryModel, machine: Machine) -> Iterator[Placement]:
    """Every placement llama.cpp can make: O(layers²) for an MoE model, each in O(1)."""
    sums = _LayerSums(model)
    n_layers = model.n_layers
    yield _evaluate(model, sums, machine, 0, 0)
    if not machine.has_gpu:
        return
    moe = model.is_moe
    for g in range(1, n_layers + 2):
        first_gpu = max(0, n_layers - g)
        yield _evaluate(model, sums, machine, g, 0)
        if moe:
            for n in range(first_gpu + 1, n_layers + 1):
                yield _evaluate(model, sums, machine, g, n)


def _fits(p: Placement, machine: Machine) -> bool:
    if p.vram_bytes > machine.vram_budget:
        return False
    if machine.unified_memory:
        return p.vram_bytes + p.ram_bytes <= machine.ram_budget
    return p.ram_bytes <= machine.ram_budget


@dataclass(frozen=True)
class Plan:
    """The chosen placement, its verdict and the words that explain it.

    ``n_gpu_layers`` counts like llama.cpp's log ("offloaded 33/33 layers": 32 blocks and the
    output layer); :attr:`load_gpu_layers` is what to pass to the engine (-1 = all).
    ``vram_bytes``/``ram_bytes``: planned use; ``gpu_weight_bytes``: the expected GPU model
    buffer; ``overridden_tensors``: expert tensors the engine log should show moved to the CPU.
    ``ram_split``: of the RAM, what the engine holds resident and what stays mapped from the file
    (:mod:`.resident`); None for a plan that does not fit.
    """

    verdict: Verdict
    n_gpu_layers: int
    n_cpu_moe: int
    n_layers: int
    vram_bytes: int
    ram_bytes: int
    gpu_weight_bytes: int
    overridden_tensors: int
    tokens_per_s: float
    explanation: str
    model_name: str
    n_ctx: int
    kv_type: str
    vram_budget: int
    ram_budget: int
    machine: Machine = field(compare=False, repr=False)
    exact: bool = True
    ram_split: RamSplit | None = field(default=None, compare=False, repr=False)

    @property
    def load_gpu_layers(self) -> int:
        """``LoadOptions.n_gpu_layers`` for this plan: -1 for all layers."""
        return -1 if self.n_gpu_layers > self.n_layers else self.n_gpu_layers

    @property
    def fits(self) -> bool:
        """Whether the model can run at all."""
        return self.verdict != "too-large"

    def to_json_dict(self) -> dict[str, Any]:
        """The plan as JSON-safe values."""
        return {
            "verdict": self.verdict, "n_gpu_layers": self.n_gpu_layers,
            "n_cpu_moe": self.n_cpu_moe, "n_layers": self.n_layers,
            "vram_bytes": self.vram_bytes, "ram_bytes": self.ram_bytes,
            "gpu_weight_bytes": self.gpu_weight_bytes,
            "overridden_tensors": self.overridden_tensors,
            "tokens_per_s": round(self.tokens_per_s, 2), "explanation": self.explanation,
            "model": self.model_name, "n_ctx": self.n_ctx, "kv_type": self.kv_type,
            "vram_budget": self.vram_budget, "ram_budget": self.ram_budget,
            "exact": self.exact,
            "ram_split": self.ram_split.to_json_dict() if self.ram_split else None,
            "machine": {"vram_bytes": self.machine.vram_bytes,
                        "ram_bytes": self.machine.ram_bytes, "gpu": self.machine.gpu_name,
                        "gpu_bandwidth_gbps": round(self.machine.gpu_bandwidth / GB),
                        "cpu_bandwidth_gbps": round(self.machine.cpu_bandwidth / GB),
                        "notes": list(self.machine.notes)},
        }


def _verdict(model: MemoryModel, p: Placement) -> Verdict:
    if p.n_gpu_layers == 0:
        return "cpu"
    if p.n_gpu_layers <= model.n_layers:
        return "partial"
    return "gpu+cpu-experts" if p.cpu_expert_layers else "gpu"


def _explain(model: MemoryModel, machine: Machine, p: Placement, verdict: Verdict,
             tps: float) -> str:
    total = model.n_layers + 1
    values = {"total": total, "layers": model.n_layers, "gpu_layers": p.n_gpu_layers,
              "cpu_layers": total - p.n_gpu_layers, "expert_layers": p.cpu_expert_layers,
              "vram": format_memory(p.vram_bytes),
              "vram_budget": format_memory(machine.vram_budget),
              "ram": format_memory(p.ram_bytes),
              "ram_budget": format_memory(machine.ram_budget),
              "speed": f"{tps:.1f}"}
    if verdict == "gpu":
        text = tr("all {total} layers on the GPU; {vram} VRAM of {vram_budget} usable, {ram} RAM "
                  "of {ram_budget}; about {speed} tok/s by memory bandwidth", **values)
    elif verdict == "gpu+cpu-experts":
        text = tr("all {total} layers on the GPU, experts of {expert_layers} of {layers} layers "
                  "in RAM; {vram} VRAM of {vram_budget} usable, {ram} RAM of {ram_budget}; "
                  "about {speed} tok/s by memory bandwidth", **values)
    elif verdict == "partial" and p.cpu_expert_layers:
        text = tr("{gpu_layers} of {total} layers on the GPU, the other {cpu_layers} on the CPU, "
                  "experts of {expert_layers} GPU layers in RAM; {vram} VRAM of {vram_budget} "
                  "usable, {ram} RAM of {ram_budget}; about {speed} tok/s by memory bandwidth",
                  **values)
    elif verdict == "partial":
        text = tr("{gpu_layers} of {total} layers on the GPU, the other {cpu_layers} on the CPU; "
                  "{vram} VRAM of {vram_budget} usable, {ram} RAM of {ram_budget}; about {speed} "
                  "tok/s by memory bandwidth", **values)
    elif machine.has_gpu:
        text = tr("all {total} layers on the CPU; {ram} RAM of {ram_budget}; about {speed} tok/s "
                  "by memory bandwidth", **values)
    else:
        text = tr("all {total} layers on the CPU (no GPU); {ram} RAM of {ram_budget}; about "
                  "{speed} tok/s by memory bandwidth", **values)
    if model.exact:
        return text
    return tr("{plan} (estimated from the catalog, not the file's header)", plan=text)


def _too_large(model: MemoryModel, machine: Machine) -> str:
    cpu = evaluate(model, machine, 0, 0)
    values = {"needed": format_memory(cpu.ram_bytes), "ram": format_memory(machine.ram_budget)}
    if machine.has_gpu and not machine.unified_memory:
        least = min(c.ram_bytes + c.vram_bytes for c in _candidates(model, machine)
                     if c.n_gpu_layers > 0)
        return tr("does not fit: on the CPU alone it needs {needed} RAM, and this machine has "
                  "{ram} usable; split between GPU and RAM it needs at least {least} in all, and "
                  "this machine has {vram} VRAM + {ram} RAM usable", least=format_memory(least),
                  vram=format_memory(machine.vram_budget), **values)
    return tr("does not fit: on the CPU alone it needs {needed} RAM, and this machine has {ram} "
              "usable", **values)


def _plan_from(model: MemoryModel, machine: Machine, p: Placement | None) -> Plan:
    if p is None:
        return Plan("too-large", 0, 0, model.n_layers, 0, 0, 0, 0, 0.0,
                    _too_large(model, machine), model.name, model.n_ctx, model.kv_type,
                    machine.vram_budget, machine.ram_budget, machine, model.exact)
    verdict = _verdict(model, p)
    tps = p.tokens_per_s(machine)
    return Plan(verdict, p.n_gpu_layers, p.n_cpu_moe, model.n_layers, p.vram_bytes, p.ram_bytes,
                p.gpu_weight_bytes, p.overridden_tensors, tps,
                _explain(model, machine, p, verdict, tps), model.name, model.n_ctx,
                model.kv_type, machine.vram_budget, machine.ram_budget, machine, model.exact,
                model.ram_split(p.n_gpu_layers, p.n_cpu_moe))


def plan_offload(model: MemoryModel, machine: Machine, *, max_vram: int | None = None) -> Plan:
    """The fastest placement of ``model`` that fits ``machine`` (verdict ``too-large`` when none
    does). Ties go to the plan using less VRAM, then less RAM. ``max_vram`` caps the VRAM the
    plan may use below the machine's budget (for a safer plan after an out-of-memory load).
    Raises nothing.
    """
    cap = machine.vram_budget if max_vram is None else min(max_vram, machine.vram_budget)
    feasible = (p for p in _candidates(model, machine)
                if _fits(p, machine) and p.vram_bytes <= cap)
    best = max(feasible, key=lambda p: (round(p.tokens_per_s(machine), 9), -p.vram_bytes,
                                        -p.ram_bytes), default=None)
    return _plan_from(model, machine, best)


def plan_for_settings(model: MemoryModel, machine: Machine, n_gpu_layers: int,
                      n_cpu_moe: int = 0) -> Plan:
    """The plan for a placement chosen by hand (``chat --gpu-layers N --cpu-moe M``), fitting or
    not, to compare with what llama.cpp then does. Raises nothing."""
    return _plan_from(model, machine, evaluate(model, machine, n_gpu_layers, n_cpu_moe))


def safer_plan(model: MemoryModel, machine: Machine, failed: Plan) -> Plan | None:
    """The next safer plan after ``failed`` ran out of memory: the best one using at most
    :data:`FALLBACK_VRAM_SHARE` of its VRAM; None when ``failed`` used no GPU. Raises nothing."""
    if failed.vram_bytes <= 0:
        return None
    safer = plan_offload(model, machine, max_vram=int(failed.vram_bytes * FALLBACK_VRAM_SHARE))
    return safer if safer.fits else None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether a failed load ran out of (GPU) memory, by llama.cpp's words in the message."""
    return isinstance(error, ModelLoadError | EngineCrashedError) and \
        _OOM.search(str(error)) is not None


def apply_plan(options: LoadOptions, plan: Plan) -> LoadOptions:
    """``options`` with the plan's ``n_gpu_layers`` and ``n_cpu_moe``."""
    return options.model_copy(update={"n_gpu_layers": plan.load_gpu_layers,
                                      "n_cpu_moe": plan.n_cpu_moe})


def load_with_fallback(load: Callable[[LoadOptions], _T], options: LoadOptions, plan: Plan,
                       model: MemoryModel, machine: Machine,
                       say: Callable[[str], None]) -> tuple[_T, Plan]:
    """Load with ``plan``; if that runs out of memory, say so and load once with the next safer
    plan. Returns the load's result and the plan that worked.

    Raises:
        ModelLoadError, EngineCrashedError: the load failed for another reason, no safer plan
            exists, or the safer plan failed too (any error ``load`` raises passes through).
    """
    try:
        return load(apply_plan(options, plan)), plan
    except (ModelLoadError, EngineCrashedError) as error:
        if not is_out_of_memory(error):
            raise
        safer = safer_plan(model, machine, plan)
        if safer is None:
            raise
        say(tr("Loading ran out of memory with {gpu_layers} layers on the GPU and the experts "
               "of {expert_layers} layers in RAM ({vram} VRAM planned); trying once more with a "
               "safer plan: {plan}", gpu_layers=plan.n_gpu_layers, expert_layers=plan.n_cpu_moe,
               vram=format_memory(plan.vram_bytes), plan=safer.explanation))
        return load(apply_plan(options, safer)), safer


def planning_inputs(options: LoadOptions, facts: ModelFacts, hardware: Hardware,
                    backend: BackendInfo) -> tuple[MemoryModel, Machine]:
    """The memory model of ``facts`` for ``options`` (context, KV type, flash attention, ubatch)
    and the machine to plan for (the CPU alone when ``backend`` cannot offload). Raises nothing.
    """
    from .memory_model import memory_model_from_facts
    from .resident import build_facts

    machine = machine_from_hardware(hardware, gpu_offload=backend.gpu_offload)
    features, host_buffers = build_facts(backend)
    model = memory_model_from_facts(facts, options.n_ctx, options.kv_type,
                                    flash_attn=options.flash_attn, n_ubatch=options.n_ubatch,
                                    features=features, use_mmap=options.use_mmap,
                                    use_mlock=options.use_mlock, gpu_host_buffers=host_buffers)
    return model, machine


def auto_load(load: Callable[[LoadOptions], ModelInfo], options: LoadOptions, facts: ModelFacts,
              hardware: Hardware, backend: BackendInfo, say: Callable[[str], None], *,
              cpu_moe: int | None = None) -> tuple[ModelInfo, Plan, list[str]]:
    """Plan GPU layers and expert placement for this machine, say the plan, load with it (once
    more with a safer plan after running out of memory) and compare the plan with what llama.cpp
    did: ``chat --gpu-layers auto`` and the GUI's "Automatic" GPU layers.

    ``cpu_moe`` keeps the plan's GPU layers but fixes the layers whose experts stay in RAM. A
    model that fits nowhere is tried on the CPU anyway, after saying so. ``say`` gets sentences
    for the user (it may be called from a worker thread). Returns the loaded model's facts, the
    plan that was used and the plan-vs-actual warnings (empty when they agree).

    Raises:
        DeskError: the engine cannot load the model (see :func:`load_with_fallback`).
    """
    model, machine = planning_inputs(options, facts, hardware, backend)
    plan = plan_offload(model, machine)
    if cpu_moe is not None and plan.fits:
        plan = plan_for_settings(model, machine, plan.n_gpu_layers, cpu_moe)
    if not plan.fits:
        say(tr("{name} {plan}; trying on the CPU anyway", name=facts.path.name,
               plan=plan.explanation))
        plan = plan_for_settings(model, machine, 0, 0)
    else:
        say(tr("plan: {plan}", plan=plan.explanation))
    info, plan = load_with_fallback(load, options, plan, model, machine, say)
    return info, plan, compare_with_actual(plan, info)


def _gpu_model_buffer(buffers: Sequence[tuple[str, str, int]]) -> int | None:
    gpu = [size for device, kind, size in buffers
           if kind == "model" and not device.upper().startswith("CPU")
           and not device.endswith("_Host")]
    return sum(gpu) if gpu else None


def compare_with_actual(plan: Plan, info: ModelInfo) -> list[str]:
    """Differences between ``plan`` and what llama.cpp did (from its log, in ``info``): layers
    offloaded, expert tensors kept in RAM, the GPU model buffer (tolerance max(64 MiB, 5 %)), and
    the RAM held resident and mapped (:func:`.resident.compare_ram_with_actual`).
    Empty when they agree. Raises nothing."""
    from .resident import compare_ram_with_actual

    warnings: list[str] = []
    offload = info.backend.gpu_offload
    expected_layers = plan.n_gpu_layers if offload else 0
    if info.n_gpu_layers != expected_layers:
        warnings.append(tr("the plan put {expected} layers on the GPU, but llama.cpp offloaded "
                           "{actual} of {total}", expected=expected_layers,
                           actual=info.n_gpu_layers, total=info.n_layers + 1))
    if info.overridden_tensors != plan.overridden_tensors:
        warnings.append(tr("the plan keeps {expected} expert tensors in RAM, but llama.cpp's log "
                           "shows {actual} moved there", expected=plan.overridden_tensors,
                           actual=info.overridden_tensors))
    actual = _gpu_model_buffer(info.buffers)
    if offload and actual is not None and plan.n_gpu_layers > 0:
        tolerance = max(64 * MiB, int(plan.gpu_weight_bytes * 0.05))
        if abs(actual - plan.gpu_weight_bytes) > tolerance:
            warnings.append(tr("the plan expected {expected} of weights on the GPU, but "
                               "llama.cpp allocated {actual}",
                               expected=format_memory(plan.gpu_weight_bytes),
                               actual=format_memory(actual)))
    if plan.ram_split is not None:
        warnings += compare_ram_with_actual(plan.ram_split, info.buffers,
                                            cpu_only=not (offload and plan.n_gpu_layers > 0))
    return warnings


def plan_for_catalog_entry(entry: CatalogEntry, machine: Machine,
                           n_ctx: int | None = None) -> Plan:
    """The plan for a catalog entry from its figures alone (no header; ``exact`` is False): what
    the catalog's fit hints show. Raises nothing."""
    from .memory_model import memory_model_from_catalog

    return plan_offload(memory_model_from_catalog(entry, n_ctx), machine)


def verdict_rank(verdict: Verdict) -> int:
    """0 for ``gpu`` … 4 for ``too-large`` (smaller is better)."""
    return VERDICTS.index(verdict)


__all__ = [
    "APPLE_CPU_BANDWIDTH", "CPU_BANDWIDTH", "DEFAULT_GPU_BANDWIDTH", "GPU_BANDWIDTH_TABLE",
    "GPU_OVERHEAD", "Machine", "Placement", "Plan", "Verdict", "apply_plan", "auto_load",
    "compare_with_actual", "evaluate", "gpu_bandwidth", "is_out_of_memory", "load_with_fallback",
    "machine_from_hardware", "plan_for_catalog_entry", "plan_for_settings", "plan_offload",
    "planning_inputs", "safer_plan", "simulated_machine", "verdict_rank",
]
