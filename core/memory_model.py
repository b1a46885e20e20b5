"""How much memory a model needs, and where, computed from its GGUF header alone.

:func:`memory_model_from_facts` turns :class:`~mixtral_desk.core.gguf.model_file.ModelFacts` (from a
local file, or from a remote file's first megabytes, see :mod:`.gguf.remote_header`) into a
:class:`MemoryModel`: per layer the dense bytes (attention, norms, router, shared experts) and the
expert bytes, the input embedding (which llama.cpp always keeps in CPU memory), the output layer,
the KV cache per layer for a context length and KV type, and a compute-buffer estimate.
:func:`memory_model_from_catalog` makes a coarser one from a catalog entry's figures (no header).

The numbers follow llama.cpp as measured (bench/GPU_CHECK.md): a GPU's model buffer is exactly the
bytes of the tensors placed on it (non-expert tensors except ``token_embd``, plus the experts that
are not overridden), to within 0.03 MiB.

Beside these totals a model carries its :class:`~.resident.RamLayout`: which CPU weights llama.cpp
copies into memory of its own and which stay mapped from the file; :meth:`MemoryModel.ram_split`
turns a placement into the resident and mapped bytes (see :mod:`.resident`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from .gguf.model_file import ModelFacts, layer_of
from .resident import RamLayout, RamSplit, layout_from_sizes, layout_from_tensors, ram_split

if TYPE_CHECKING:
    from .catalog import CatalogEntry
    from .repack import CPUFeatures

KVType = Literal["f16", "q8_0", "q4_0", "f32"]

#: Bytes per KV-cache element: f16 2; q8_0 blocks of 32 values in 34 bytes; q4_0 32 in 18.
KV_BYTES_PER_ELEMENT: Mapping[str, float] = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32,
                                             "q4_0": 18 / 32}

#: llama.cpp's default micro-batch (LoadOptions.n_ubatch): the compute buffer scales with it.
DEFAULT_UBATCH = 512

# Tensors of llama.cpp's "input layer", which it always places in CPU memory.
_INPUT_PREFIXES = ("token_embd.", "token_types.", "position_embd.")


@dataclass(frozen=True)
class LayerBytes:
    """One repeating layer: ``dense`` bytes (read for every token), ``experts`` bytes (of which a
    token reads ``expert_used_count / expert_count``), its KV cache, and how many expert tensors
    a ``--n-cpu-moe`` override of this layer moves (3 merged, or 3 per expert in old files)."""

    dense: int
    experts: int
    kv: int
    expert_tensors: int = 0


@dataclass(frozen=True)
class MemoryModel:
    """Where a model's bytes are, for a given context length and KV type.

    ``input_bytes``: the token embedding (always CPU memory). ``output_bytes``: the output layer
    (output norm and matrix) wherever the output layer goes; ``tied_output_bytes``: the extra copy
    llama.cpp makes on the GPU of a tied embedding used as output matrix. ``compute_bytes``: the
    compute buffer of one backend. ``exact``: from a header (True) or estimated from a catalog
    entry (False). ``layout``: which CPU weights are copied out of the file and which stay
    mapped (None: all mapped).
    """

    name: str
    layers: tuple[LayerBytes, ...]
    input_bytes: int
    output_bytes: int
    compute_bytes: int
    n_ctx: int
    kv_type: str
    expert_count: int = 0
    expert_used_count: int = 0
    tied_output_bytes: int = 0
    exact: bool = True
    layout: RamLayout | None = field(default=None, compare=False, repr=False)

    def ram_split(self, n_gpu_layers: int = 0, n_cpu_moe: int = 0) -> RamSplit:
        """The resident and mapped bytes of a placement (:func:`.resident.ram_split`)."""
        return ram_split(self, n_gpu_layers, n_cpu_moe)

    @property
    def n_layers(self) -> int:
        """Repeating layers (llama.cpp counts one more, the output layer, when offloading)."""
        return len(self.layers)

    @property
    def is_moe(self) -> bool:
        """Whether the model has experts that can be kept in CPU memory."""
        return self.expert_count > 1 and any(layer.experts for layer in self.layers)

    @property
    def used_fraction(self) -> float:
        """The share of a layer's expert bytes that one token reads."""
        if not self.is_moe:
            return 1.0
        return min(1.0, max(1, self.expert_used_count) / self.expert_count)

    @property
    def weight_bytes(self) -> int:
        """All weights."""
        return (self.input_bytes + self.output_bytes
                + sum(layer.dense + layer.experts for layer in self.layers))

    @property
    def kv_bytes(self) -> int:
        """The whole KV cache at ``n_ctx``."""
        return sum(layer.kv for layer in self.layers)

    @property
    def expert_bytes(self) -> int:
        """All expert weights."""
        return sum(layer.experts for layer in self.layers)


def kv_bytes_per_token(n_layers: int, n_head_kv: int, head_dim: int, kv_type: str,
                       head_dim_v: int | None = None) -> float:
    """KV cache bytes per token of context: ``n_layers * n_head_kv * (k + v head dims) * bytes``.

    With equal K and V head dims that is ``2 * n_layers * n_head_kv * head_dim * bytes``
    (Mixtral at f16: 2 * 32 * 8 * 128 * 2 = 128 KiB).

    Raises:
        ValueError: ``kv_type`` is not one of :data:`KV_BYTES_PER_ELEMENT`.
    """
    if kv_type not in KV_BYTES_PER_ELEMENT:
        raise ValueError(f"unknown KV cache type {kv_type!r}; use one of "
                         f"{', '.join(KV_BYTES_PER_ELEMENT)}")
    hv = head_dim if head_dim_v is None else head_dim_v
    return n_layers * n_head_kv * (head_dim + hv) * KV_BYTES_PER_ELEMENT[kv_type]


def compute_buffer_bytes(*, n_ctx: int, n_embd: int, n_head: int, n_ff: int, n_vocab: int,
                         expert_used_count: int = 0, n_ubatch: int = DEFAULT_UBATCH,
                         flash_attn: bool = False) -> int:
    """An estimate of one backend's compute buffer (ggml reuses memory between stages, so the
    largest stage counts): attention scores ``n_ubatch * n_ctx * n_head`` f32 (not materialised
    with flash attention), the feed-forward activations of the used experts, or the logits
    ``n_vocab * n_ubatch`` f32; plus a few ``n_ubatch * n_embd`` f32 activations. Mixtral at
    4096 context: about 303 MiB. Raises nothing.
    """
    ub = max(1, min(n_ubatch, n_ctx))
    attention = ub * n_embd * 4 * 2 if flash_attn else ub * n_ctx * max(1, n_head) * 4
    ffn = ub * n_ff * max(1, expert_used_count) * 4 * 3
    logits = n_vocab * ub * 4
    return max(attention, ffn, logits) + ub * n_embd * 4 * 6


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def memory_model_from_facts(facts: ModelFacts, n_ctx: int | None = None, kv_type: str = "f16",
                            *, flash_attn: bool = False, n_ubatch: int = DEFAULT_UBATCH,
                            features: CPUFeatures | None = None, use_mmap: bool = True,
                            use_mlock: bool = False,
                            gpu_host_buffers: bool = False) -> MemoryModel:
    """The memory model of a GGUF header at context ``n_ctx`` (default: min(training context,
    4096)) with a ``kv_type`` KV cache.

    The RAM layout is for a llama.cpp build with CPU ``features`` (None: this CPU's) and, when
    ``gpu_host_buffers``, a GPU backend's host buffers; loaded with ``use_mmap``/``use_mlock``
    (see :func:`.resident.build_facts` for a build's values).

    Raises:
        ValueError: ``n_ctx`` is not positive, or ``kv_type`` is unknown.
    """
    ctx = n_ctx if n_ctx is not None else min(facts.context_length or 4096, 4096)
    if ctx <= 0:
        raise ValueError(f"context length must be positive, not {ctx}")
    n_head = max(1, facts.n_head)
    md = facts.metadata
    arch = facts.architecture
    head_k = _int(md.get(f"{arch}.attention.key_length")) or facts.n_embd // n_head
    head_v = _int(md.get(f"{arch}.attention.value_length")) or head_k
    per_layer_kv = kv_bytes_per_token(1, facts.n_head_kv or n_head, head_k, kv_type, head_v)
    kv = math.ceil(per_layer_kv * ctx)

    dense = [0] * facts.n_layers
    experts = [0] * facts.n_layers
    expert_tensors = [0] * facts.n_layers
    input_bytes = output_bytes = 0
    has_output = False
    for t in facts.tensors:
        i = layer_of(t.name)
        if i is not None and 0 <= i < facts.n_layers:
            if t.is_expert:
                experts[i] += t.n_bytes
                expert_tensors[i] += 1
            else:
                dense[i] += t.n_bytes
        elif t.name.startswith(_INPUT_PREFIXES):
            input_bytes += t.n_bytes
        else:
            output_bytes += t.n_bytes
            has_output = has_output or t.name.startswith("output.")
    tied = 0 if has_output else sum(t.n_bytes for t in facts.tensors
                                    if t.name.startswith("token_embd."))
    compute = compute_buffer_bytes(n_ctx=ctx, n_embd=facts.n_embd, n_head=n_head,
                                   n_ff=facts.n_ff, n_vocab=facts.vocab_size,
                                   expert_used_count=facts.expert_used_count,
                                   n_ubatch=n_ubatch, flash_attn=flash_attn)
    layers = tuple(LayerBytes(d, e, kv, n) for d, e, n in zip(dense, experts, expert_tensors,
                                                               strict=True))
    layout = layout_from_tensors(facts.tensors, facts.n_layers, vocab_size=facts.vocab_size,
                                 features=features, use_mmap=use_mmap, use_mlock=use_mlock,
                                 gpu_host_buffers=gpu_host_buffers)
    return MemoryModel(
        name=facts.name or facts.path.name, layers=layers, input_bytes=input_bytes,
        output_bytes=output_bytes, compute_bytes=compute, n_ctx=ctx, kv_type=kv_type,
        expert_count=facts.expert_count, expert_used_count=facts.expert_used_count,
        tied_output_bytes=tied, exact=True, layout=layout)


#: Catalog estimates: the share of the file in the input embedding and in the output layer
#: (Mixtral-8x7B Q4_K_M: 73.7 MB and 107 MB of 26.4 GB).
CATALOG_INPUT_SHARE = 0.003
CATALOG_OUTPUT_SHARE = 0.005


def memory_model_from_catalog(entry: CatalogEntry, n_ctx: int | None = None) -> MemoryModel:
    """A coarse memory model from a catalog entry's figures, without its header.

    The weights are ``size_bytes``, spread evenly over ``layers`` after small input/output shares;
    the expert share of each layer follows from the parameter counts (experts X with
    ``active = total - X + X * used / count``); KV cache and buffers are what ``memory_bytes``
    adds to the file (60 % KV spread over the layers, 40 % compute), scaled by ``n_ctx`` over the
    entry's default context. ``exact`` is False. The RAM layout copies nothing (the tensor types
    are unknown) and maps nothing for a per-expert file. Raises nothing.
    """
    size = entry.size_bytes
    input_bytes = int(size * CATALOG_INPUT_SHARE)
    output_bytes = int(size * CATALOG_OUTPUT_SHARE)
    per_layer = (size - input_bytes - output_bytes) // entry.layers
    expert_share = 0.0
    count, used = entry.expert_count or 0, entry.expert_used_count or 0
    if count > 1 and used and entry.active_parameters and used < count:
        experts = (entry.parameters - entry.active_parameters) / (1 - used / count)
        expert_share = min(1.0, max(0.0, experts / entry.parameters))
    expert_bytes = int(per_layer * expert_share)
    ctx = n_ctx or entry.default_context
    extra = max(0, entry.memory_bytes - size) * ctx / entry.default_context
    kv = int(extra * 0.6 / entry.layers)
    n_tensors = 0 if not expert_bytes else (3 * count if entry.expert_tensors == "per-expert"
                                            else 3)
    layers = tuple(LayerBytes(per_layer - expert_bytes, expert_bytes, kv, n_tensors)
                   for _ in range(entry.layers))
    layout = layout_from_sizes(input_bytes, [(lay.dense, lay.experts) for lay in layers],
                               output_bytes, per_expert=entry.expert_tensors == "per-expert")
    return MemoryModel(
        name=entry.name, layers=layers, input_bytes=input_bytes, output_bytes=output_bytes,
        compute_bytes=int(extra * 0.4), n_ctx=ctx, kv_type="f16", expert_count=count,
        expert_used_count=used, exact=False, layout=layout)
