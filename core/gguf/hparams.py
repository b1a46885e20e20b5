"""Check a model's shape as its header states it against sane limits and its own tensors.

The memory model and the planner size lists and loops by the header's numbers (layers, experts,
heads, context), and llama.cpp aborts the whole process on some of them (``GGML_ASSERT`` on more
than :data:`MAX_LAYERS` layers or :data:`MAX_EXPERTS` experts, on more experts used than exist).
A fuzzed or hand-edited header can say anything: 4294967295 layers in a file that holds tensors
for 2 made the planner allocate lists of that length, and a training context of 2**32 - 1 reached
llama-cpp-python as -1. So :func:`check_hyperparameters` runs where every reader of a model file
goes through (:func:`.model_file.inspect_model` for local files and
:func:`.remote_header.read_remote_facts` for headers read from the Hub), before anything is sized
by these values, and refuses a file whose numbers are impossible with a
:class:`~mixtral_desk.core.errors.GGUFMetadataError` naming the key and both values.

What is checked, for each key that is present (a missing key keeps its default; llama.cpp says
itself what it needs):

- every key below is a whole number (a list only where llama.cpp takes one value per layer, and
  then one for each layer), within :data:`RANGES` (llama.cpp's own limits where it has them);
- ``block_count`` equals the highest ``blk.N.`` index + 1 (the trailing next-token-prediction
  layers of ``nextn_predict_layers`` may lack tensors); without it, the tensors may not hold
  more than :data:`MAX_LAYERS` layers either (the planner then counts layers by them);
- ``expert_count`` equals the number of experts the expert tensors hold; ``expert_used_count`` is
  1 … ``expert_count`` (0 without experts);
- heads: no zero heads in a file with attention tensors, key/value heads no more than heads and
  dividing them, at least one embedding value per head;
- ``embedding_length`` and the vocabulary (the token list, ``vocab_size``) match the shape of
  ``token_embd.weight``.

Raises nothing for a model llama.cpp loads; refuses values that llama.cpp could not load either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

from ..errors import GGUFMetadataError, UserText
from ..i18n import N_
from .validation import MAX_ARRAY_ITEMS, GGUFArray, MetadataValue

__all__ = ["MAX_CONTEXT", "MAX_EXPERTS", "MAX_LAYERS", "RANGES", "check_hyperparameters"]

#: llama.cpp's LLAMA_MAX_LAYERS: a header with more layers fails an assertion that ends the
#: process.
MAX_LAYERS: Final = 512
#: llama.cpp's LLAMA_MAX_EXPERTS (1024 in the llama.cpp of llama-cpp-python 0.3.36).
MAX_EXPERTS: Final = 1024
#: The longest training context accepted: 16M tokens (the longest real ones are 10M). llama.cpp
#: has no limit, but llama-cpp-python reads it as a signed 32-bit number and sizes a token buffer
#: by it on every tokenization.
MAX_CONTEXT: Final = 1 << 24
#: Widths (embedding, feed-forward, head counts) and head dimensions far beyond any model.
MAX_WIDTH: Final = 1 << 20
MAX_HEAD_DIM: Final = 1 << 14

#: The sane range of each key (after ``{architecture}.``), inclusive.
RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "context_length": (1, MAX_CONTEXT),
    "block_count": (1, MAX_LAYERS),
    "embedding_length": (1, MAX_WIDTH),
    "feed_forward_length": (0, MAX_WIDTH),  # 0 in recurrent models (Mamba)
    "attention.head_count": (0, MAX_WIDTH),  # 0 in recurrent models (Mamba, RWKV)
    "attention.head_count_kv": (0, MAX_WIDTH),
    "attention.key_length": (1, MAX_HEAD_DIM),
    "attention.value_length": (1, MAX_HEAD_DIM),
    "expert_count": (0, MAX_EXPERTS),
    "expert_used_count": (0, MAX_EXPERTS),
    "vocab_size": (1, MAX_ARRAY_ITEMS),
    "nextn_predict_layers": (0, MAX_LAYERS),
}
#: Keys llama.cpp also reads as one value per layer (``get_key_or_arr``).
_PER_LAYER: Final = frozenset({"feed_forward_length", "attention.head_count",
                               "attention.head_count_kv", "expert_used_count"})
_TOKENS_KEY: Final = "tokenizer.ggml.tokens"
_TOKEN_EMBD: Final = "token_embd.weight"

_LAYER = re.compile(r"^blk\.(\d+)\.")
_MERGED_EXPERTS = re.compile(r"^blk\.\d+\.ffn_(?:gate|up|down|gate_up)_exps\.weight$")
_ONE_EXPERT = re.compile(r"^blk\.\d+\.ffn_(?:gate|up|down)\.(\d+)\.weight$")
_ATTENTION = re.compile(r"^blk\.\d+\.attn_(?:q|k|v|qkv)\.weight$")
_FEED_FORWARD = re.compile(r"^blk\.\d+\.ffn_(?:gate|up|down)\.weight$")
_EXPERT_FEED_FORWARD = re.compile(r"^blk\.\d+\.ffn_(?:gate|up|down)(?:_exps|\.\d+)\.weight$")


class Tensor(Protocol):
    """What the checks read of a tensor: its name and its shape in GGUF order (``ne[0]``
    first)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


class _RefusalError(Exception):
    """One impossible value: becomes a GGUFMetadataError naming ``key``."""

    def __init__(self, key: str, problem: str, /, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.problem = UserText(problem, **values)


class _Header:
    """The header's numbers under ``{arch}.``, read and range-checked one key at a time."""

    def __init__(self, arch: str, metadata: Mapping[str, MetadataValue]) -> None:
        self.arch = arch
        self.metadata = metadata

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def values(self, name: str, n_layers: int | None = None) -> tuple[int, ...] | None:
        """The value(s) of ``{arch}.name`` (one per layer for a list), ``None`` when absent.

        Raises:
            _RefusalError: not a whole number (or a list of them where llama.cpp takes one), a list
                of the wrong length, or a value outside :data:`RANGES`.
        """
        key = self.key(name)
        value = self.metadata.get(key)
        if value is None:
            return None
        if isinstance(value, GGUFArray):
            if name not in _PER_LAYER:
                raise _RefusalError(
                    key, N_("the header's {key} is a list of {count} values, not one number"),
                    key=key, count=value.count)
            if value.count > MAX_LAYERS:
                raise _RefusalError(
                    key, N_("the header's {key} is a list of {count} values, more than a model has "
                            "layers ({limit})"),
                    key=key, count=value.count, limit=MAX_LAYERS)
            if n_layers is not None and value.count != n_layers:
                raise _RefusalError(
                    key, N_("the header's {key} is a list of {count} values, but the model has "
                            "{layers} layers"),
                    key=key, count=value.count, layers=n_layers)
            items = value.items if value.items is not None else ()
            if value.items is None or not all(_is_int(x) for x in items):
                raise _RefusalError(
                    key, N_("the header's {key} is a list of {type} values, not of whole numbers"),
                    key=key, type=value.item_type)
            numbers = tuple(int(x) for x in items)
        elif _is_int(value):
            numbers = (int(value),)
        else:
            raise _RefusalError(
                key, N_("the header's {key} is {value}, not a whole number"),
                key=key, value=repr(value))
        low, high = RANGES[name]
        for number in numbers:
            if not low <= number <= high:
                raise _RefusalError(
                    key, N_("the header says {key} is {value}, outside the range a model can have "
                            "({low} to {high})"),
                    key=key, value=number, low=low, high=high)
        return numbers

    def value(self, name: str, n_layers: int | None = None) -> int | None:
        """The largest value of ``{arch}.name`` (see :meth:`values`), ``None`` when absent."""
        numbers = self.values(name, n_layers)
        return max(numbers) if numbers else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_hyperparameters(path: Path | str, arch: str, metadata: Mapping[str, MetadataValue],
                          tensors: Sequence[Tensor]) -> None:
    """Check the shape the header of the model at ``path`` states against sane limits and its
    ``tensors`` (all parts of a split model); ``metadata`` is part 1's. Reads no file.

    Raises:
        GGUFMetadataError: a value is not a whole number, out of range, or contradicts the
            tensors or another key; the message names the key and both values.
    """
    header = _Header(arch, metadata)
    try:
        _check(header, tensors)
    except _RefusalError as refusal:
        raise GGUFMetadataError(
            path, refusal.key, N_("{problem}; the file is damaged or was made wrongly, so "
                                  "download it again or use another conversion"),
            problem=refusal.problem) from None


def _check(header: _Header, tensors: Sequence[Tensor]) -> None:
    header.values("context_length")
    n_layers = _check_layers(header, tensors)
    _check_experts(header, tensors, n_layers)
    n_embd = _check_embedding(header, tensors)
    _check_heads(header, tensors, n_layers, n_embd)
    _check_feed_forward(header, tensors, n_layers)


def _check_feed_forward(header: _Header, tensors: Sequence[Tensor], n_layers: int | None) -> None:
    """A feed-forward length of 0 (a recurrent model's) only without feed-forward tensors; the
    expert ones have their own length where ``expert_feed_forward_length`` is given."""
    key = header.key("feed_forward_length")
    n_ff = header.value("feed_forward_length", n_layers)
    if n_ff != 0:
        return
    pattern = (_FEED_FORWARD if header.key("expert_feed_forward_length") in header.metadata
               else _EXPERT_FEED_FORWARD)
    tensor = next((t.name for t in tensors
                   if _FEED_FORWARD.match(t.name) or pattern.match(t.name)), None)
    if tensor is not None:
        raise _RefusalError(
            key, N_("the header says a feed-forward length of {value} ({key}) but the file has "
                    "feed-forward tensors ({tensor})"),
            value=n_ff, key=key, tensor=tensor)


def _check_layers(header: _Header, tensors: Sequence[Tensor]) -> int | None:
    """The header's layer count, checked against the ``blk.N.`` tensors."""
    key = header.key("block_count")
    value = header.metadata.get(key)
    indices = [int(m.group(1)) for t in tensors if (m := _LAYER.match(t.name))]
    found = max(indices) + 1 if indices else 0
    if found and _is_int(value):
        nextn = header.value("nextn_predict_layers") or 0
        if value not in (found, found + nextn):
            raise _RefusalError(
                key, N_("the header says {value} layers ({key}) but the file has tensors for "
                        "{found}"),
                value=value, key=key, found=found)
    if value is None and found > MAX_LAYERS:  # the planner would count layers by the tensors
        raise _RefusalError(
            key, N_("the file has tensors for {found} layers, more than a model can have "
                    "({limit}), and its header does not say how many it has ({key})"),
            found=found, limit=MAX_LAYERS, key=key)
    return header.value("block_count")


def _experts_in_tensors(tensors: Sequence[Tensor]) -> list[tuple[str, int]]:
    """The tensors holding experts and how many each holds (merged ``ffn_up_exps``: the last
    dimension); per-expert tensors (TheBloke's ``ffn_up.E``) count together, as the one with the
    highest E."""
    found = [(t.name, t.shape[-1]) for t in tensors
             if _MERGED_EXPERTS.match(t.name) and len(t.shape) == 3]
    per_expert = [(t.name, int(m.group(1))) for t in tensors if (m := _ONE_EXPERT.match(t.name))]
    if per_expert:
        name, last = max(per_expert, key=lambda item: item[1])
        found.append((name, last + 1))
    return found


def _check_experts(header: _Header, tensors: Sequence[Tensor], n_layers: int | None) -> None:
    count_key, used_key = header.key("expert_count"), header.key("expert_used_count")
    value = header.metadata.get(count_key)
    wrong = [(name, n) for name, n in _experts_in_tensors(tensors) if n != value]
    if wrong and _is_int(value):
        tensor, found = wrong[0]
        raise _RefusalError(
            count_key, N_("the header says {value} experts ({key}) but the expert tensor {tensor} "
                          "holds {found}"),
            value=value, key=count_key, tensor=tensor, found=found)
    count = header.value("expert_count") or 0
    used = header.values("expert_used_count", n_layers)
    if used is None:
        if count > 0:
            raise _RefusalError(
                used_key, N_("the header says the model has {count} experts ({count_key}) but not "
                             "how many are used per token ({key})"),
                count=count, count_key=count_key, key=used_key)
        return
    if count == 0 and max(used) > 0:
        raise _RefusalError(
            used_key, N_("the header says {value} experts are used per token ({key}) but the model "
                         "has no experts ({count_key})"),
            value=max(used), key=used_key, count_key=count_key)
    if count > 0 and not 1 <= max(used) <= count:  # a layer may use none (a dense layer)
        raise _RefusalError(
            used_key, N_("the header says {value} experts are used per token ({key}); with {count} "
                         "experts ({count_key}) that must be 1 to {count}"),
            value=max(used), key=used_key, count=count, count_key=count_key)


def _token_embd(tensors: Sequence[Tensor]) -> Tensor | None:
    return next((t for t in tensors if t.name == _TOKEN_EMBD and len(t.shape) == 2), None)


def _check_embedding(header: _Header, tensors: Sequence[Tensor]) -> int | None:
    """The embedding length, checked against ``token_embd.weight`` (rows of ``n_embd`` values,
    one row per token); the vocabulary too."""
    key = header.key("embedding_length")
    n_embd = header.value("embedding_length")
    embd = _token_embd(tensors)
    features = header.key("features_length") in header.metadata  # WavTokenizer: n_embd is that
    if embd is not None and n_embd is not None and not features and embd.shape[0] != n_embd:
        raise _RefusalError(
            key, N_("the header says an embedding length of {value} ({key}) but {tensor} has rows "
                    "of {found}"),
            value=n_embd, key=key, tensor=_TOKEN_EMBD, found=embd.shape[0])
    vocab_key = header.key("vocab_size")
    sizes = []
    tokens = header.metadata.get(_TOKENS_KEY)
    if isinstance(tokens, GGUFArray):
        sizes.append((_TOKENS_KEY, tokens.count))
    vocab_size = header.value("vocab_size")
    if vocab_size is not None:
        sizes.append((vocab_key, vocab_size))
    for size_key, size in sizes:
        if embd is not None and size != embd.shape[1]:
            raise _RefusalError(
                size_key, N_("the header says {value} tokens ({key}) but {tensor} has {found} "
                             "rows"),
                value=size, key=size_key, tensor=_TOKEN_EMBD, found=embd.shape[1])
    return n_embd


def _check_heads(header: _Header, tensors: Sequence[Tensor], n_layers: int | None,
                 n_embd: int | None) -> None:
    key, kv_key = header.key("attention.head_count"), header.key("attention.head_count_kv")
    heads = header.values("attention.head_count", n_layers)
    kv = header.values("attention.head_count_kv", n_layers)
    key_length = header.value("attention.key_length")
    header.values("attention.value_length")
    if heads is None:
        return
    n_head = max(heads)
    if n_head == 0 and any(_ATTENTION.match(t.name) for t in tensors):
        raise _RefusalError(
            key, N_("the header says {value} attention heads ({key}) but the file has attention "
                    "tensors"),
            value=n_head, key=key)
    if kv is not None:
        n_head_kv = max(kv)
        if n_head_kv > n_head:
            raise _RefusalError(
                kv_key, N_("the header says {value} key/value heads ({key}), more than its {heads} "
                           "attention heads ({heads_key})"),
                value=n_head_kv, key=kv_key, heads=n_head, heads_key=key)
        if len(heads) == len(kv) == 1 and n_head > 0 and (n_head_kv == 0 or n_head % n_head_kv):
            raise _RefusalError(
                kv_key, N_("the header says {value} key/value heads ({key}), which do not divide "
                           "its {heads} attention heads ({heads_key}) evenly"),
                value=n_head_kv, key=kv_key, heads=n_head, heads_key=key)
    if key_length is None and n_embd is not None and n_head > n_embd:
        raise _RefusalError(
            key, N_("the header says {value} attention heads ({key}) for an embedding length of "
                    "{embd} ({embd_key}): less than one value per head"),
            value=n_head, key=key, embd=n_embd, embd_key=header.key("embedding_length"))
