"""Inspect a GGUF model file before llama.cpp ever sees it.

:func:`inspect_model` reads only the header of a model (all parts of a split model), checks it as
llama.cpp would, and returns :class:`ModelFacts`: architecture, size, quantization, shape, experts,
vocabulary, chat template and the tensor table. Every problem a user can meet (an HTML page saved
instead of a model, a Git LFS pointer, a truncated download, a missing split part, pieces that
must be joined first) becomes one :class:`~mixtral_desk.core.errors.GGUFError` naming the file and
the problem. No tensor data is read, so a 26 GB model inspects in milliseconds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

# Relative imports: mypy cannot follow the editable install's import hook, and would see
# mixtral_desk.core.* as untyped.
from ..errors import GGUFError, ModelFileNotFoundError
from ..i18n import N_, ntr, tr
from ..units import format_bytes
from .hparams import check_hyperparameters
from .validation import GGUFArray, GGUFHeader, MetadataValue, read_header

__all__ = [
    "ModelFacts",
    "TensorInfo",
    "inspect_model",
    "is_expert_tensor",
    "layer_of",
    "split_part_paths",
]

_TOKENS_KEY = "tokenizer.ggml.tokens"
# llama.cpp's split naming ("%s-%05d-of-%05d.gguf", from gguf-split and convert_hf_to_gguf).
_SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})(?P<ext>\.gguf)$",
                         re.IGNORECASE)
# Pieces cut with a plain byte splitter: "x.gguf.part1of2" (also "-part1of2"), "x.gguf-split-a".
_PIECE_NAME = re.compile(r"\.gguf(?:[.-]part\d+of\d+|-split-[a-z]+)$", re.IGNORECASE)
# Merged experts "blk.N.ffn_gate_exps.weight" (also fused "ffn_gate_up_exps") and TheBloke's
# Dec-2023 per-expert tensors "blk.N.ffn_gate.E.weight". Shared experts ("shexp") and the router
# ("ffn_gate_inp") run for every token and count as dense.
_EXPERT_TENSOR = re.compile(r"^blk\.\d+\.ffn_(?:[a-z_]+_exps|(?:gate|up|down)\.\d+)\.")
_LAYER = re.compile(r"^blk\.(\d+)\.")


def is_expert_tensor(name: str) -> bool:
    """Whether ``name`` is a mixture-of-experts expert weight (merged or per-expert layout)."""
    return _EXPERT_TENSOR.match(name) is not None


def layer_of(name: str) -> int | None:
    """The layer index of a ``blk.N.…`` tensor name, or ``None`` for tensors outside layers."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model; ``shape`` is in GGUF order (row length ``ne[0]`` first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str  # e.g. "Q4_K", "F32"
    n_bytes: int
    offset: int  # absolute byte offset of the data in its part file
    part: int  # 0-based index of the split part holding it

    @property
    def n_elements(self) -> int:
        """The number of values (parameters) in the tensor."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_expert(self) -> bool:
        """Whether this is an expert weight of a mixture-of-experts layer."""
        return is_expert_tensor(self.name)

    def to_json_dict(self) -> dict[str, Any]:
        """This tensor as a JSON-safe dict."""
        return {"name": self.name, "shape": list(self.shape), "ggml_type": self.ggml_type,
                "n_bytes": self.n_bytes, "offset": self.offset, "part": self.part}


@dataclass(frozen=True)
class ModelFacts:
    """What the header of a GGUF model says. ``path`` is the file to load (part 1 of a split)."""

    path: Path
    parts: tuple[Path, ...]
    file_size: int  # all parts together
    gguf_version: int
    architecture: str
    name: str | None
    n_params: int
    quantization: str  # e.g. "Q4_K_M", from general.file_type (else the dominant tensor type)
    context_length: int  # the training context; 0 when the file does not say
    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    expert_count: int  # 0 for dense models
    expert_used_count: int
    vocab_size: int
    chat_template: str | None
    tensors: tuple[TensorInfo, ...]
    split_count: int
    bos_token: str | None = None
    eos_token: str | None = None
    # Scalar key/values of part 1 (arrays as GGUFArray, long ones without items).
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict, compare=False,
                                                  repr=False)

    @property
    def is_moe(self) -> bool:
        """Whether this is a mixture-of-experts model."""
        return self.expert_count > 1

    @property
    def tensor_bytes(self) -> int:
        """Bytes of tensor data, all parts together (the file size less the headers)."""
        return sum(t.n_bytes for t in self.tensors)

    @property
    def expert_bytes_total(self) -> int:
        """Bytes of expert weights (the part that a CPU-offload of experts keeps off the GPU)."""
        return sum(t.n_bytes for t in self.tensors if t.is_expert)

    @property
    def expert_params(self) -> int:
        """Parameters in expert weights."""
        return sum(t.n_elements for t in self.tensors if t.is_expert)

    @property
    def active_params(self) -> int:
        """Parameters used per token: all dense ones plus ``expert_used_count`` experts' share."""
        if not self.is_moe:
            return self.n_params
        experts = self.expert_params
        return self.n_params - experts + experts * self.expert_used_count // self.expert_count

    @property
    def bits_per_weight(self) -> float:
        """Average bits per parameter of the tensor data."""
        return 8 * self.tensor_bytes / self.n_params if self.n_params else 0.0

    def layer_bytes(self, i: int) -> tuple[int, int]:
        """Bytes of layer ``i`` as (dense bytes, expert bytes); (0, 0) for a layer not present."""
        dense = expert = 0
        for t in self.tensors:
            if layer_of(t.name) == i:
                if t.is_expert:
                    expert += t.n_bytes
                else:
                    dense += t.n_bytes
        return dense, expert

    def bytes_by_ggml_type(self) -> dict[str, int]:
        """Tensor bytes per ggml type, largest first, e.g. ``{"Q4_K": …, "Q6_K": …, "F32": …}``."""
        totals: dict[str, int] = {}
        for t in self.tensors:
            totals[t.ggml_type] = totals.get(t.ggml_type, 0) + t.n_bytes
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def to_json_dict(self, *, include_tensors: bool = False) -> dict[str, Any]:
        """The facts as a JSON-safe dict (the tensor table only when asked for)."""
        d: dict[str, Any] = {
            "path": str(self.path), "parts": [str(p) for p in self.parts],
            "file_size": self.file_size, "gguf_version": self.gguf_version,
            "architecture": self.architecture, "name": self.name,
            "n_params": self.n_params, "active_params": self.active_params,
            "quantization": self.quantization, "bits_per_weight": round(self.bits_per_weight, 3),
            "context_length": self.context_length, "n_layers": self.n_layers,
            "n_embd": self.n_embd, "n_head": self.n_head, "n_head_kv": self.n_head_kv,
            "n_ff": self.n_ff, "expert_count": self.expert_count,
            "expert_used_count": self.expert_used_count, "is_moe": self.is_moe,
            "vocab_size": self.vocab_size, "bos_token": self.bos_token,
            "eos_token": self.eos_token, "chat_template": self.chat_template,
            "split_count": self.split_count, "n_tensors": len(self.tensors),
            "tensor_bytes": self.tensor_bytes, "expert_bytes_total": self.expert_bytes_total,
            "bytes_by_ggml_type": self.bytes_by_ggml_type(),
        }
        if include_tensors:
            d["tensors"] = [t.to_json_dict() for t in self.tensors]
        return d

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI ``inspect`` command (in the current language)."""
        parts = (tr("1 file") if self.split_count == 1
                 else ntr("{count} part", "{count} parts", self.split_count))
        name = self.name or tr("(unnamed)")
        if self.is_moe:
            parameters = tr("{count} ({active} active per token)",
                            count=_format_count(self.n_params),
                            active=_format_count(self.active_params))
            experts = tr("{count}, {used} used per token; expert weights {size} of {total}",
                         count=self.expert_count, used=self.expert_used_count,
                         size=format_bytes(self.expert_bytes_total),
                         total=format_bytes(self.tensor_bytes))
        else:
            parameters = _format_count(self.n_params)
            experts = tr("none (dense model)")
        special = ", ".join(f"{k} {v}" for k, v in (("BOS", self.bos_token),
                                                    ("EOS", self.eos_token)) if v is not None)
        vocabulary = (tr("{count} tokens ({special})", count=format(self.vocab_size, ","),
                         special=special) if special
                      else tr("{count} tokens", count=format(self.vocab_size, ",")))
        template = (tr("yes ({count} characters)", count=format(len(self.chat_template), ","))
                    if self.chat_template else tr("none (a base model?)"))
        types = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.bytes_by_ggml_type().items())
        return aligned_lines([
            (tr("File:"), tr("{path} ({size}, {parts})", path=str(self.path),
                             size=format_bytes(self.file_size), parts=parts)),
            (tr("Model:"), tr("{name} — {architecture}, GGUF v{version}", name=name,
                              architecture=self.architecture, version=self.gguf_version)),
            (tr("Parameters:"), parameters),
            (tr("Quantization:"), tr("{quantization} ({bits} bits per weight)",
                                     quantization=self.quantization,
                                     bits=format(self.bits_per_weight, ".2f"))),
            (tr("Context:"), tr("{count} tokens (training)",
                                count=format(self.context_length, ","))),
            (tr("Layers:"), tr("{layers}; embedding {embedding}, {heads} heads ({kv_heads} KV), "
                               "feed-forward {feed_forward}", layers=self.n_layers,
                               embedding=self.n_embd, heads=self.n_head,
                               kv_heads=self.n_head_kv, feed_forward=self.n_ff)),
            (tr("Experts:"), experts),
            (tr("Vocabulary:"), vocabulary),
            (tr("Chat template:"), template),
            (tr("Tensors:"), tr("{count} ({types})", count=format(len(self.tensors), ","),
                                types=types)),
        ])


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def aligned_lines(rows: list[tuple[str, str]], min_width: int = 0) -> list[str]:
    """``label value`` lines with the values lined up one column after the longest label (or
    after ``min_width`` columns)."""
    width = max((display_width(label) for label, _ in rows), default=min_width)
    width = max(width, min_width)
    return [f"{label}{' ' * (width - display_width(label) + 1)}{value}" for label, value in rows]


def _format_count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


# --- split parts ------------------------------------------------------------------------------

def split_part_paths(path: Path | str) -> tuple[Path, ...]:
    """All part paths a split name implies (``x-00002-of-00003.gguf``: 3); else ``(path,)``.

    Raises:
        GGUFError: the name says a part number beyond its count (``-00004-of-00003``).
    """
    path = Path(path)
    m = _SPLIT_NAME.match(path.name)
    if m is None:
        return (path,)
    no, count = int(m["no"]), int(m["count"])
    if not 1 <= no <= count:
        raise GGUFError(path, N_("its name says part {number} of {count}, which cannot be"),
                        number=no, count=count)
    return tuple(path.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}{m['ext']}")
                 for i in range(1, count + 1))


def _find_parts(path: Path) -> tuple[Path, ...]:
    """The existing parts of the model at ``path``, part 1 first.

    Raises:
        ModelFileNotFoundError: ``path`` does not exist.
        GGUFError: ``path`` is a piece to join first, or a part of its split is missing.
    """
    if not path.exists():
        raise ModelFileNotFoundError(path)
    if _PIECE_NAME.search(path.name) and not path.is_dir():
        raise GGUFError(path, N_("is one piece of a model that was cut into pieces with a plain "
                                 "file splitter; join the pieces into one .gguf file first (e.g. "
                                 "`cat x.gguf.part1of2 x.gguf.part2of2 > x.gguf`, on Windows "
                                 "`copy /b x.gguf.part1of2 + x.gguf.part2of2 x.gguf`)"))
    parts = split_part_paths(path)
    if len(parts) == 1:
        return parts
    missing = [(i, p) for i, p in enumerate(parts, 1) if not p.is_file()]
    if missing:
        i, p = missing[0]
        if len(missing) > 1:
            raise GGUFError(path, N_("part {number} of {count} is missing: {name} (expected next "
                                     "to this file) ({more} more parts are missing too)"),
                            number=i, count=len(parts), name=p.name, more=len(missing) - 1)
        raise GGUFError(path, N_("part {number} of {count} is missing: {name} (expected next to "
                                 "this file)"), number=i, count=len(parts), name=p.name)
    return parts


def _split_keys(header: GGUFHeader) -> tuple[int | None, int | None, int | None]:
    md = header.metadata
    return (_int_or_none(md.get("split.no")), _int_or_none(md.get("split.count")),
            _int_or_none(md.get("split.tensors.count")))


def _check_split(parts: tuple[Path, ...], headers: list[GGUFHeader]) -> None:
    """Check each part's split keys against its position and the total tensor count.

    Raises:
        GGUFError: a part says it belongs elsewhere, or the tensor counts do not add up.
    """
    n = len(parts)
    if n == 1:
        no, count, _ = _split_keys(headers[0])
        if count is not None and count > 1:
            raise GGUFError(parts[0], N_("is part {number} of {count} of a split model, but its "
                                         "name does not end in '{suffix}', so the other parts "
                                         "cannot be found; give the parts their original "
                                         "names"),
                            number=(no or 0) + 1, count=count, suffix=f"-0000N-of-{count:05d}.gguf")
        return
    for i, (part, header) in enumerate(zip(parts, headers, strict=True)):
        no, count, _ = _split_keys(header)
        if no is None or count is None:
            raise GGUFError(part, N_("is named as part {number} of {count} but has no split "
                                     "metadata (split.no / split.count); it is not a llama.cpp "
                                     "split part"), number=i + 1, count=n)
        if (no, count) != (i, n):
            raise GGUFError(part, N_("is named as part {number} of {count} but its header says "
                                     "part {header_number} of {header_count}; the parts come "
                                     "from different downloads or were renamed"),
                            number=i + 1, count=n, header_number=no + 1, header_count=count)
    expected = _split_keys(headers[0])[2]
    found = sum(len(h.tensors) for h in headers)
    if expected is not None and expected != found:
        raise GGUFError(parts[0], N_("the {count} parts hold {found:,} tensors but part 1 says "
                                     "the model has {expected:,}; a part is from another "
                                     "download"), count=n, found=found, expected=expected)


# --- facts ------------------------------------------------------------------------------------

def _int_or_none(v: MetadataValue | None) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, GGUFArray) and v.items:  # per-layer values (e.g. head counts): the largest
        ints = [x for x in v.items if isinstance(x, int)]
        return max(ints) if ints else None
    return None


def _str_or_none(v: MetadataValue | None) -> str | None:
    return v if isinstance(v, str) else None


def _quantization(md: Mapping[str, MetadataValue], tensors: tuple[TensorInfo, ...]) -> str:
    """The file type name ("Q4_K_M"); the ggml type holding most bytes when the file omits it."""
    file_type = _int_or_none(md.get("general.file_type"))
    if file_type is not None:
        try:
            ftype = gguf.LlamaFileType(file_type)
        except ValueError:
            ftype = None
        if ftype is not None and ftype != gguf.LlamaFileType.GUESSED:
            return ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    totals: dict[str, int] = {}
    for t in tensors:
        totals[t.ggml_type] = totals.get(t.ggml_type, 0) + t.n_bytes
    return max(totals, key=lambda k: totals[k]) if totals else "unknown"


def _special_token(md: Mapping[str, MetadataValue], key: str) -> str | None:
    tokens, token_id = md.get(_TOKENS_KEY), _int_or_none(md.get(key))
    if isinstance(tokens, GGUFArray) and tokens.items is not None and token_id is not None \
            and 0 <= token_id < len(tokens.items):
        return str(tokens.items[token_id])
    return None


def _vocab_size(md: Mapping[str, MetadataValue], arch: str) -> int:
    tokens = md.get(_TOKENS_KEY)
    if isinstance(tokens, GGUFArray):
        return tokens.count
    return _int_or_none(md.get(f"{arch}.vocab_size")) or 0


def _architecture(header: GGUFHeader) -> str:
    """The architecture of part 1.

    Raises:
        GGUFError: no ``general.architecture`` key, or the file is an adapter or projector.
    """
    md = header.metadata
    arch = _str_or_none(md.get("general.architecture"))
    if not arch:
        raise GGUFError(header.path, N_("has no general.architecture key, so llama.cpp cannot "
                                        "tell what model it is; the file is not a complete "
                                        "model"))
    if md.get("general.type") == "adapter":
        raise GGUFError(header.path, N_("is a LoRA adapter, not a model; load a base model and "
                                        "apply the adapter to it"))
    if arch == "clip":
        raise GGUFError(header.path, N_("is a multimodal projector (mmproj), not a language "
                                        "model"))
    return arch


def _collect_tensors(headers: list[GGUFHeader]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(t.name, t.dims, t.ggml_type, t.n_bytes, t.offset, part)
                 for part, h in enumerate(headers) for t in h.tensors)


def _facts(parts: tuple[Path, ...], headers: list[GGUFHeader]) -> ModelFacts:
    """Build the facts from checked headers; the shape they state is checked against sane
    limits and the tensors first (:mod:`.hparams`), so nothing is ever sized by an absurd value.

    Raises:
        GGUFMetadataError: a layer, expert, head, context or vocabulary value is impossible or
            contradicts the tensors.
        GGUFError: no architecture, or no tensors in any part.
    """
    first = headers[0]
    arch = _architecture(first)
    md = first.metadata
    tensors = _collect_tensors(headers)
    if not tensors:
        raise GGUFError(first.path, N_("contains no tensors (a vocabulary-only file?), not a "
                                       "model"))
    check_hyperparameters(first.path, arch, md, tensors)

    def num(key: str, default: int = 0) -> int:
        value = _int_or_none(md.get(f"{arch}.{key}"))
        return default if value is None else value

    layers = {i for t in tensors if (i := layer_of(t.name)) is not None}
    n_head = num("attention.head_count")
    return ModelFacts(
        path=parts[0], parts=parts, file_size=sum(h.file_size for h in headers),
        gguf_version=first.version, architecture=arch,
        name=_str_or_none(md.get("general.name")),
        n_params=sum(t.n_elements for t in tensors),
        quantization=_quantization(md, tensors),
        context_length=num("context_length"),
        n_layers=num("block_count", len(layers)), n_embd=num("embedding_length"),
        n_head=n_head, n_head_kv=num("attention.head_count_kv", n_head),
        n_ff=num("feed_forward_length"), expert_count=num("expert_count"),
        expert_used_count=num("expert_used_count"), vocab_size=_vocab_size(md, arch),
        chat_template=_str_or_none(md.get("tokenizer.chat_template")),
        tensors=tensors, split_count=len(parts),
        bos_token=_special_token(md, "tokenizer.ggml.bos_token_id"),
        eos_token=_special_token(md, "tokenizer.ggml.eos_token_id"),
        metadata=md,
    )


def inspect_model(path: Path | str) -> ModelFacts:
    """Read and check the header(s) of the GGUF model at ``path``; no tensor data is read.

    For a split model, ``path`` may name any part (``x-00002-of-00003.gguf``): all parts are found
    next to it by name and checked, and the facts describe the whole model with ``path`` set to
    part 1 (the file to give llama.cpp).

    Raises:
        ModelFileNotFoundError: ``path`` does not exist.
        GGUFError: the file (or a part) is a folder, unreadable, not GGUF, truncated, corrupt,
            not a model, or a split part is missing; the message names the file and the problem.
            A :class:`~mixtral_desk.core.errors.GGUFMetadataError` when the header's layers,
            experts, heads, context or vocabulary are impossible or contradict the tensors.
    """
    path = Path(path)
    parts = _find_parts(path)
    headers = [read_header(part, frozenset({_TOKENS_KEY}) if i == 0 else frozenset())
               for i, part in enumerate(parts)]
    _check_split(parts, headers)
    return _facts(parts, headers)
