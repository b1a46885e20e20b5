"""The offload plan: how many layers go on the GPU and how many layers keep their experts in RAM.

Given a :class:`~mixtral_desk.core.memory_model.MemoryModel` and a :class:`Machine`,
:func:`plan_offload` walks one chain of placements llama.cpp can make — ``n_gpu_layers`` g
(counted like llama.cpp's "offloaded g/L+1": the llama.cpp of llama-cpp-python 0.3.36 puts the
output layer on the GPU first, then the last g-1 repeating layers, ``i_gpu_start = L + 1 - g``
in its ``load_tensors``), ``n_cpu_moe`` n (the experts of layers 0 … n-1 stay in CPU memory)
and, for the layer at the boundary, some of its expert tensors (gate, up, down) in RAM and the
rest on the GPU — and keeps the fastest that fits free VRAM less a safety margin and the RAM.

The chain is the order in which more VRAM is best spent, as llama.cpp's own ``--fit`` fills a
GPU: first the output layer, then the attention (and every other dense tensor, shared experts
included) of one layer after another with all experts in RAM, then the experts of one layer
after another, tensor by tensor at the boundary. Each step uses more VRAM and less RAM than the one
before, so with more VRAM the plan only moves along the chain: it never moves a layer's attention
back to the CPU, and (the fastest of a longer stretch of the chain) it is never predicted slower.
A dense byte on the GPU saves four times what an expert byte saves (Mixtral: 2 of 8 experts), so
attention goes first.

Speeds come from :mod:`.speed_model`: decode by memory bandwidth and prompt evaluation by
arithmetic, with this machine's measured CPU (:mod:`.cpu_speed`) and, once the app has decoded
with a model here, calibrated by what it measured (:mod:`.measured_speeds`).

The machine's figures and the planner's margins are in :mod:`.machine`.

Why one module of over 500 lines: the plan, its explanation to the user and the comparison with
what llama.cpp did speak the same terms (layers, expert tensors, buffers); the memory model, the
speed model and the measured speeds live in modules of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .errors import EngineCrashedError, ModelLoadError
from .i18n import tr
from .machine import (
    APPLE_CPU_BANDWIDTH,
    CPU_BANDWIDTH,
    CPU_FLOPS,
    DEFAULT_GPU_BANDWIDTH,
    DEFAULT_GPU_OVERHEAD,
    GB,
    GPU_BANDWIDTH_TABLE,
    GPU_OVERHEAD,
    RAM_MARGIN_MIN,
    RAM_MARGIN_SHARE,
    RAM_PROCESS_OVERHEAD,
    VRAM_MARGIN_MIN,
    VRAM_MARGIN_SHARE,
    Machine,
    gpu_bandwidth,
    machine_from_hardware,
    simulated_machine,
)
from .speed_model import (
    DECODE_FILL_TOKENS,
    Calibration,
    ModelShape,
    Sample,
    Speed,
    Traffic,
    calibrate,
    decode_seconds,
    predict,
    prompt_seconds,
)
from .units import MiB, format_memory

if TYPE_CHECKING:
    from .catalog import CatalogEntry
    from .engine import BackendInfo, LoadOptions, ModelInfo
    from .gguf.model_file import ModelFacts
    from .hardware import Hardware
    from .measured_speeds import ModelSpeeds
    from .memory_model import MemoryModel
    from .model_layout import ModelLayout
    from .resident import RamSplit

Verdict = Literal["gpu", "gpu+cpu-experts", "partial", "cpu", "too-large"]
VERDICTS: tuple[Verdict, ...] = ("gpu", "gpu+cpu-experts", "partial", "cpu", "too-large")

#: The share of the KV cache a token reads on average over a conversation (half full).
KV_FILL = 0.5
#: A fallback plan after an out-of-memory load uses at most this share of the failed plan's VRAM.
FALLBACK_VRAM_SHARE = 0.8

_OOM = re.compile(r"out of memory|failed to allocate|unable to allocate|cudaMalloc failed|"
                  r"ErrorOutOfDeviceMemory|insufficient memory|not enough memory", re.IGNORECASE)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Placement:
    """One candidate placement: what it costs (bytes) and what a token reads where.

    ``cpu_moe_tensors``: the kinds of expert tensors of layer ``n_cpu_moe`` kept in RAM too (the
    boundary layer split tensor by tensor). ``cpu_expert_layers``: GPU layers whose experts all
    stay in RAM.
    """

    n_gpu_layers: int  # llama.cpp's count: 0 … n_layers + 1 (the output layer first)
    n_cpu_moe: int
    vram_bytes: int
    ram_bytes: int
    gpu_weight_bytes: int  # the GPU's model buffer
    traffic: Traffic
    overridden_tensors: int
    cpu_expert_layers: int
    n_ctx: int
    cpu_moe_tensors: tuple[str, ...] = ()

    @property
    def attention_gpu_layers(self) -> int:
        """Layers whose attention (and KV cache) is on the GPU."""
        return self.traffic.gpu_layers

    @property
    def gpu_read(self) -> float:
        """Bytes a token reads from VRAM with the context half full."""
        return self.traffic.gpu_weights + self.traffic.gpu_kv * self.n_ctx * KV_FILL

    @property
    def cpu_read(self) -> float:
        """Bytes a token reads from RAM with the context half full."""
        return self.traffic.cpu_weights + self.traffic.cpu_kv * self.n_ctx * KV_FILL

    def tokens_per_s(self, machine: Machine, fill: float | None = None,
                     shape: ModelShape | None = None) -> float:
        """Decode speed on ``machine`` (not calibrated) with ``fill`` tokens of context (default:
        :data:`~.speed_model.DECODE_FILL_TOKENS`, the first replies of a chat) for a model of
        ``shape`` (its weights per byte)."""
        tokens = min(DECODE_FILL_TOKENS, self.n_ctx) if fill is None else fill
        seconds = decode_seconds(self.traffic, machine.rates(), tokens, shape)
        return 1.0 / seconds if seconds > 0 else 0.0


class _LayerSums:
    """Running totals over a model's layers, so that a placement costs O(1), not O(layers): a
    header may state up to 512 layers."""

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


def evaluate(model: MemoryModel, machine: Machine, n_gpu_layers: int, n_cpu_moe: int = 0,
             cpu_moe_tensors: Sequence[str] = (), layout: ModelLayout | None = None) -> Placement:
    """What llama.cpp would allocate with ``n_gpu_layers`` (-1 = all), ``n_cpu_moe`` and the
    ``cpu_moe_tensors`` kinds of layer ``n_cpu_moe`` in RAM (their bytes from ``layout``;
    ignored without it).

    With ``g`` ≥ 1 the output layer and layers ``L + 1 - g`` … ``L - 1`` go to the GPU (with
    their KV cache), as llama.cpp assigns them; the token embedding always stays in RAM; the
    experts of layers below ``n_cpu_moe`` stay in RAM. Raises nothing (out-of-range values are
    clamped).
    """
    return _evaluate(model, _LayerSums(model), machine, n_gpu_layers, n_cpu_moe,
                     tuple(cpu_moe_tensors), layout)


def _evaluate(model: MemoryModel, sums: _LayerSums, machine: Machine, n_gpu_layers: int,
              n_cpu_moe: int, partial: tuple[str, ...] = (),
              layout: ModelLayout | None = None) -> Placement:
    n_layers = model.n_layers
    g = n_layers + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layers + 1)
    n = max(0, min(n_cpu_moe, n_layers))
    first_gpu = min(n_layers, max(0, n_layers + 1 - g))  # the output layer goes first
    frac = model.used_fraction
    between = _LayerSums.between
    # CPU layers [0, first_gpu); GPU layers with their experts in RAM [first_gpu, split); the
    # boundary layer n, part of whose experts may be in RAM; GPU layers with their experts on
    # the GPU [split, n_layers).
    split = max(first_gpu, n)
    part_bytes, part_tensors = (0, 0)
    if partial and layout is not None and n < n_layers:
        part_bytes, part_tensors = layout.kind_bytes(n, partial)
        if n < first_gpu:  # a CPU layer: its experts are in RAM anyway
            part_bytes = 0
    if not part_tensors:
        partial = ()
    cpu_dense = between(sums.dense, 0, first_gpu)
    cpu_experts = between(sums.experts, 0, first_gpu)
    cpu_kv = between(sums.kv, 0, first_gpu)
    gpu_dense = between(sums.dense, first_gpu, n_layers)
    gpu_kv = between(sums.kv, first_gpu, n_layers)
    ram_experts = between(sums.experts, first_gpu, split) + part_bytes
    gpu_experts = between(sums.experts, split, n_layers) - part_bytes
    overridden = sums.expert_tensors[n] + part_tensors
    cpu_expert_layers = between(sums.expert_layers, first_gpu, split)
    gpu_w = gpu_dense + gpu_experts
    gpu_read = gpu_dense + gpu_experts * frac
    cpu_w = cpu_dense + cpu_experts + ram_experts
    cpu_read = cpu_dense + (cpu_experts + ram_experts) * frac
    if g > 0:
        gpu_w += model.output_bytes + model.tied_output_bytes
        gpu_read += model.output_bytes + model.tied_output_bytes
    else:
        cpu_w += model.output_bytes
        cpu_read += model.output_bytes
    on_gpu = g > 0 and machine.has_gpu
    ctx = max(1, model.n_ctx)
    if not on_gpu:  # everything in RAM
        ram = model.weight_bytes + model.kv_bytes + model.compute_bytes
        traffic = Traffic(0.0, cpu_read + gpu_read, 0.0, model.kv_bytes / ctx, 0, n_layers,
                          float(cpu_w + gpu_w), 0.0)
        return Placement(0, n, 0, ram, 0, traffic, overridden, 0, model.n_ctx, partial)
    vram = gpu_w + gpu_kv + model.compute_bytes + machine.gpu_overhead
    cpu_computes = g <= n_layers or ram_experts > 0
    ram = cpu_w + model.input_bytes + cpu_kv + (model.compute_bytes if cpu_computes else 0)
    traffic = Traffic(gpu_read, cpu_read, gpu_kv / ctx, cpu_kv / ctx, n_layers - first_gpu,
                      first_gpu, float(cpu_w), float(gpu_w),
                      cpu_expert_layers + (1 if part_bytes else 0))
    return Placement(g, n, vram, ram, gpu_w, traffic, overridden, cpu_expert_layers, model.n_ctx,
                     partial)


def _chain(model: MemoryModel, machine: Machine,
           layout: ModelLayout | None = None) -> Iterator[Placement]:
    """The placements in the order more VRAM is best spent (see the module docstring): the CPU
    alone; then the output layer and layer after layer on the GPU with its experts in RAM;
    then the experts of layer after layer on the GPU, the boundary layer tensor by tensor. Each
    uses at least as much VRAM and at most as much RAM as the one before; O(layers), each O(1).
    """
    sums = _LayerSums(model)
    n_layers = model.n_layers
    yield _evaluate(model, sums, machine, 0, 0)
    if not machine.has_gpu:
        return
    moe = model.is_moe
    for g in range(1, n_layers + 2):
        yield _evaluate(model, sums, machine, g, n_layers if moe else 0)
    if not moe:
        return
    for layer in range(n_layers - 1, -1, -1):
        if layout is not None:
            for part in layout.splits(layer):
                yield _evaluate(model, sums, machine, n_layers + 1, layer, part.in_ram, layout)
        yield _evaluate(model, sums, machine, n_layers + 1, layer)


_candidates = _chain  # the name of the search before it became a chain


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
    buffer; ``overridden_tensors``: expert tensors the engine log should show moved to the CPU;
    ``cpu_moe_tensors``: the kinds of expert tensors of layer ``n_cpu_moe`` kept in RAM too.
    ``ram_split``: of the RAM, what the engine holds resident and what stays mapped from the file
    (:mod:`.resident`); None for a plan that does not fit. ``tokens_per_s``: the predicted decode
    speed of the first replies (calibrated by measured replies where there are any); ``speed``:
    all the predicted speeds and their calibration.
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
    cpu_moe_tensors: tuple[str, ...] = ()
    attention_gpu_layers: int = 0
    speed: Speed | None = field(default=None, compare=False)

    @property
    def load_gpu_layers(self) -> int:
        """``LoadOptions.n_gpu_layers`` for this plan: -1 for all layers."""
        return -1 if self.n_gpu_layers > self.n_layers else self.n_gpu_layers

    @property
    def fits(self) -> bool:
        """Whether the model can run at all."""
        return self.verdict != "too-large"

    @property
    def prompt_tokens_per_s(self) -> float:
        """The predicted prompt evaluation speed (0.0 for a plan that does not fit)."""
        return self.speed.prompt if self.speed is not None else 0.0

    @property
    def calibration(self) -> Calibration:
        """What measured replies changed in the predictions (nothing when none exist)."""
        return self.speed.calibration if self.speed is not None else Calibration()

    def to_json_dict(self) -> dict[str, Any]:
        """The plan as JSON-safe values."""
        speed, cal = self.speed, self.calibration

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "verdict": self.verdict, "n_gpu_layers": self.n_gpu_layers,
            "n_cpu_moe": self.n_cpu_moe, "cpu_moe_tensors": list(self.cpu_moe_tensors),
            "n_layers": self.n_layers, "attention_gpu_layers": self.attention_gpu_layers,
            "vram_bytes": self.vram_bytes, "ram_bytes": self.ram_bytes,
            "gpu_weight_bytes": self.gpu_weight_bytes,
            "overridden_tensors": self.overridden_tensors,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "decode_tokens_per_s": round(self.tokens_per_s, 2),
            "decode_tokens_per_s_full_context": rounded(speed.decode_full if speed else None),
            "prompt_tokens_per_s": rounded(speed.prompt if speed else None),
            "measured_decode_tokens_per_s": rounded(cal.measured_decode),
            "measured_prompt_tokens_per_s": rounded(cal.measured_prompt),
            "calibrated_by_replies": cal.replies,
            "explanation": self.explanation,
            "model": self.model_name, "n_ctx": self.n_ctx, "kv_type": self.kv_type,
            "vram_budget": self.vram_budget, "ram_budget": self.ram_budget,
            "exact": self.exact,
            "ram_split": self.ram_split.to_json_dict() if self.ram_split else None,
            "machine": {"vram_bytes": self.machine.vram_bytes,
                        "ram_bytes": self.machine.ram_bytes, "gpu": self.machine.gpu_name,
                        "gpu_bandwidth_gbps": round(self.machine.gpu_bandwidth / GB),
                        "cpu_bandwidth_gbps": round(self.machine.cpu_decode_rate / GB, 1),
                        "cpu_flops_gflops": round(self.machine.cpu_flops / GB),
                        "cpu_measured": self.machine.cpu_measured,
                        "threads": self.machine.threads,
                        "notes": list(self.machine.notes)},
        }


def _verdict(model: MemoryModel, p: Placement) -> Verdict:
    if p.n_gpu_layers == 0:
        return "cpu"
    if p.n_gpu_layers <= model.n_layers:
        return "partial"
    return "gpu+cpu-experts" if p.cpu_expert_layers or p.cpu_moe_tensors else "gpu"


def _explain(model: MemoryModel, machine: Machine, p: Placement, verdict: Verdict,
             speed: Speed) -> str:
    total = model.n_layers + 1
    values = {"total": total, "layers": model.n_layers, "gpu_layers": p.n_gpu_layers,
              "cpu_layers": total - p.n_gpu_layers, "expert_layers": p.cpu_expert_layers}
    if verdict == "gpu":
        placement = tr("all {total} layers on the GPU", **values)
    elif verdict == "gpu+cpu-experts":
        placement = tr("all {total} layers on the GPU, experts of {expert_layers} of {layers} "
                       "layers in RAM", **values)
    elif verdict == "partial" and p.cpu_expert_layers:
        placement = tr("{gpu_layers} of {total} layers on the GPU, the other {cpu_layers} on the "
                       "CPU, experts of {expert_layers} GPU layers in RAM", **values)
    elif verdict == "partial":
        placement = tr("{gpu_layers} of {total} layers on the GPU, the other {cpu_layers} on the "
                       "CPU", **values)
    elif machine.has_gpu:
        placement = tr("all {total} layers on the CPU", **values)
    else:
        placement = tr("all {total} layers on the CPU (no GPU)", **values)
    if p.cpu_moe_tensors and verdict != "cpu":
        placement = tr("{placement}, and layer {layer} split: its {kinds} experts in RAM, the "
                       "others on the GPU", placement=placement, layer=p.n_cpu_moe,
                       kinds="+".join(p.cpu_moe_tensors))
    memory_values = {"vram": format_memory(p.vram_bytes),
                     "vram_budget": format_memory(machine.vram_budget),
                     "ram": format_memory(p.ram_bytes),
                     "ram_budget": format_memory(machine.ram_budget)}
    memory = (tr("{vram} VRAM of {vram_budget} usable, {ram} RAM of {ram_budget}",
                 **memory_values) if verdict != "cpu" else
              tr("{ram} RAM of {ram_budget}", **memory_values))
    rate = f"{speed.decode:.1f}"
    how = (tr("about {speed} tok/s as measured on this machine", speed=rate)
           if speed.calibration.calibrated else
           tr("about {speed} tok/s by memory bandwidth", speed=rate))
    text = tr("{placement}; {memory}; {speed}", placement=placement, memory=memory, speed=how)
    if model.exact:
        return text
    return tr("{plan} (estimated from the catalog, not the file's header)", plan=text)


def _too_large(model: MemoryModel, machine: Machine) -> str:
    cpu = evaluate(model, machine, 0, 0)
    values = {"needed": format_memory(cpu.ram_bytes), "ram": format_memory(machine.ram_budget)}
    if machine.has_gpu and not machine.unified_memory:
        least = min(c.ram_bytes + c.vram_bytes for c in _chain(model, machine)
                    if c.n_gpu_layers > 0)
        return tr("does not fit: on the CPU alone it needs {needed} RAM, and this machine has "
                  "{ram} usable; split between GPU and RAM it needs at least {least} in all, and "
                  "this machine has {vram} VRAM + {ram} RAM usable", least=format_memory(least),
                  vram=format_memory(machine.vram_budget), **values)
    return tr("does not fit: on the CPU alone it needs {needed} RAM, and this machine has {ram} "
              "usable", **values)


def _calibration(model: MemoryModel, machine: Machine, p: Placement,
                 layout: ModelLayout | None, measured: ModelSpeeds | None) -> Calibration:
    """What the replies measured with this model on this machine say about ``p``'s speeds."""
    if measured is None or not measured.samples:
        return Calibration()
    sums = _LayerSums(model)
    shape = layout.shape if layout is not None else ModelShape()
    key = (p.n_gpu_layers, p.n_cpu_moe, tuple(p.cpu_moe_tensors), machine.threads, model.kv_type)
    samples: list[Sample] = []
    predictions: dict[int, float] = {}
    for sample in measured.samples:
        at = machine.with_threads(sample.threads)
        q = _evaluate(model, sums, at, sample.n_gpu_layers, sample.n_cpu_moe,
                      sample.cpu_moe_tensors, layout)
        if sample.kind == "decode":
            seconds = decode_seconds(q.traffic, at.rates(), sample.position, shape)
            predicted = 1 / seconds if seconds > 0 else 0.0
        else:
            seconds = prompt_seconds(q.traffic, at.rates(), shape, sample.tokens,
                                     int(sample.position))
            predicted = sample.tokens / seconds if seconds > 0 else 0.0
        item = Sample(sample.kind, sample.tokens_per_s, sample.position, sample.tokens,
                      exact=sample.placement_key == key)
        predictions[id(item)] = predicted
        samples.append(item)
    return calibrate(samples, lambda s: predictions[id(s)])


def _plan_from(model: MemoryModel, machine: Machine, p: Placement | None,
               layout: ModelLayout | None = None, measured: ModelSpeeds | None = None) -> Plan:
    if p is None:
        return Plan("too-large", 0, 0, model.n_layers, 0, 0, 0, 0, 0.0,
                    _too_large(model, machine), model.name, model.n_ctx, model.kv_type,
                    machine.vram_budget, machine.ram_budget, machine, model.exact)
    verdict = _verdict(model, p)
    shape = layout.shape if layout is not None else ModelShape()
    speed = predict(p.traffic, machine.rates(), shape, model.n_ctx,
                    _calibration(model, machine, p, layout, measured))
    return Plan(verdict, p.n_gpu_layers, p.n_cpu_moe, model.n_layers, p.vram_bytes, p.ram_bytes,
                p.gpu_weight_bytes, p.overridden_tensors, speed.decode,
                _explain(model, machine, p, verdict, speed), model.name, model.n_ctx,
                model.kv_type, machine.vram_budget, machine.ram_budget, machine, model.exact,
                _ram_split(model, p, layout), p.cpu_moe_tensors, p.attention_gpu_layers, speed)


def _ram_split(model: MemoryModel, p: Placement, layout: ModelLayout | None) -> RamSplit:
    """The resident and mapped RAM of ``p``; a split boundary layer counts between its layer
    with all experts on the GPU and with all in RAM, by the share of its expert bytes in RAM."""
    low = model.ram_split(p.n_gpu_layers, p.n_cpu_moe)
    if not p.cpu_moe_tensors or layout is None or p.n_cpu_moe >= model.n_layers:
        return low
    high = model.ram_split(p.n_gpu_layers, p.n_cpu_moe + 1)
    share = layout.kind_bytes(p.n_cpu_moe, p.cpu_moe_tensors)[0] / max(
        1, model.layers[p.n_cpu_moe].experts)
    def between(name: str) -> int:
        return int(getattr(low, name) + (getattr(high, name) - getattr(low, name)) * share)

    return type(low)(weight_bytes=between("weight_bytes"), copied_bytes=between("copied_bytes"),
                     kv_bytes=low.kv_bytes, compute_bytes=low.compute_bytes,
                     output_bytes=low.output_bytes, mapped_bytes=between("mapped_bytes"),
                     mapped_read_bytes=between("mapped_read_bytes"), locked=low.locked)


def plan_offload(model: MemoryModel, machine: Machine, *, max_vram: int | None = None,
                 layout: ModelLayout | None = None,
                 measured: ModelSpeeds | None = None) -> Plan:
    """The fastest placement of ``model`` along the chain (see :func:`_chain`) that fits
    ``machine`` (verdict ``too-large`` when none does); of equally fast ones, the later. With a
    ``layout`` (from the header) the boundary layer may be split tensor by tensor; with
    ``measured`` speeds of this model on this machine the predictions are calibrated.
    ``max_vram`` caps the VRAM the plan may use below the machine's budget (for a safer plan
    after an out-of-memory load). Raises nothing.
    """
    cap = machine.vram_budget if max_vram is None else min(max_vram, machine.vram_budget)
    best: Placement | None = None
    best_speed = -1.0
    shape = layout.shape if layout is not None else None
    for p in _chain(model, machine, layout):
        if p.vram_bytes > cap:
            break  # VRAM only grows along the chain
        if _fits(p, machine) and (speed := round(p.tokens_per_s(machine, shape=shape),
                                                 9)) >= best_speed:
            best, best_speed = p, speed
    return _plan_from(model, machine, best, layout, measured)


def plan_for_settings(model: MemoryModel, machine: Machine, n_gpu_layers: int,
                      n_cpu_moe: int = 0, cpu_moe_tensors: Sequence[str] = (), *,
                      layout: ModelLayout | None = None,
                      measured: ModelSpeeds | None = None) -> Plan:
    """The plan for a placement chosen by hand (``chat --gpu-layers N --cpu-moe M``), fitting or
    not, to compare with what llama.cpp then does. Raises nothing."""
    return _plan_from(model, machine, evaluate(model, machine, n_gpu_layers, n_cpu_moe,
                                               cpu_moe_tensors, layout), layout, measured)


def safer_plan(model: MemoryModel, machine: Machine, failed: Plan, *,
               layout: ModelLayout | None = None,
               measured: ModelSpeeds | None = None) -> Plan | None:
    """The next safer plan after ``failed`` ran out of memory: the best one using at most
    :data:`FALLBACK_VRAM_SHARE` of its VRAM; None when ``failed`` used no GPU. Raises nothing."""
    if failed.vram_bytes <= 0:
        return None
    safer = plan_offload(model, machine, max_vram=int(failed.vram_bytes * FALLBACK_VRAM_SHARE),
                         layout=layout, measured=measured)
    return safer if safer.fits else None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether a failed load ran out of (GPU) memory, by llama.cpp's words in the message."""
    return isinstance(error, ModelLoadError | EngineCrashedError) and \
        _OOM.search(str(error)) is not None


def apply_plan(options: LoadOptions, plan: Plan) -> LoadOptions:
    """``options`` with the plan's ``n_gpu_layers``, ``n_cpu_moe`` and split layer."""
    return options.model_copy(update={"n_gpu_layers": plan.load_gpu_layers,
                                      "n_cpu_moe": plan.n_cpu_moe,
                                      "cpu_moe_tensors": plan.cpu_moe_tensors})


def load_with_fallback(load: Callable[[LoadOptions], _T], options: LoadOptions, plan: Plan,
                       model: MemoryModel, machine: Machine,
                       say: Callable[[str], None], *, layout: ModelLayout | None = None,
                       measured: ModelSpeeds | None = None) -> tuple[_T, Plan]:
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
        safer = safer_plan(model, machine, plan, layout=layout, measured=measured)
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
    and the machine to plan for (the CPU alone when ``backend`` cannot offload; decoding with the
    options' threads). Raises nothing.
    """
    from .memory_model import memory_model_from_facts
    from .resident import build_facts

    machine = machine_from_hardware(hardware, gpu_offload=backend.gpu_offload,
                                    threads=options.n_threads)
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
    from .measured_speeds import speeds_for_facts
    from .model_layout import layout_from_facts

    model, machine = planning_inputs(options, facts, hardware, backend)
    layout, measured = layout_from_facts(facts), speeds_for_facts(facts)
    plan = plan_offload(model, machine, layout=layout, measured=measured)
    if cpu_moe is not None and plan.fits:
        plan = plan_for_settings(model, machine, plan.n_gpu_layers, cpu_moe, layout=layout,
                                 measured=measured)
    if not plan.fits:
        say(tr("{name} {plan}; trying on the CPU anyway", name=facts.path.name,
               plan=plan.explanation))
        plan = plan_for_settings(model, machine, 0, 0, layout=layout, measured=measured)
    else:
        say(tr("plan: {plan}", plan=plan.explanation))
    info, plan = load_with_fallback(load, options, plan, model, machine, say, layout=layout,
                                    measured=measured)
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
    "APPLE_CPU_BANDWIDTH", "CPU_BANDWIDTH", "CPU_FLOPS", "DEFAULT_GPU_BANDWIDTH",
    "DEFAULT_GPU_OVERHEAD", "GPU_BANDWIDTH_TABLE", "GPU_OVERHEAD", "RAM_MARGIN_MIN",
    "RAM_MARGIN_SHARE", "RAM_PROCESS_OVERHEAD", "VRAM_MARGIN_MIN", "VRAM_MARGIN_SHARE", "Machine",
    "Placement", "Plan", "Verdict", "apply_plan", "auto_load", "compare_with_actual", "evaluate",
    "gpu_bandwidth", "is_out_of_memory", "load_with_fallback", "machine_from_hardware",
    "plan_for_catalog_entry", "plan_for_settings", "plan_offload", "planning_inputs", "safer_plan",
    "simulated_machine", "verdict_rank",
]
