"""What a header says beyond the memory model: each layer's expert tensors by kind, and the
model's arithmetic.

:class:`ModelLayout` lists, per layer, the bytes and tensor count of each kind of expert tensor
(``gate``, ``up``, ``down``, or ``gate_up`` where a newer conversion fuses gate and up): what a
tensor-by-tensor split of one layer can move between RAM and VRAM (:meth:`ModelLayout.splits`).
Shared experts (``ffn_*_shexp``) are not experts here: every token uses them, so they stay with
the layer's attention (the memory model counts them as dense too). It also gives the speed
model's :class:`~.speed_model.ModelShape`: weights per byte and attention FLOPs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from .engine.placement import EXPERT_KINDS
from .speed_model import ModelShape

if TYPE_CHECKING:
    from .gguf.model_file import ModelFacts

_KIND = re.compile(r"^blk\.(\d+)\.ffn_(gate_up|gate|up|down)(?:_exps|\.\d+)\.")
_INPUT_PREFIXES = ("token_embd.", "token_types.", "position_embd.")

#: One layer's expert tensors: (kind, bytes, tensors) per kind, in :data:`EXPERT_KINDS` order.
LayerKinds = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class Split:
    """One way to split a layer's experts: the kinds kept in RAM, their bytes and tensors."""

    in_ram: tuple[str, ...]
    ram_bytes: int
    tensors: int


@dataclass(frozen=True)
class ModelLayout:
    """Per layer, the expert tensors by kind; and the model's :class:`ModelShape`."""

    layers: tuple[LayerKinds, ...]
    shape: ModelShape = field(default_factory=ModelShape)

    def kind_bytes(self, layer: int, kinds: tuple[str, ...]) -> tuple[int, int]:
        """Bytes and tensors of layer ``layer``'s experts of ``kinds`` ((0, 0) outside)."""
        if not 0 <= layer < len(self.layers):
            return 0, 0
        chosen = [(size, count) for kind, size, count in self.layers[layer] if kind in kinds]
        return sum(size for size, _ in chosen), sum(count for _, count in chosen)

    def splits(self, layer: int) -> tuple[Split, ...]:
        """The ways to keep part of layer ``layer``'s experts in RAM, the rest on the GPU: one per
        distinct size, most in RAM first; among splits of equal size, the one that puts kinds
        on the GPU in llama.cpp's ``--fit`` order (up, then gate, then down). Empty for a layer
        with fewer than two kinds."""
        if not 0 <= layer < len(self.layers):
            return ()
        return _splits(self.layers[layer])


@cache
def _splits(kinds: LayerKinds) -> tuple[Split, ...]:
    names = [kind for kind, _, _ in kinds]
    found: dict[int, Split] = {}
    # Subsets on the GPU by llama.cpp's preference: earlier kinds first, fewer before more.
    for mask in sorted(range(1, (1 << len(names)) - 1),
                       key=lambda m: (bin(m).count("1"), [not m >> i & 1
                                                          for i in range(len(names))])):
        in_ram = tuple(name for i, name in enumerate(names) if not mask >> i & 1)
        size = sum(s for kind, s, _ in kinds if kind in in_ram)
        count = sum(c for kind, _, c in kinds if kind in in_ram)
        found.setdefault(size, Split(in_ram, size, count))
    return tuple(sorted(found.values(), key=lambda s: -s.ram_bytes))


def layout_from_facts(facts: ModelFacts) -> ModelLayout:
    """The layout of a header: expert kinds per layer, weights per byte (all weights but the
    input embedding, which is only looked up) and attention FLOPs. Raises nothing."""
    per_layer: list[dict[str, list[int]]] = [{} for _ in range(max(0, facts.n_layers))]
    params = size = 0
    for t in facts.tensors:
        if not t.name.startswith(_INPUT_PREFIXES):
            params += t.n_elements
            size += t.n_bytes
        m = _KIND.match(t.name)
        if m and int(m.group(1)) < len(per_layer):
            entry = per_layer[int(m.group(1))].setdefault(m.group(2), [0, 0])
            entry[0] += t.n_bytes
            entry[1] += 1
    layers = tuple(tuple((kind, kinds[kind][0], kinds[kind][1]) for kind in EXPERT_KINDS
                         if kind in kinds) for kinds in per_layer)
    md, arch = facts.metadata, facts.architecture
    n_head = max(1, facts.n_head)
    head_k = _int(md.get(f"{arch}.attention.key_length")) or facts.n_embd // n_head
    head_v = _int(md.get(f"{arch}.attention.value_length")) or head_k
    shape = ModelShape(params_per_byte=params / size if size else ModelShape().params_per_byte,
                       attention_flops=2.0 * n_head * (head_k + head_v),
                       width=facts.n_embd or ModelShape().width)
    return ModelLayout(layers, shape)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["LayerKinds", "ModelLayout", "Split", "layout_from_facts"]
