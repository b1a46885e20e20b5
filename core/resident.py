"""What the engine process holds resident in RAM, apart from what stays mapped from the file.

With mmap on (the default), llama.cpp leaves a CPU weight in the memory-mapped file — its
``CPU_Mapped`` buffer: clean file-backed pages the kernel may evict and read again — unless the
CPU backend copies the weight into a buffer of its own (``CPU_REPACK`` and friends, see
:mod:`.repack`): anonymous memory, held for as long as the model is loaded. So the same plan
can mean 15 GB the process *holds* or 15 GB of page cache it merely *uses*:

- ``resident``: memory that cannot be evicted — copied weights, every CPU weight when mmap is off
  (and for a Dec-2023 file with one tensor per expert, which llama.cpp builds that still read them
  merge with mmap turned off), the mapped range too when it is mlocked, the KV cache of the CPU
  layers, the CPU compute buffer and the logits (output) buffer;
- ``mapped``: the file range llama.cpp maps for the CPU's weights, as its ``CPU_Mapped`` line
  reports it: from the first to the last mapped tensor of each file, so it spans the copied
  tensors lying between them (their pages are read once, while loading, then only cached);
- ``mapped_read``: the weights inference reads from that mapping, for every token: evictable, but
  evicting them means reading them from disk again, token after token.

The model must have ``resident + mapped_read`` (:attr:`RamSplit.working_set_bytes`) to run at
memory speed; ``resident`` alone is the part that can run the machine out of memory. Summed over
a CPU-only plan, ``resident + mapped_read`` is the planner's RAM figure (weights + KV + compute)
plus the logits buffer: the split says where those bytes are, not more of them — except with
mmap and mlock together, where the locked mapping and the copies made from it count twice.

Measured on this repository's machine (AVX-512, llama-cpp-python 0.3.36; a sparse 15.8 GB
Mixtral-8x7B Q2_K, n_ctx 512, CPU only): planned resident 15,267,394,560 bytes against llama.cpp's
15,255,868,539 (+0.08 %), planned mapped 15,783,763,968 against 15,783,763,640; the copied bytes
matched its ``CPU_REPACK`` line exactly (tests/core/test_resident.py).

Per-expert files: llama.cpp builds from April 2024 on merged their experts at load time with mmap
turned off; the llama.cpp of llama-cpp-python 0.3.36 no longer reads them at all
("check_tensor_dims: tensor 'blk.0.ffn_down_exps.weight' not found"). Their layout here is the
former (everything resident), for builds that still load them.

:func:`compare_ram_with_actual` checks a plan's split against llama.cpp's own buffer lines after
loading (``ModelInfo.buffers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .gguf.merge_experts import is_per_expert
from .gguf.model_file import is_expert_tensor, layer_of
from .i18n import tr
from .repack import (
    NO_REPACK,
    CPUFeatures,
    detect_cpu_features,
    extra_buffer,
    features_from_system_info,
    weight_op,
)
from .units import MiB, format_memory

if TYPE_CHECKING:
    from .engine import BackendInfo
    from .gguf.model_file import TensorInfo
    from .memory_model import MemoryModel

WeightKind = Literal["input", "output", "dense", "experts"]

# Tensors of llama.cpp's "input layer" (always in CPU memory).
_INPUT_PREFIXES = ("token_embd.", "token_types.", "position_embd.")
#: Backends without a pinned host buffer type: a build with only these still repacks.
_NO_HOST_BUFFER_BACKENDS = frozenset({"Metal", "MTL", "BLAS", "CPU", "RPC"})
#: Bytes per vocabulary entry of llama.cpp's output (logits) buffer: one f32 row.
_LOGIT_BYTES = 4
#: Plan-vs-actual tolerance: max(this, :data:`RAM_TOLERANCE_SHARE` of the planned figure).
RAM_TOLERANCE_MIN, RAM_TOLERANCE_SHARE = 64 * MiB, 0.05


@dataclass(frozen=True)
class WeightGroup:
    """The weights of one part of the model that are placed together: the input embedding, the
    output layer, or one layer's dense or expert tensors. ``copied``: bytes an extra CPU buffer
    type takes when the CPU holds them; ``mapped``: the other bytes; ``extents``: ``(part, first
    byte, end)`` per file of the ``mapped`` tensors."""

    layer: int | None
    kind: WeightKind
    copied: int
    mapped: int
    extents: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class RamLayout:
    """How llama.cpp will hold a model's CPU weights: the groups, and the load's choices.

    ``use_mmap``/``use_mlock``: the load options. ``per_expert``: the file stores one tensor per
    expert (llama.cpp builds that read such files merge them with mmap off). ``gpu_host_buffers``:
    the build has a GPU backend with a pinned host buffer type (CUDA, Vulkan …), which llama.cpp
    prefers for CPU weights, so nothing is repacked. ``output_buffer_bytes``: the logits buffer.
    """

    groups: tuple[WeightGroup, ...]
    use_mmap: bool = True
    use_mlock: bool = False
    per_expert: bool = False
    gpu_host_buffers: bool = False
    features: CPUFeatures = NO_REPACK
    output_buffer_bytes: int = 0

    @property
    def maps(self) -> bool:
        """Whether llama.cpp maps the file (mmap on, and not a per-expert file)."""
        return self.use_mmap and not self.per_expert


@dataclass(frozen=True)
class RamSplit:
    """What the engine process holds in RAM for one placement, after loading (bytes).

    ``weight_bytes``: CPU weights in memory of their own — copied into extra buffers
    (``copied_bytes``, e.g. ``CPU_REPACK``), or all of them when the file is not mapped.
    ``kv_bytes``, ``compute_bytes``, ``output_bytes``: the KV cache of the CPU layers, the compute
    buffer counted in RAM (as the planner counts it) and the logits buffer. ``mapped_bytes``: the
    file range llama.cpp maps (its ``CPU_Mapped`` buffers); ``mapped_read_bytes``: the weights in
    it that inference reads. ``locked``: mmap with mlock: the mapped range is locked in RAM.
    """

    weight_bytes: int
    copied_bytes: int
    kv_bytes: int
    compute_bytes: int
    output_bytes: int
    mapped_bytes: int
    mapped_read_bytes: int
    locked: bool = False

    @property
    def resident_bytes(self) -> int:
        """Memory that cannot be evicted: the weights in memory of their own, the KV cache, the
        compute and logits buffers, and the mapped range when it is locked."""
        return (self.weight_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes
                + (self.mapped_bytes if self.locked else 0))

    @property
    def working_set_bytes(self) -> int:
        """What must be in RAM to run at memory speed: the resident bytes and, unless locked
        (then they are resident already), the mapped weights each token reads."""
        return self.resident_bytes + (0 if self.locked else self.mapped_read_bytes)

    def fits(self, ram_budget: int) -> bool:
        """Whether the working set fits ``ram_budget`` (available RAM less the caller's margin).
        A plan whose resident bytes fit but whose working set does not would run, reading its
        mapped weights from disk for every token: not a plan to choose."""
        return self.working_set_bytes <= ram_budget

    def to_json_dict(self) -> dict[str, int | bool]:
        """The split as JSON-safe values."""
        return {"resident_bytes": self.resident_bytes, "mapped_bytes": self.mapped_bytes,
                "mapped_read_bytes": self.mapped_read_bytes, "weight_bytes": self.weight_bytes,
                "copied_bytes": self.copied_bytes, "kv_bytes": self.kv_bytes,
                "compute_bytes": self.compute_bytes, "output_bytes": self.output_bytes,
                "working_set_bytes": self.working_set_bytes, "locked": self.locked}


@dataclass
class _Group:
    copied: int = 0
    mapped: int = 0
    extents: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add_mapped(self, t: TensorInfo) -> None:
        self.mapped += t.n_bytes
        first, end = self.extents.get(t.part, (t.offset, t.offset + t.n_bytes))
        self.extents[t.part] = (min(first, t.offset), max(end, t.offset + t.n_bytes))

    def freeze(self, layer: int | None, kind: WeightKind) -> WeightGroup:
        extents = tuple((part, a, b) for part, (a, b) in sorted(self.extents.items()))
        return WeightGroup(layer, kind, self.copied, self.mapped, extents)


def layout_from_tensors(tensors: Sequence[TensorInfo], n_layers: int, *, vocab_size: int = 0,
                        features: CPUFeatures | None = None, use_mmap: bool = True,
                        use_mlock: bool = False, gpu_host_buffers: bool = False) -> RamLayout:
    """The layout of a model with ``tensors`` (from its header) on a llama.cpp build with
    ``features`` (None: this CPU's, :func:`.repack.detect_cpu_features`). Raises nothing."""
    feats = detect_cpu_features() if features is None else features
    groups: dict[tuple[int | None, WeightKind], _Group] = {}
    embd: TensorInfo | None = None
    has_output = False
    for t in tensors:
        i = layer_of(t.name)
        kind: WeightKind
        if i is not None and 0 <= i < n_layers:
            kind = "experts" if is_expert_tensor(t.name) else "dense"
        elif t.name.startswith(_INPUT_PREFIXES):
            i, kind = None, "input"
            embd = t if t.name.startswith("token_embd.") else embd
        else:
            i, kind = None, "output"
            has_output = has_output or t.name.startswith("output.")
        group = groups.setdefault((i, kind), _Group())
        op = weight_op(t.name, t.shape)
        if not gpu_host_buffers and extra_buffer(t.ggml_type, t.shape, op, feats):
            group.copied += t.n_bytes
        else:
            group.add_mapped(t)
    if embd is not None and not has_output and not gpu_host_buffers \
            and extra_buffer(embd.ggml_type, embd.shape, "MUL_MAT", feats):
        # A tied output matrix is a second tensor over the embedding's bytes: a copy if repacked.
        groups.setdefault((None, "output"), _Group()).copied += embd.n_bytes
    frozen = tuple(g.freeze(i, kind) for (i, kind), g in groups.items())
    return RamLayout(frozen, use_mmap, use_mlock, is_per_expert(t.name for t in tensors),
                     gpu_host_buffers, feats, vocab_size * _LOGIT_BYTES)


def layout_from_sizes(input_bytes: int, layers: Sequence[tuple[int, int]], output_bytes: int,
                      *, per_expert: bool = False, vocab_size: int = 0) -> RamLayout:
    """A coarse layout without a header (a catalog entry): ``(dense, experts)`` bytes per layer,
    laid out one after the other in one file, nothing copied (the tensor types are unknown).
    Raises nothing."""
    groups: list[WeightGroup] = []
    at = 0

    def add(layer: int | None, kind: WeightKind, size: int) -> None:
        nonlocal at
        groups.append(WeightGroup(layer, kind, 0, size, ((0, at, at + size),) if size else ()))
        at += size

    add(None, "input", input_bytes)
    for i, (dense, experts) in enumerate(layers):
        add(i, "dense", dense)
        add(i, "experts", experts)
    add(None, "output", output_bytes)
    return RamLayout(tuple(groups), per_expert=per_expert,
                     output_buffer_bytes=vocab_size * _LOGIT_BYTES)


def ram_split(model: MemoryModel, n_gpu_layers: int = 0, n_cpu_moe: int = 0) -> RamSplit:
    """What the engine holds in RAM with ``n_gpu_layers`` on the GPU (llama.cpp's count, -1 =
    all; pass 0 on a machine without a GPU) and the experts of layers 0 … ``n_cpu_moe`` - 1 in
    RAM — the placements of :func:`.planner.evaluate`, which counts the same KV cache and
    compute buffer in RAM. A model without a layout (built by hand) maps every weight.
    Raises nothing (out-of-range values are clamped).
    """
    layout = model.layout or layout_from_sizes(
        model.input_bytes, [(lay.dense, lay.experts) for lay in model.layers], model.output_bytes)
    n_layers = model.n_layers
    g = n_layers + 1 if n_gpu_layers < 0 else max(0, min(n_gpu_layers, n_layers + 1))
    first_gpu = max(0, n_layers - g)
    split = max(first_gpu, min(max(0, n_cpu_moe), n_layers))

    def held(group: WeightGroup) -> bool:
        if group.layer is None:
            return group.kind == "input" or g <= n_layers
        return group.layer < (first_gpu if group.kind == "dense" else split)

    copied = mapped_read = 0
    spans: dict[int, tuple[int, int]] = {}
    for group in filter(held, layout.groups):
        copied += group.copied
        mapped_read += group.mapped
        for part, a, b in group.extents:
            first, end = spans.get(part, (a, b))
            spans[part] = (min(first, a), max(end, b))
    kv = sum(layer.kv for layer in model.layers[:first_gpu])
    ram_experts = any(layer.experts for layer in model.layers[first_gpu:split])
    compute = model.compute_bytes if g == 0 or g <= n_layers or ram_experts else 0
    logits = layout.output_buffer_bytes
    if not layout.maps:
        return RamSplit(copied + mapped_read, copied, kv, compute, logits, 0, 0)
    mapped = sum(end - first for first, end in spans.values())
    return RamSplit(copied, copied, kv, compute, logits, mapped, mapped_read, layout.use_mlock)


def build_facts(backend: BackendInfo) -> tuple[CPUFeatures, bool]:
    """What a llama.cpp build tells about its CPU buffers: its CPU features (from its system
    info, else this CPU's) and whether it has a GPU host buffer type that CPU weights go to
    instead of being repacked (a GPU backend other than Metal, with a device). Raises nothing."""
    features = features_from_system_info(backend.system_info) or detect_cpu_features()
    host = backend.gpu_offload and any(name not in _NO_HOST_BUFFER_BACKENDS
                                       for name in backend.backends)
    return features, host


def _in_ram(device: str) -> bool:
    return device.upper().startswith("CPU") or device.endswith("_Host") \
        or device in ("AMX", "KLEIDIAI")


def actual_ram(buffers: Sequence[tuple[str, str, int]]) -> dict[str, int]:
    """Bytes by kind of llama.cpp's buffers in host memory (``ModelInfo.buffers``): ``mapped``
    (``*_Mapped`` model buffers), ``model`` (the other model buffers: ``CPU``, ``CPU_REPACK``,
    ``CUDA_Host`` …), ``KV``, ``compute`` and ``output``. GPU buffers are left out."""
    totals = {"mapped": 0, "model": 0, "KV": 0, "compute": 0, "output": 0}
    for device, kind, size in buffers:
        if _in_ram(device):
            key = "mapped" if kind == "model" and device.endswith("_Mapped") else kind
            totals[key] = totals.get(key, 0) + size
    return totals


def compare_ram_with_actual(split: RamSplit, buffers: Sequence[tuple[str, str, int]], *,
                            cpu_only: bool = True) -> list[str]:
    """Differences between a plan's :class:`RamSplit` and llama.cpp's buffer lines, each within
    max(:data:`RAM_TOLERANCE_MIN`, :data:`RAM_TOLERANCE_SHARE` of the plan): the resident bytes
    (a locked mapping counts as resident) and the mapped bytes. A plan with GPU layers
    (``cpu_only`` False) compares the resident weights and KV cache only: the host-side compute
    buffers of a GPU plan are not modelled. Empty when they agree, or when the log shows no
    buffer in host memory. Raises nothing."""
    if not any(_in_ram(device) for device, _, _ in buffers):
        return []
    actual = actual_ram(buffers)
    locked = actual["mapped"] if split.locked else 0
    if cpu_only:
        planned = split.resident_bytes
        resident = sum(actual.values()) - actual["mapped"] + locked
    else:
        planned = split.weight_bytes + split.kv_bytes + (split.mapped_bytes if split.locked
                                                         else 0)
        resident = actual["model"] + actual["KV"] + locked
    warnings = []
    if _differs(planned, resident):
        warnings.append(tr("the plan expected {expected} resident in RAM (weights copied out of "
                           "the file, KV cache, buffers), but llama.cpp allocated {actual}",
                           expected=format_memory(planned), actual=format_memory(resident)))
    if _differs(split.mapped_bytes, actual["mapped"]):
        warnings.append(tr("the plan expected {expected} of the file mapped, but llama.cpp "
                           "mapped {actual}", expected=format_memory(split.mapped_bytes),
                           actual=format_memory(actual["mapped"])))
    return warnings


def _differs(planned: int, actual: int) -> bool:
    return abs(actual - planned) > max(RAM_TOLERANCE_MIN, int(planned * RAM_TOLERANCE_SHARE))


__all__ = ["RAM_TOLERANCE_MIN", "RAM_TOLERANCE_SHARE", "RamLayout", "RamSplit", "WeightGroup",
           "actual_ram", "build_facts", "compare_ram_with_actual", "is_per_expert",
           "layout_from_sizes", "layout_from_tensors", "ram_split"]
