"""Mixtral-8x7B-Instruct-shaped GGUF files: real tensor names, shapes and types, no data.

The header is written with ``gguf.GGUFWriter`` (tensor infos only) and the file is extended to its
full size as a sparse hole (the approach of tests/core/test_model_file.py), so a 26.4 GB model
takes a megabyte of disk. Types follow llama.cpp's Q4_K_M recipe for an 8-expert model: Q4_K
weights, ``attn_k``/``attn_v`` Q8_0 (its 8-expert rule), Q6_K output, F32 norms and router; the
file then weighs 26.44 GB like TheBloke's mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf (but with the
merged ``ffn_*_exps`` experts of current conversions).

:func:`write_mixtral_q2_k` writes a Q2_K-shaped file that llama.cpp also *loads* (its header has
what llama.cpp's loader needs) and computes on — zeros, at full cost: 15.78 GB, of which the disk
holds a megabyte.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
TensorSpec = tuple[str, Sequence[int], gguf.GGMLQuantizationType]  # numpy order (rows, row length)

N_LAYERS, N_EMBD, N_FF, N_EXPERT, N_KV_EMBD, N_VOCAB = 32, 4096, 14336, 8, 1024, 32000

MIXTRAL_KV: dict[str, Any] = {
    "general.name": "Mixtral-8x7B-Instruct-v0.1", "llama.context_length": 32768,
    "llama.embedding_length": N_EMBD, "llama.block_count": N_LAYERS,
    "llama.feed_forward_length": N_FF, "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8, "llama.expert_count": N_EXPERT,
    "llama.expert_used_count": 2, "llama.rope.dimension_count": 128,
    "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
}


def n_bytes(shape: Sequence[int], qtype: gguf.GGMLQuantizationType) -> int:
    """Bytes of a tensor of ``shape`` (numpy order) stored as ``qtype``."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def mixtral_q4_k_m_tensors() -> list[TensorSpec]:
    """The 323 tensors of Mixtral-8x7B Q4_K_M in file order."""
    e, f, x, kv, v = N_EMBD, N_FF, N_EXPERT, N_KV_EMBD, N_VOCAB
    tensors: list[TensorSpec] = [("token_embd.weight", (v, e), Q.Q4_K)]
    for i in range(N_LAYERS):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", (e,), Q.F32),
                    (p + "attn_q.weight", (e, e), Q.Q4_K), (p + "attn_k.weight", (kv, e), Q.Q8_0),
                    (p + "attn_v.weight", (kv, e), Q.Q8_0),
                    (p + "attn_output.weight", (e, e), Q.Q4_K),
                    (p + "ffn_norm.weight", (e,), Q.F32),
                    (p + "ffn_gate_inp.weight", (x, e), Q.F32),
                    (p + "ffn_gate_exps.weight", (x, f, e), Q.Q4_K),
                    (p + "ffn_up_exps.weight", (x, f, e), Q.Q4_K),
                    (p + "ffn_down_exps.weight", (x, e, f), Q.Q4_K)]
    return [*tensors, ("output_norm.weight", (e,), Q.F32), ("output.weight", (v, e), Q.Q6_K)]


#: What llama.cpp's loader needs beyond :data:`MIXTRAL_KV` to load the file (and Mixtral's values).
LOADABLE_KV: dict[str, Any] = {
    "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 1e6,
    "tokenizer.ggml.model": "llama",
}


def mixtral_q2_k_tensors() -> list[TensorSpec]:
    """The 323 tensors of a Mixtral-8x7B Q2_K in file order: Q2_K embedding, ``attn_q`` and
    experts; ``attn_output`` Q5_K and ``attn_k``/``attn_v`` Q8_0 (llama.cpp's 8-expert rules);
    Q6_K output; F32 norms and router. 15.78 GB, the size of the Q2_K of issue #14 (TheBloke's
    Q2_K weighs 15.64 GB; today's llama.cpp would make ``ffn_down`` Q3_K, 17.3 GB)."""
    types = {"token_embd.weight": Q.Q2_K, "attn_q.weight": Q.Q2_K, "attn_output.weight": Q.Q5_K}
    experts = ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")
    out = []
    for name, shape, qtype in mixtral_q4_k_m_tensors():
        short = name.split(".", 2)[-1] if name.startswith("blk.") else name
        if short in experts:
            qtype = Q.Q2_K
        out.append((name, shape, types.get(short, qtype)))
    return out


def write_header_model(path: Path, tensors: Sequence[TensorSpec], kv: dict[str, Any],
                       *, arch: str = "llama", vocab: int = 0) -> Path:
    """Write a GGUF header with ``tensors`` and a sparse hole for the data; returns ``path``.
    ``kv`` values are written as strings, lists (arrays), FLOAT32 or UINT32 numbers."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in kv.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, list):  # one value per layer
            writer.add_array(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    if vocab:
        writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(vocab - 3)])
        writer.add_token_scores([0.0] * vocab)
        writer.add_token_types([1] * vocab)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    for name, shape, qtype in tensors:
        writer.add_tensor_info(name, shape, np.dtype(np.float32), n_bytes(shape, qtype),
                               raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    data = sum(-(-n_bytes(s, q) // 32) * 32 for _, s, q in tensors)
    with path.open("r+b") as f:
        f.seek(0, os.SEEK_END)
        f.truncate(-(-f.tell() // 32) * 32 + data)
    return path


def write_mixtral_q4_k_m(path: Path) -> Path:
    """The Mixtral-8x7B-Instruct Q4_K_M-shaped sparse file at ``path``."""
    return write_header_model(path, mixtral_q4_k_m_tensors(), MIXTRAL_KV, vocab=N_VOCAB)


def write_mixtral_q2_k(path: Path) -> Path:
    """The loadable Mixtral-8x7B-Instruct Q2_K-shaped sparse file at ``path`` (15.78 GB)."""
    kv = {**MIXTRAL_KV, **LOADABLE_KV, "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q2_K)}
    return write_header_model(path, mixtral_q2_k_tensors(), kv, vocab=N_VOCAB)


def bench_tensors(n_layers: int = 8, e: int = 1024, kv: int = 256, f: int = 2816, x: int = 8,
                  v: int = 32000) -> list[TensorSpec]:
    """The tensors of core/gguf/synthetic.py's BENCH model (Q8_0; norms and router F32)."""
    tensors: list[TensorSpec] = [("token_embd.weight", (v, e), Q.Q8_0)]
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", (e,), Q.F32), (p + "attn_q.weight", (e, e), Q.Q8_0),
                    (p + "attn_k.weight", (kv, e), Q.Q8_0), (p + "attn_v.weight", (kv, e), Q.Q8_0),
                    (p + "attn_output.weight", (e, e), Q.Q8_0),
                    (p + "ffn_norm.weight", (e,), Q.F32),
                    (p + "ffn_gate_inp.weight", (x, e), Q.F32),
                    (p + "ffn_gate_exps.weight", (x, f, e), Q.Q8_0),
                    (p + "ffn_up_exps.weight", (x, f, e), Q.Q8_0),
                    (p + "ffn_down_exps.weight", (x, e, f), Q.Q8_0)]
    return [*tensors, ("output_norm.weight", (e,), Q.F32), ("output.weight", (v, e), Q.Q8_0)]


BENCH_KV: dict[str, Any] = {
    "general.name": "synthetic-mixtral", "llama.context_length": 32768,
    "llama.embedding_length": 1024, "llama.block_count": 8, "llama.feed_forward_length": 2816,
    "llama.attention.head_count": 16, "llama.attention.head_count_kv": 4,
    "llama.expert_count": 8, "llama.expert_used_count": 2,
    "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0),
}


def write_bench_header(path: Path) -> Path:
    """A sparse file with the header of the ~0.7 GB BENCH model (bench/GPU_CHECK.md)."""
    return write_header_model(path, bench_tensors(), BENCH_KV, vocab=32000)


def with_value(src: Path, dst: Path, key: str, value: int) -> Path:
    """Copy the GGUF file ``src`` to ``dst`` with its 32-bit unsigned metadata ``key`` set to
    ``value``; a negative value turns the key's type into INT32 (the same size, so nothing else
    in the file moves). Returns ``dst``."""
    reader = gguf.GGUFReader(src)
    at = int(reader.fields[key].offset) + 8 + len(key.encode())  # the value type, then the value
    del reader
    data = bytearray(src.read_bytes())
    assert struct.unpack_from("<I", data, at)[0] == gguf.GGUFValueType.UINT32, key
    signed = value < 0
    struct.pack_into("<I", data, at,
                     gguf.GGUFValueType.INT32 if signed else gguf.GGUFValueType.UINT32)
    struct.pack_into("<i" if signed else "<I", data, at + 4, value)
    dst.write_bytes(bytes(data))
    return dst


# --- Mixtral-8x7B Q2_K as TheBloke converted it (December 2023) --------------------------------

THEBLOKE_Q2_K_KV: dict[str, Any] = {**MIXTRAL_KV,
                                   "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q2_K)}


def thebloke_q2_k_tensors() -> list[TensorSpec]:
    """The 995 tensors of TheBloke's mixtral-8x7b-instruct-v0.1.Q2_K.gguf (15.65 GB), in the
    llama.cpp recipe of December 2023 for an 8-expert Q2_K: one tensor per expert
    (``blk.N.ffn_gate.E.weight`` …, all Q2_K: the ``ffn_down.weight`` bump to Q3_K did not match
    per-expert names), ``attn_q`` Q2_K, ``attn_output`` Q3_K, ``attn_k``/``attn_v`` Q8_0 (the
    8-expert rule), an F16 router, F32 norms, a Q2_K token embedding and a Q6_K output."""
    e, f, x, kv, v = N_EMBD, N_FF, N_EXPERT, N_KV_EMBD, N_VOCAB
    tensors: list[TensorSpec] = [("token_embd.weight", (v, e), Q.Q2_K)]
    for i in range(N_LAYERS):
        p = f"blk.{i}."
        for j in range(x):
            tensors += [(f"{p}ffn_gate.{j}.weight", (f, e), Q.Q2_K),
                        (f"{p}ffn_down.{j}.weight", (e, f), Q.Q2_K),
                        (f"{p}ffn_up.{j}.weight", (f, e), Q.Q2_K)]
        tensors += [(p + "ffn_gate_inp.weight", (x, e), Q.F16),
                    (p + "attn_norm.weight", (e,), Q.F32), (p + "ffn_norm.weight", (e,), Q.F32),
                    (p + "attn_k.weight", (kv, e), Q.Q8_0),
                    (p + "attn_output.weight", (e, e), Q.Q3_K),
                    (p + "attn_q.weight", (e, e), Q.Q2_K), (p + "attn_v.weight", (kv, e), Q.Q8_0)]
    return [*tensors, ("output_norm.weight", (e,), Q.F32), ("output.weight", (v, e), Q.Q6_K)]


def write_thebloke_q2_k(path: Path) -> Path:
    """The sparse Mixtral-8x7B-Instruct Q2_K-shaped file of TheBloke's layout at ``path`` (the
    catalog's Q2_K), a header for planning. Not for loading: besides keys its loader needs, the
    llama.cpp of llama-cpp-python 0.3.36 no longer loads one tensor per expert ("check_tensor_dims:
    tensor 'blk.0.ffn_down_exps.weight' not found", checked here with the keys added)."""
    return write_header_model(path, thebloke_q2_k_tensors(), THEBLOKE_Q2_K_KV, vocab=N_VOCAB)
